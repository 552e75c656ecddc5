"""Learning-rate schedule and batch-size ramp: pure functions of where the run is.

Both depend only on (step or tokens seen, config), so a resumed run gets the same values without
saving any scheduler state.
"""

from __future__ import annotations

import math

from lmforge.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warmup reaching cfg.lr at the last warmup step (so no step is wasted at lr 0), then
    cosine (or linear) decay to cfg.lr * cfg.min_lr_ratio at cfg.max_steps; "constant" holds the
    peak after warmup. Cosine to 10% of the peak follows Chinchilla (Hoffmann et al. 2022, §3).
    """
    peak = cfg.lr
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return peak
    floor = peak * cfg.min_lr_ratio
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min(max((step - cfg.warmup_steps) / span, 0.0), 1.0)
    if cfg.decay == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def micro_batches_at(tokens_seen: int, cfg: TrainConfig, seq_len: int) -> int:
    """Micro-batches in the next optimizer step: cfg.grad_accum, or fewer during the batch ramp.

    GPT-3 (Brown et al. 2020, §B) grows the batch linearly from a small size to the full one over
    the first few billion tokens. Here the batch grows in whole micro-batches, so the target
    tokens per step (start + (full - start) * seen / ramp_tokens) is rounded to micro-batches.
    """
    full = cfg.grad_accum
    if cfg.batch_ramp_tokens <= 0 or tokens_seen >= cfg.batch_ramp_tokens:
        return full
    micro_tokens = cfg.batch_size * seq_len
    full_tokens = full * micro_tokens
    start = min(max(cfg.batch_ramp_start, micro_tokens), full_tokens)
    target = start + (full_tokens - start) * tokens_seen / cfg.batch_ramp_tokens
    return min(max(math.floor(target / micro_tokens + 0.5), 1), full)
