"""A training session's bookkeeping around the step loop (loop.py): checks before anything is
written, the banner, checkpoint save and restore under any process layout, stop signals and the
thread count."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lmforge.data.loader import TokenLoader
from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import Transformer
from lmforge.train import checkpoint as ckpt
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import peak_flops
from lmforge.train.optim import build_optimizer, check_resumable
from lmforge.train.parallel.dist import Dist
from lmforge.train.parallel.parallelize import Parallel, check_layout
from lmforge.train.parallel.sharded import is_sharded, load_full, load_sharded, save_sharded
from lmforge.train.precision import dtype_name
from lmforge.train.source import BatchSource
from lmforge.train.state import TrainState, capture_rng

if TYPE_CHECKING:
    from lmforge.config import RunConfig  # above train: annotations only
    from lmforge.tokenizer import Tokenizer


def restore(
    ckpt_dir: Path,
    par: Parallel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    source: BatchSource,
    cfg: RunConfig,
    env: Dist,
) -> TrainState:
    """Load a checkpoint, saved under any layout, into this rank's objects; the returned state
    (RNG states included, restored by the caller right before the loop) continues where it stopped."""
    state = TrainState.from_dict(ckpt.read_state(ckpt_dir))
    if is_sharded(ckpt_dir):
        load_sharded(ckpt_dir, par.module, optimizer, env.distributed)
    elif env.distributed:
        load_full(ckpt_dir, par.module, optimizer, cfg, lambda: reference_model(cfg))
    else:  # single-process checkpoint, single process
        ckpt.load_weights(par.module, ckpt_dir, verify=False)  # checked against its manifest when chosen
        opt_state = ckpt.read_optimizer(ckpt_dir, env.device)
        optimizer.load_state_dict(opt_state["optimizer"])
        scaler.load_state_dict(opt_state["scaler"])
    same_layout = (
        env.distributed and state.layout == asdict(env.layout) and len(state.ranks) == env.world_size
    )
    if same_layout:  # this rank's own data position and RNG states
        mine = state.ranks[env.rank]
        source.load_state_dict(mine["loader"])
        state.rng = mine["rng"]
    else:  # another layout: the same place in the data, re-dealt to this layout's ranks
        source.load_state_dict(source.state_for_layout(state.loader))
    return state


def reference_model(cfg: RunConfig) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A plain CPU model and optimizer built as a single process builds them (to read its files)."""
    model = Transformer(cfg.model)
    return model, build_optimizer(model, cfg.train, torch.device("cpu"))


def check_compatible(ckpt_dir: Path, cfg: RunConfig) -> None:
    """The checkpoint must be of this run's model shape; say which fields differ if not."""
    saved = ckpt.read_model_config(ckpt_dir)
    diff = [
        f"model.{f.name}={getattr(saved, f.name)!r} (this run: {getattr(cfg.model, f.name)!r})"
        for f in fields(saved)
        if getattr(saved, f.name) != getattr(cfg.model, f.name)
    ]
    if diff:
        raise LmforgeError(
            f"checkpoint {ckpt_dir} is of another model: {', '.join(diff)}; use another run "
            "name, or set train.init_from (weights only) for a compatible model"
        )
    check_resumable(ckpt_dir, cfg.train)


def mfu_per_throughput(cfg: RunConfig, seq_len: int, device: torch.device, world_size: int) -> float | None:
    """MFU per token/s (FLOPs per token / the peak of all the run's devices), or None when unknown."""
    peak = peak_flops(device)
    return cfg.model.flops_per_token(seq_len) / (peak * world_size) if peak else None


def banner(
    cfg: RunConfig,
    n: int,
    par: Parallel,
    env: Dist,
    device: torch.device,
    dtype: torch.dtype,
    seq_len: int,
    resume_from: Path | None,
    step: int,
) -> str:
    tc, pc = cfg.train, cfg.parallel
    line = (
        f"training {cfg.model.kind} ({n / 1e6:.2f}M params) on {device.type} {dtype_name(dtype)}: "
        f"{tc.max_steps} steps x {tc.grad_accum} micro-batches x {tc.batch_size} x {seq_len} tokens"
    )
    if env.distributed:
        mode = pc.dp_mode if env.layout.dp > 1 else "-"
        line += f"; {env.world_size} processes, mesh {env.layout} (dp: {mode}"
        if env.layout.pp > 1:
            line += f", pp: {pc.pp_schedule} x {par.microbatches}"
        line += ", sequence parallel" if pc.sequence_parallel and env.layout.tp > 1 else ""
        line += ")"
    if pc.activation_checkpoint != "none":
        line += f"; activation checkpointing: {pc.activation_checkpoint}"
    if resume_from is not None:
        line += f"; resuming from {resume_from} (step {step})"
    elif tc.init_from:
        line += f"; weights from {tc.init_from}"
    return line


def save(
    run_dir: Path,
    par: Parallel,
    optimizer,
    scaler,
    source: BatchSource,
    state: TrainState,
    cfg: RunConfig,
    env: Dist,
) -> Path:
    state.loader = source.state_dict()
    state.rng = capture_rng()
    state.layout = asdict(env.layout)
    if not env.distributed:
        return ckpt.save_checkpoint(
            run_dir,
            state.step,
            par.module,
            {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()},
            state.to_dict(),
            cfg,
            cfg.train.keep_last,
        )
    # Every rank's data position and RNG go into state.json (small: ~25 KB a rank).
    state.ranks = env.gather_objects({"loader": state.loader, "rng": state.rng})
    return save_sharded(
        run_dir, state.step, par.module, optimizer, state.to_dict(), cfg, cfg.train.keep_last, env
    )


def figures_note(state: TrainState) -> str:
    """Which step the held-out figures of a diverged run are from (they are not current)."""
    if state.val_loss is None:
        return "no held-out figures"
    at = f"step {state.val_step}" if state.val_step is not None else "an earlier validation"
    return f"the held-out figures are from {at}, before it diverged"


def val_line(step: int, total: int, val: dict) -> str:
    line = f"val  {step:>{len(str(total))}}/{total} | loss {val['val_loss']:.4f}"
    if val["val_ppl"] is not None:
        line += f" | ppl {val['val_ppl']:.2f}"
    if val["val_bpb"] is not None:
        line += f" | bpb {val['val_bpb']:.4f}"
    return line


def check_inputs(cfg: RunConfig, tokenizer: Tokenizer, run_dir: Path, env: Dist) -> int:
    """Validate the config against the tokenizer and process layout before anything is written
    (the data: Inputs.check); returns seq_len."""
    tc = cfg.train
    tc.validate()
    cfg.model.validate()
    seq_len = tc.seq_len or cfg.model.block_size
    if seq_len > cfg.model.block_size:
        raise ConfigError(f"train.seq_len={seq_len} exceeds model.block_size={cfg.model.block_size}")
    if cfg.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens"
        )
    check_layout(cfg, env.layout, seq_len)
    if not tc.resume and ckpt.latest_checkpoint(run_dir) is not None:
        raise LmforgeError(
            f"{run_dir} already has checkpoints and train.resume=false; use another run name "
            "or set train.resume=true"
        )
    return seq_len


def val_tokens(shard_dir: Path, seq_len: int, tc: TrainConfig, main: bool) -> int:
    """tc.eval_tokens, or 0 (with a note) when the shards hold no validation window."""
    if not tc.eval_tokens:
        return 0
    try:
        TokenLoader(shard_dir, "val", seq_len, tc.seed)
    except LmforgeError as e:
        if main:
            print(f"note: no validation loss for this run: {e}", file=sys.stderr, flush=True)
        return 0
    return tc.eval_tokens


@contextlib.contextmanager
def torch_threads(n: int):
    """Use n intra-op threads inside the block (0 = leave torch's default)."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(previous)


class StopFlag:
    """Which stop signal arrived (0 = none)."""

    received: int = 0


@contextlib.contextmanager
def stop_signals():
    """SIGINT/SIGTERM set a flag the loop checks at each step boundary (a second Ctrl-C aborts at
    once). The previous handlers are restored on exit. Outside the main thread, signals are left alone."""
    flag = StopFlag()

    def handle(signum, frame) -> None:
        if flag.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.received = signum

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handle)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
