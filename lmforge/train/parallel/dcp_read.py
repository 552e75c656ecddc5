"""Reading a distributed checkpoint's shards (dcp/), the part a single process needs too.

checkpoint.load_weights loads a sharded checkpoint into a plain model through `load_sharded`;
sharded.py (saving, loading a single-process checkpoint into a sharded model) builds on this
module and on checkpoint.py, so neither of those two imports the other's importer.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lmforge.errors import LmforgeError

SHARDED_DIR = "dcp"
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)  # per-parameter keys: stages never collide


def is_sharded(ckpt_dir: Path) -> bool:
    return (Path(ckpt_dir) / SHARDED_DIR / ".metadata").is_file()


def state_dicts(module: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    sd = {"model": get_model_state_dict(module)}
    if optimizer is not None:
        sd["optim"] = get_optimizer_state_dict(module, optimizer, options=FLAT)
    return sd


def run_dcp(fn, *args, distributed: bool, **kwargs):
    with warnings.catch_warnings():  # "assuming the intent is to ... in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process.*")
        return fn(*args, no_dist=not distributed, **kwargs)


def load_sharded(
    ckpt_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None, distributed: bool
) -> None:
    """Load a sharded checkpoint into `module` (any layout, or a plain model) and `optimizer`."""
    import torch.distributed.checkpoint as dcp

    sd = state_dicts(module, optimizer)
    try:
        run_dcp(dcp.load, sd, checkpoint_id=str(Path(ckpt_dir) / SHARDED_DIR), distributed=distributed)
    except Exception as e:  # noqa: BLE001 -- DCP wraps every rank's failure in CheckpointException
        raise LmforgeError(f"cannot load the sharded checkpoint {ckpt_dir}: {first_line(e)}") from None
    set_model_state_dict(module, sd["model"])
    if optimizer is not None:
        set_optimizer_state_dict(module, optimizer, sd["optim"], options=FLAT)


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
