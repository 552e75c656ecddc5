"""Distributed checkpoints: every rank writes its own shard with torch.distributed.checkpoint (DCP).

A distributed run's checkpoint directory holds, beside the usual state.json, config.yaml and
COMPLETE marker, a `dcp/` folder: `.metadata` plus one `__<rank>_0.distcp` file per rank. Keys are
the single-process model's parameter names (`blocks.3.attn.q_proj.weight`) and, for the optimizer,
`state.<name>.exp_avg` etc. (torch's flattened optimizer state dict), whatever wrappers, shards
or pipeline stages held them. DCP reshards on load, so a checkpoint saved under one (pp, dp, tp)
layout loads under any other, a single process included; and the single-process format
(model.safetensors + optimizer.pt) loads into any layout through the same parameter names.

Atomicity is the single-process recipe: all ranks write into checkpoints/.tmp_step_N/, and rank 0
adds COMPLETE and renames the directory only after every rank's shard is written. Reading shards
(also in a single process) is dcp_read.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lmforge.train import checkpoint as ckpt
from lmforge.train.parallel.dcp_read import SHARDED_DIR, is_sharded, load_sharded, run_dcp, state_dicts

if TYPE_CHECKING:  # the aggregate sits above train (it gathers train's sections): annotations only
    from lmforge.config import RunConfig

__all__ = ["is_sharded", "load_full", "load_sharded", "save_sharded"]


def save_sharded(
    run_dir: Path,
    step: int,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    cfg: RunConfig,
    keep_last: int,
    env,
) -> Path:
    """Collective: every rank writes its shard; rank 0 completes the checkpoint. Returns its path."""
    import torch.distributed.checkpoint as dcp

    tmp = ckpt.tmp_dir(run_dir, step)
    if env.is_main:
        ckpt.begin_checkpoint(run_dir, step)
    env.barrier()
    run_dcp(
        dcp.save,
        state_dicts(module, optimizer),
        checkpoint_id=str(tmp / SHARDED_DIR),
        distributed=env.distributed,
    )  # returns once the metadata (rank 0) is written
    final = ckpt.finish_checkpoint(run_dir, step, state, cfg, keep_last) if env.is_main else None
    env.barrier()  # nobody starts the next step (or the next save) before the rename
    return final or Path(run_dir) / "checkpoints" / ckpt.step_dir_name(step)


def load_full(
    ckpt_dir: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    cfg: RunConfig,
    build_reference,
) -> None:
    """Load a single-process checkpoint (model.safetensors, optimizer.pt) into a sharded `module`.

    The file format keys the optimizer state by position, so it is first loaded into a plain
    model and optimizer built the single-process way (`build_reference() -> (model, optimizer)`),
    which give it parameter names; each rank then keeps the slices its layout assigns it."""
    ref_model, ref_opt = build_reference()
    ckpt.load_weights(ref_model, ckpt_dir)
    names = set(get_model_state_dict(module))
    full = {k: v for k, v in get_model_state_dict(ref_model).items() if k in names}
    set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True))
    if optimizer is None:
        return
    saved = ckpt.read_optimizer(ckpt_dir, torch.device("cpu"))
    ref_opt.load_state_dict(saved["optimizer"])
    full_osd = get_optimizer_state_dict(ref_model, ref_opt)  # keyed by parameter name
    groups = [{**g, "params": [n for n in g["params"] if n in names]} for g in full_osd["param_groups"]]
    mine = {
        "state": {n: v for n, v in full_osd["state"].items() if n in names},
        "param_groups": [g for g in groups if g["params"]],
    }  # a stage drops empty groups, as its optimizer
    set_optimizer_state_dict(module, optimizer, mine, options=StateDictOptions(full_state_dict=True))
