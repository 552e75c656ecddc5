"""Checkpoints: written atomically, loaded only when complete.

Layout of <run>/checkpoints/step_NNNNNN/:
    model.safetensors   weights (tied tensors stored once; safetensors.torch.save_model)
    optimizer.pt        {"optimizer": optimizer.state_dict(), "scaler": GradScaler.state_dict()}
      or, from a distributed run, instead of those two:
    dcp/                torch.distributed.checkpoint shards of model and optimizer (parallel/sharded.py)
    state.json          TrainState: step, tokens, loader position, RNG states, bad-step count, ...
    config.yaml         the resolved RunConfig (read back whole by lmforge.config.read_config)
    COMPLETE            written last: the manifest, {"step", "files": {path: {"bytes", "sha256"}}}

A checkpoint is written into checkpoints/.tmp_step_NNNNNN/, every file fsynced, COMPLETE written
last, then the directory is renamed into place; a crash at any point leaves either the old set
of checkpoints or a directory that is never loaded (and is removed by the next save).

Loading checks files against the manifest, so bytes damaged after the save (a bad disk, a bad
copy) are an error, never NaN losses from silently wrong weights. Resuming a run falls back to
the newest intact checkpoint (train.on_damaged_checkpoint=previous) and sets the damaged one
aside as checkpoints/damaged_step_NNNNNN. Checkpoints from before the manifest (COMPLETE holds
"step N") load unchecked. Hashing costs one read of each file at save and at resume, by sha256
(hashlib: ~0.2-2 GB/s per core, CPU-dependent).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.typed_config import from_dict, read_yaml_mapping, to_yaml

if TYPE_CHECKING:  # the aggregate sits above train (it gathers train's sections): annotations only
    from lmforge.config import RunConfig

COMPLETE = "COMPLETE"
_STEP_RE = re.compile(r"^step_(\d+)$")
DAMAGED_PREFIX = "damaged_"


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
        if p.is_dir() and (
            p.name.startswith(".tmp_step_") or (_STEP_RE.match(p.name) and not is_complete(p))
        ):
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


def finish_checkpoint(
    run_dir: Path, step: int, state: dict[str, Any], cfg: RunConfig, keep_last: int
) -> Path:
    """Add state.json, config.yaml and COMPLETE to the written .tmp dir, rename it into place, and
    keep only the newest `keep_last` checkpoints."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / step_dir_name(step), tmp_dir(run_dir, step)
    _write_text(tmp / "state.json", json.dumps(state))
    _write_text(tmp / "config.yaml", to_yaml(cfg))
    files = {
        f.relative_to(tmp).as_posix(): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(tmp.rglob("*"))
        if f.is_file()
    }
    _write_text(tmp / COMPLETE, json.dumps({"step": step, "files": files}, indent=1) + "\n")
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


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    cfg: RunConfig,
    keep_last: int,
) -> Path:
    """Write checkpoints/step_NNNNNN atomically (single-process format), then keep only the newest
    `keep_last`."""
    tmp = begin_checkpoint(run_dir, step)
    safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
    _fsync_file(tmp / "model.safetensors")
    torch.save(optimizer_state, tmp / "optimizer.pt")
    _fsync_file(tmp / "optimizer.pt")
    return finish_checkpoint(run_dir, step, state, cfg, keep_last)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def manifest(ckpt_dir: Path) -> dict[str, dict[str, Any]] | None:
    """{relative path: {"bytes", "sha256"}} from COMPLETE, or None for a checkpoint saved before
    manifests (its COMPLETE reads "step N")."""
    try:
        data = json.loads((Path(ckpt_dir) / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("files") if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def damage(ckpt_dir: Path, only: tuple[str, ...] = ()) -> str | None:
    """What differs from the checkpoint's manifest (a file missing, resized or with other bytes),
    or None when it matches or has no manifest. `only`: check just the files under these paths."""
    files = manifest(ckpt_dir)
    for rel, want in (files or {}).items():
        if only and not any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in only):
            continue
        f = Path(ckpt_dir) / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want.get("bytes"):
            return f"{rel} holds {f.stat().st_size} bytes, the manifest says {want.get('bytes')}"
        if _sha256(f) != want.get("sha256"):
            return f"{rel} does not match its sha256 in the manifest (its bytes changed after the save)"
    return None


def latest_intact(run_dir: Path, on_damaged: str = "previous", set_aside: bool = True) -> Path | None:
    """The newest complete checkpoint whose files match their manifest, or None if there is none.
    A damaged newer one is reported on stderr and renamed damaged_step_NNNNNN (set_aside), or, with
    on_damaged="error", is a LmforgeError."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = damage(ckpt)
        if problem is None:
            return ckpt
        if on_damaged == "error":
            raise LmforgeError(
                f"checkpoint {ckpt} is damaged: {problem}; set train.on_damaged_checkpoint=previous "
                "to resume from the previous complete checkpoint"
            )
        aside = ckpt.with_name(DAMAGED_PREFIX + ckpt.name)
        if set_aside:
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(ckpt, aside)
        print(
            f"warning: checkpoint {ckpt} is damaged ({problem}); "
            + (f"moved to {aside.name}; " if set_aside else "")
            + "trying the previous one",
            file=sys.stderr,
            flush=True,
        )
    if list_checkpoints(run_dir) or any((Path(run_dir) / "checkpoints").glob(DAMAGED_PREFIX + "step_*")):
        raise LmforgeError(
            f"every checkpoint in {Path(run_dir) / 'checkpoints'} is damaged; nothing to resume from "
            "(remove them, or train with another run name)"
        )
    return None


def resolve_checkpoint(path: Path | str) -> Path:
    """A run dir (-> its latest complete checkpoint) or a checkpoint dir (must be complete)."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise LmforgeError(f"{path} is not a run directory or a checkpoint directory")
    if (
        (path / "model.safetensors").exists()
        or (path / "dcp").is_dir()
        or _STEP_RE.match(path.name)
        or path.name.startswith(".tmp_step_")
    ):
        if not is_complete(path):
            raise LmforgeError(
                f"checkpoint {path} is incomplete (no {COMPLETE} marker; the save was interrupted)"
            )
        return path
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise LmforgeError(f"no complete checkpoint in {path / 'checkpoints'}")
    return ckpt


def read_model_config(ckpt_dir: Path) -> ModelConfig:
    """The model section of a checkpoint's config.yaml: what it takes to rebuild the model (the
    whole RunConfig is lmforge.config.read_config, above train)."""
    path = Path(ckpt_dir) / "config.yaml"
    data = read_yaml_mapping(path)
    try:
        return from_dict(ModelConfig, data.get("model") or {}, "model.")
    except LmforgeError as e:
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


def load_weights(model: nn.Module, ckpt_dir: Path, verify: bool = True) -> None:
    """Load a checkpoint's weights into `model` (same architecture, one process): model.safetensors,
    or the shards of a distributed run (dcp/); LmforgeError naming the file otherwise. `verify`:
    first check the weight files against the checkpoint's manifest (skip when already checked)."""
    from lmforge.train.parallel.dcp_read import is_sharded, load_sharded  # torch.distributed: when loading

    problem = damage(ckpt_dir, ("model.safetensors", "dcp")) if verify else None
    if problem:
        older = [p for p in list_checkpoints(Path(ckpt_dir).parent.parent) if p.name < Path(ckpt_dir).name]
        hint = f"; the previous complete checkpoint is {older[-1]}" if older else ""
        raise LmforgeError(f"checkpoint {ckpt_dir} is damaged: {problem}{hint}")
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
        raise LmforgeError(
            f"cannot load weights from {path}: {msg[0] if msg else type(e).__name__}"
        ) from None


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    """(model in eval mode, its ModelConfig) from a run dir (latest complete checkpoint) or a
    checkpoint dir; the whole run config is lmforge.config.read_config(resolve_checkpoint(path))."""
    ckpt = resolve_checkpoint(path)
    cfg = read_model_config(ckpt)
    model = Transformer(cfg).to(device)
    load_weights(model, ckpt)
    model.eval()
    return model, cfg
