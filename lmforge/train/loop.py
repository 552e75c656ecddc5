"""The pre-training loop.

    train(cfg, shard_dir, tokenizer, run_dir) -> TrainResult

One loop over optimizer steps; inside it, gradient accumulation over micro-batches, then
"every N steps" blocks for logging, validation and checkpointing. Everything needed to resume
is the model, the optimizer (+ grad scaler) and one TrainState, all in the checkpoint; a run
killed at any point and started again continues from its latest checkpoint and reproduces the
uninterrupted run's losses exactly (on CPU). SIGINT/SIGTERM stop at the next step boundary with
a checkpoint.

The same loop runs one process or many: under torchrun, parallel/ builds this rank's share of
the model (pipeline stage, tensor and data shards; parallel/parallelize.py), each data-parallel
rank reads its own part of every batch, the loss and stop signals are agreed over all ranks, and
only rank 0 prints and writes run-directory files (checkpoint shards excepted: every rank writes
its own).

What the loop trains on is an `Inputs`: a batch source (train/source.py), an optional
validation function and model hooks. `train` builds the pre-training one (token shards);
fine-tuning (tune/sft.py) builds its own and calls `train_on`, so both share one engine. The
session's bookkeeping around the loop (checks, checkpoint save/restore, banner, signals) is
session.py.
"""

from __future__ import annotations

import functools
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmforge.atomic import write_text_atomic
from lmforge.data.loader import TokenLoader
from lmforge.data.shards import check_tokenizer, check_vocab, load_meta
from lmforge.errors import LmforgeError
from lmforge.model import Transformer
from lmforge.train import checkpoint as ckpt
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import MetricsLog, Progress, Throughput
from lmforge.train.objectives import Objective, batch_seed
from lmforge.train.optim import build_optimizer, set_lr
from lmforge.train.parallel.dist import Dist, errors_on_rank_zero
from lmforge.train.parallel.dist import setup as dist_setup
from lmforge.train.parallel.parallelize import Parallel, parallelize
from lmforge.train.precision import autocast, grad_scaler, resolve_dtype
from lmforge.train.schedule import lr_at, micro_batches_at
from lmforge.train.session import (
    banner,
    check_compatible,
    check_inputs,
    figures_note,
    mfu_per_throughput,
    restore,
    save,
    stop_signals,
    torch_threads,
    val_line,
    val_tokens,
)
from lmforge.train.source import BatchSource, TokenSource
from lmforge.train.state import TrainState, restore_rng
from lmforge.train.validate import validate
from lmforge.typed_config import to_yaml

if TYPE_CHECKING:
    from lmforge.config import RunConfig  # above train (it gathers train's sections): annotations only
    from lmforge.tokenizer import Tokenizer

DROPOUT_STREAM = 1 << 31  # seed component for per-rank dropout masks


@dataclass
class TrainResult:
    steps: int  # optimizer steps done in total (across resumes)
    tokens: int  # training tokens consumed in total
    final_train_loss: float | None  # last finite training loss
    val_loss: float | None  # nats/token (decoder) or the objective's loss (encoder kinds)
    val_ppl: float | None
    val_bpb: float | None  # bits per byte (decoder only)
    tokens_per_s: float  # training throughput of this invocation (validation/checkpoints excluded)
    wall_s: float  # wall time of this invocation
    stopped_early: bool  # interrupted by a signal or stopped by non-finite losses
    checkpoint: str | None = None  # the latest complete checkpoint
    stop_reason: str | None = None  # why it stopped early
    val_step: int | None = None  # the step val_loss/val_bpb are from
    diverged: bool = False  # stopped by max_bad_steps non-finite losses in a row (a failed run)


Validator = Callable[[Parallel, Any], dict]  # (model, autocast) -> {"val_loss", "val_ppl", "val_bpb", ...}


@dataclass
class Inputs:
    """What a run trains on. Every callable runs on every rank."""

    check: Callable[[int, Dist], None]  # (seq_len, env): raise on unusable data before anything is written
    source: Callable[[int, Dist], BatchSource]  # (seq_len, env) -> this rank's batch source
    validator: Callable[[int, bool], Validator | None]  # (seq_len, is_main) -> held-out loss, or None
    prepare_model: Callable[[nn.Module], None] | None = None  # after the weights are loaded (e.g. LoRA)
    on_complete: Callable[[Parallel], None] | None = None  # after the last step (collective)


def train(cfg: RunConfig, shard_dir: Path, tokenizer: Tokenizer, run_dir: Path) -> TrainResult:
    """Pre-train cfg.model on the token shards in shard_dir; everything is written under run_dir.

    Under torchrun every rank calls this; a user error on any rank ends all of them (status 2 on
    the others) with one message, raised on rank 0."""
    return train_on(cfg, shard_inputs(cfg, Path(shard_dir), tokenizer), tokenizer, run_dir)


def train_on(cfg: RunConfig, inputs: Inputs, tokenizer: Tokenizer, run_dir: Path) -> TrainResult:
    """Train on any batch source (see Inputs); otherwise as `train`."""
    with errors_on_rank_zero():
        env = dist_setup(cfg.parallel, cfg.train.device)
        return _train(cfg, inputs, tokenizer, Path(run_dir), env)


def shard_inputs(cfg: RunConfig, shard_dir: Path, tokenizer: Tokenizer) -> Inputs:
    """Pre-training's inputs: windows of the token shards, the model kind's objective, and the
    held-out loss over train.eval_tokens of the val split."""
    tc = cfg.train
    objective = Objective(cfg.model.kind, tc, tokenizer)

    def check(seq_len: int, env: Dist) -> None:
        if not (shard_dir / "meta.json").is_file():
            raise LmforgeError(f"no token shards in {shard_dir} (meta.json missing)")
        meta = load_meta(shard_dir)
        check_tokenizer(meta, tokenizer)
        check_vocab(meta, tokenizer.vocab_size)  # <= model.vocab_size (checked before)

    def source(seq_len: int, env: Dist) -> BatchSource:
        loader = TokenLoader(shard_dir, "train", seq_len, tc.seed, rank=env.dp_rank, world_size=env.layout.dp)
        return TokenSource(loader, objective, tc.seed, env.dp_rank, env.layout.dp)

    def validator(seq_len: int, main: bool) -> Validator | None:
        eval_tokens = val_tokens(shard_dir, seq_len, tc, main)
        if not eval_tokens:
            return None
        token_bytes = tokenizer.token_bytes()
        return lambda par, amp: validate(
            par,
            shard_dir,
            seq_len,
            eval_tokens,
            tc.batch_size,
            tc.seed,
            objective,
            token_bytes,
            par.env.device,
            amp,
        )

    return Inputs(check, source, validator)


def _train(cfg: RunConfig, inputs: Inputs, tokenizer: Tokenizer, run_dir: Path, env: Dist) -> TrainResult:
    t_begin = time.perf_counter()
    tc, device, main = cfg.train, env.device, env.is_main
    dtype = resolve_dtype(tc.precision, device)
    amp = functools.partial(autocast, device, dtype)

    with torch_threads(tc.threads):
        with env.collectively():  # pure checks first: a failure here reaches every rank before any waits
            seq_len = check_inputs(cfg, tokenizer, run_dir, env)
            inputs.check(seq_len, env)
            resume_from = (
                ckpt.latest_intact(run_dir, tc.on_damaged_checkpoint, set_aside=main) if tc.resume else None
            )
            if resume_from is not None:
                check_compatible(resume_from, cfg)
        with env.collectively():
            torch.manual_seed(tc.seed)  # model init: the same weights on every rank
            model = Transformer(cfg.model).to(device)
            if resume_from is None and tc.init_from:
                ckpt.load_weights(model, ckpt.resolve_checkpoint(tc.init_from))
            if inputs.prepare_model is not None:
                inputs.prepare_model(model)
            n_params = sum(p.numel() for p in model.parameters())
            par = parallelize(model, cfg, env, dtype)
            del model  # a pipeline rank keeps only its stage
            if env.layout.dp > 1:  # data-parallel ranks draw different dropout masks
                torch.manual_seed(batch_seed(tc.seed, DROPOUT_STREAM, env.dp_rank))
            optimizer = build_optimizer(par.module, tc, device, par.no_decay)
            scaler = grad_scaler(device, dtype)
            local_batch = tc.batch_size // env.layout.dp  # this rank's sequences per micro-batch
            source = inputs.source(seq_len, env)
            validator = inputs.validator(seq_len, main)
        with env.collectively():
            if resume_from is not None:
                state = restore(resume_from, par, optimizer, scaler, source, cfg, env)
            else:
                state = TrainState()
            # Only now, with the inputs checked and the checkpoint loaded, is anything written.
            if main:
                run_dir.mkdir(parents=True, exist_ok=True)
                write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
                if not (run_dir / "tokenizer.json").exists():
                    tokenizer.save(run_dir / "tokenizer.json")
        tokens_per_micro = tc.batch_size * seq_len
        mfu_scale = mfu_per_throughput(cfg, seq_len, device, env.world_size)

        metrics = MetricsLog(run_dir, tensorboard=tc.tensorboard, enabled=main)
        metrics.truncate_after(state.step)  # lines past the checkpoint are about to be re-run
        progress = Progress(tc.max_steps, state.step, tc.progress, enabled=main)
        progress.message(banner(cfg, n_params, par, env, device, dtype, seq_len, resume_from, state.step))
        if state.step >= tc.max_steps:
            progress.message(f"run already complete at step {state.step} ({resume_from})")
        saved_path = str(resume_from) if resume_from is not None else None
        start_tokens, train_s, stop_reason = state.tokens, 0.0, None
        throughput = Throughput(state.tokens, state.step)
        t_session = time.perf_counter()
        restore_rng(state.rng)  # a resumed run draws the same dropout masks from here on
        par.train()
        try:
            with stop_signals() as signals:
                while state.step < tc.max_steps:
                    t_step = time.perf_counter()
                    lr = lr_at(state.step, tc)
                    set_lr(optimizer, lr)
                    n_micro = micro_batches_at(state.tokens, tc, seq_len)
                    loss, grad_norm = _forward_backward(
                        par, optimizer, scaler, source, n_micro, state.step, tc, local_batch, device, amp
                    )
                    source_figures = _source_metrics(par, source)
                    # fp16's scaler skips steps with inf grads by itself (normal while it calibrates).
                    if math.isfinite(loss) and (scaler.is_enabled() or math.isfinite(grad_norm)):
                        scaler.step(optimizer)
                        state.bad_steps, state.last_loss = 0, loss
                    else:
                        state.bad_steps += 1
                        progress.message(
                            f"warning: non-finite loss ({loss}) or grad norm ({grad_norm}) at step "
                            f"{state.step + 1}; step skipped ({state.bad_steps}/{tc.max_bad_steps} "
                            "in a row)",
                            sys.stderr,
                        )
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    state.tokens += n_micro * tokens_per_micro
                    train_s += time.perf_counter() - t_step
                    step = state.step

                    # -- every log_every steps: metrics.jsonl and the progress display
                    if step % tc.log_every == 0 or step == tc.max_steps:
                        tok_s, s_per_step = throughput.tick(state.tokens, step)
                        rec = {
                            "kind": "train",
                            "step": step,
                            "loss": loss,
                            "lr": lr,
                            "grad_norm": grad_norm,
                            "tokens": state.tokens,
                            "tokens_per_s": tok_s,
                            "elapsed": state.elapsed + time.perf_counter() - t_session,
                        }
                        rec.update(source_figures)
                        if mfu_scale:
                            rec["mfu"] = tok_s * mfu_scale
                        if device.type == "cuda":
                            rec["mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
                        metrics.write(rec)
                        progress.step(step, rec, eta_s=(tc.max_steps - step) * s_per_step)

                    # -- max_bad_steps non-finite losses in a row: give up (no checkpoint of a diverged model)
                    if state.bad_steps >= tc.max_bad_steps:
                        stop_reason = (
                            f"stopped after {state.bad_steps} non-finite losses in a row at step {step} "
                            "(diverged: lower train.lr or raise train.warmup_steps); latest "
                            f"checkpoint: {saved_path or 'none'}; {figures_note(state)}"
                        )
                        progress.message(stop_reason, sys.stderr)
                        break

                    # -- every eval_every steps and at the end: held-out loss
                    if validator and ((tc.eval_every and step % tc.eval_every == 0) or step == tc.max_steps):
                        t0 = time.perf_counter()
                        val = validator(par, amp)
                        if math.isfinite(val["val_loss"]):  # a diverging run keeps its last real figures
                            state.val_loss, state.val_bpb, state.val_step = (
                                val["val_loss"],
                                val["val_bpb"],
                                step,
                            )
                        metrics.write({"kind": "val", "step": step, **val, "tokens": state.tokens})
                        progress.message(val_line(step, tc.max_steps, val))
                        throughput.exclude(time.perf_counter() - t0)

                    # -- every ckpt_every steps, at the end, and on SIGINT/SIGTERM: checkpoint
                    # A signal may reach the ranks at different steps; they stop together at the first.
                    stop = (
                        env.all_max(signals.received) if step < tc.max_steps else 0
                    )  # the last step ends anyway
                    if (tc.ckpt_every and step % tc.ckpt_every == 0) or step == tc.max_steps or stop:
                        t0 = time.perf_counter()
                        state.elapsed += t0 - t_session
                        t_session = t0
                        saved_path = str(save(run_dir, par, optimizer, scaler, source, state, cfg, env))
                        throughput.exclude(time.perf_counter() - t0)
                    if stop:
                        stop_reason = (
                            f"interrupted by {signal.Signals(stop).name} at step {step}/{tc.max_steps}; "
                            f"checkpoint saved to {saved_path}; run the same command again to resume"
                        )
                        progress.message(stop_reason, sys.stderr)
                        break
        finally:
            progress.close()
            metrics.close()
        if inputs.on_complete is not None and state.step >= tc.max_steps and stop_reason is None:
            with env.collectively():
                inputs.on_complete(par)

    return TrainResult(
        steps=state.step,
        tokens=state.tokens,
        final_train_loss=state.last_loss,
        val_loss=state.val_loss,
        val_ppl=(
            math.exp(min(state.val_loss, 700.0))
            if state.val_loss is not None and cfg.model.kind == "decoder"
            else None
        ),
        val_bpb=state.val_bpb,
        tokens_per_s=(state.tokens - start_tokens) / train_s if train_s > 0 else 0.0,
        wall_s=time.perf_counter() - t_begin,
        stopped_early=stop_reason is not None,
        checkpoint=saved_path,
        stop_reason=stop_reason,
        val_step=state.val_step,
        diverged=state.bad_steps >= tc.max_bad_steps,
    )


def _forward_backward(
    par: Parallel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    source: BatchSource,
    n_micro: int,
    step: int,
    tc: TrainConfig,
    local_batch: int,
    device: torch.device,
    amp,
) -> tuple[float, float]:
    """Accumulate one optimizer step's gradient over n_micro micro-batches, then clip it.
    Returns (mean loss over all ranks, global grad norm before clipping), read with the step's
    one host sync."""
    if source.token_weighted:
        return _forward_backward_tokens(
            par, optimizer, scaler, source, n_micro, step, tc, local_batch, device, amp
        )
    loss_sum = torch.zeros((), device=device)
    for micro in range(n_micro):
        batch = {
            k: v.to(device, non_blocking=True) for k, v in source.next_batch(local_batch, step, micro).items()
        }
        with amp():
            loss_sum += par.forward_backward(batch, n_micro, micro == n_micro - 1, scaler)
    scaler.unscale_(optimizer)  # no-op unless fp16
    grad_norm = par.clip_grad_norm(tc.grad_clip)
    loss = par.mean_over_ranks(loss_sum / n_micro)
    loss_val, norm_val = torch.stack([loss, grad_norm.float()]).tolist()  # the host sync
    return loss_val, norm_val


def _forward_backward_tokens(
    par: Parallel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    source: BatchSource,
    n_micro: int,
    step: int,
    tc: TrainConfig,
    local_batch: int,
    device: torch.device,
    amp,
) -> tuple[float, float]:
    """The loss-masked objective: every loss token of the step weighs the same, whatever its
    micro-batch or rank. The step's micro-batches are drawn first to count its loss tokens; each
    rank's summed loss is scaled by dp / that count, as data parallelism averages gradients over dp."""
    batches = [source.next_batch(local_batch, step, micro) for micro in range(n_micro)]
    total = sum(int(b.pop("step_tokens")) for b in batches)
    weight = par.env.layout.dp / max(total, 1)
    loss_sum = torch.zeros((), device=device)
    for micro, cpu_batch in enumerate(batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
        with amp():
            loss_sum += par.forward_backward(
                batch, n_micro, micro == n_micro - 1, scaler, weight=weight, loss_sum=source.loss_sum
            )
    scaler.unscale_(optimizer)  # no-op unless fp16
    grad_norm = par.clip_grad_norm(tc.grad_clip)
    loss = par.mean_over_ranks(loss_sum)
    loss_val, norm_val = torch.stack([loss, grad_norm.float()]).tolist()  # the host sync
    return loss_val, norm_val


def _source_metrics(par: Parallel, source: BatchSource) -> dict[str, float]:
    """A source's own per-step figures (e.g. DPO's reward margin): its sums over this rank's loss
    units of the step, added over the data-parallel ranks and divided by the units ("units")."""
    take = getattr(source, "step_metrics", None)
    if take is None:
        return {}
    sums = take()
    if not sums:
        return {}
    names = list(sums)
    added = par.mean_over_ranks(torch.stack([sums[n].float() for n in names])) * par.env.layout.dp
    figures = dict(zip(names, added.tolist()))
    units = figures.pop("units")
    return {n: v / max(units, 1.0) for n, v in figures.items()}
