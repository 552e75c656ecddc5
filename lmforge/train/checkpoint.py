"""Checkpoints: written atomically, loaded only when complete.

Layout of <run>/checkpoints/step_NNNNNN/:
    model.safetensors   weights (tied tensors stored once; safetensors.torch.save_model)
    optimizer.pt        {"optimizer": optimizer.state_dict(), "scaler": GradScaler.state_dict()}
      or, from a distributed run, instead of those two:
    dcp/                torch.distributed.checkpoint shards of model and optimizer (parallel/sharded.py)
    state.json          TrainState: step, tokens, loader position, RNG states, bad-step count, ...
    config.yaml         the resolved RunConfig
    COMPLETE            written last

A checkpoint is written into checkpoints/.tmp_step_NNNNNN/, every file fsynced, COMPLETE written
last, then the directory is renamed into place; a crash at any point leaves either the old set
of checkpoints or a directory that is never loaded (and is removed by the next save).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml
from torch import nn

from lmforge.config import RunConfig, from_dict, to_yaml
from lmforge.errors import LmforgeError
from lmforge.model import Transformer

COMPLETE = "COMPLETE"
_STEP_RE = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def is_complete(ckpt_dir: Path) -> bool:
    return (ckpt_dir / COMPLETE).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def remove_partial(run_dir: Path) -> None:
    """Delete leftovers of interrupted saves: .tmp_step_* dirs and step dirs without COMPLETE."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp_step_") or (_STEP_RE.match(p.name) and not is_complete(p))):
            shutil.rmtree(p, ignore_errors=True)


def tmp_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f".tmp_{step_dir_name(step)}"


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Create the empty checkpoints/.tmp_step_NNNNNN/ to write into (leftovers of interrupted saves
    are removed first)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    remove_partial(run_dir)
    tmp = tmp_dir(run_dir, step)
    tmp.mkdir()
    return tmp


def finish_checkpoint(run_dir: Path, step: int, state: dict[str, Any], cfg: RunConfig, keep_last: int) -> Path:
    """Add state.json, config.yaml and COMPLETE to the written .tmp dir, rename it into place, and
    keep only the newest `keep_last` checkpoints."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / step_dir_name(step), tmp_dir(run_dir, step)
    _write_text(tmp / "state.json", json.dumps(state))
    _write_text(tmp / "config.yaml", to_yaml(cfg))
    _write_text(tmp / COMPLETE, f"step {step}\n")
    _fsync_dir(tmp)

    if final.exists():  # same step saved before (e.g. an interrupted run resumed at its last step)
        old = root / f".tmp_old_{step_dir_name(step)}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)

    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer_state: dict[str, Any],
                    state: dict[str, Any], cfg: RunConfig, keep_last: int) -> Path:
    """Write checkpoints/step_NNNNNN atomically (single-process format), then keep only the newest
    `keep_last`."""
    tmp = begin_checkpoint(run_dir, step)
    safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
    _fsync_file(tmp / "model.safetensors")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    _fsync_file(tmp / "optimizer.pt")
    return finish_checkpoint(run_dir, step, state, cfg, keep_last)


def resolve_checkpoint(path: Path | str) -> Path:
    """A run dir (-> its latest complete checkpoint) or a checkpoint dir (must be complete)."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise LmforgeError(f"{path} is not a run directory or a checkpoint directory")
    if (path / "model.safetensors").exists() or (path / "dcp").is_dir() or _STEP_RE.match(path.name) \
            or path.name.startswith(".tmp_step_"):
        if not is_complete(path):
            raise LmforgeError(f"checkpoint {path} is incomplete (no {COMPLETE} marker; the save was interrupted)")
        return path
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise LmforgeError(f"no complete checkpoint in {path / 'checkpoints'}")
    return ckpt


def read_config(ckpt_dir: Path) -> RunConfig:
    path = ckpt_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(data.get("train"), dict):  # checkpoints from before train.eval_tokens replaced it
            data["train"].pop("eval_batches", None)
        return from_dict(RunConfig, data)
    except (OSError, yaml.YAMLError, LmforgeError) as e:
        raise LmforgeError(f"cannot read {path}: {e}") from None


def read_state(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / "state.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmforgeError(f"cannot read {path}: {e}") from None


def read_optimizer(ckpt_dir: Path, device: torch.device) -> dict[str, Any]:
    path = ckpt_dir / "optimizer.pt"
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises several types for a truncated/corrupt pickle
        raise LmforgeError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def weights_file(ckpt_dir: Path) -> Path:
    """The file that changes whenever a checkpoint's weights do (for cache keys and fingerprints):
    model.safetensors, or a distributed checkpoint's dcp/.metadata."""
    single = Path(ckpt_dir) / "model.safetensors"
    return single if single.exists() else Path(ckpt_dir) / "dcp" / ".metadata"


def load_weights(model: nn.Module, ckpt_dir: Path) -> None:
    """Load a checkpoint's weights into `model` (same architecture, one process): model.safetensors,
    or the shards of a distributed run (dcp/); LmforgeError naming the file otherwise."""
    from lmforge.train.parallel.sharded import is_sharded, load_sharded

    if is_sharded(ckpt_dir):
        load_sharded(ckpt_dir, model, None, distributed=False)
        return
    path = ckpt_dir / "model.safetensors"
    if not path.is_file():
        raise LmforgeError(f"checkpoint {ckpt_dir} has no model.safetensors")
    device = next(model.parameters()).device
    try:
        safetensors.torch.load_model(model, str(path), strict=True, device=str(device))
    except Exception as e:  # noqa: BLE001 -- SafetensorError if truncated, RuntimeError on a shape mismatch
        msg = str(e).strip().splitlines()
        raise LmforgeError(f"cannot load weights from {path}: {msg[0] if msg else type(e).__name__}") from None


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """(model in eval mode, its RunConfig) from a run dir (latest complete checkpoint) or a checkpoint dir."""
    ckpt = resolve_checkpoint(path)
    cfg = read_config(ckpt)
    model = Transformer(cfg.model).to(device)
    load_weights(model, ckpt)
    model.eval()
    return model, cfg
