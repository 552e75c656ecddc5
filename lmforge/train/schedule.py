"""Learning-rate schedule and batch-size ramp: pure functions of where the run is.

Both depend only on (step or tokens seen, config), so a resumed run gets the same values without
saving any scheduler state.
"""

from __future__ import annotations

import math

from lmforge.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warmup reaching cfg.lr at the last warmup step (so no step is wasted at lr 0), then by
    cfg.decay: "cosine" (or "linear") decay to cfg.lr * cfg.min_lr_ratio at cfg.max_steps; "constant"
    holds the peak; "wsd" holds the peak and decays only over the last cfg.decay_fraction of the
    steps (`wsd_decay_start`). Cosine to 10% of the peak follows Chinchilla (Hoffmann et al. 2022, §3).

    Warmup-stable-decay (trapezoidal; Hu et al. 2024, MiniCPM §4; Hägele et al. 2024, "Scaling
    Laws and Compute-Optimal Training Beyond Fixed Training Durations"): the constant phase
    does not depend on the run's length, and a short cooldown (Hägele: ~20% of the steps) matches
    cosine. The cooldown is linear or "1-sqrt", lr = floor + (peak - floor)(1 - sqrt(progress)),
    which Hägele et al. (§3) found better than linear.
    """
    peak = cfg.lr
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return peak
    floor = peak * cfg.min_lr_ratio
    start = wsd_decay_start(cfg) if cfg.decay == "wsd" else cfg.warmup_steps
    span = max(cfg.max_steps - start, 1)
    progress = min(max((step - start) / span, 0.0), 1.0)
    if cfg.decay == "wsd":
        shape = math.sqrt(progress) if cfg.decay_shape == "1-sqrt" else progress
        return peak - (peak - floor) * shape
    if cfg.decay == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_decay_start(cfg: TrainConfig) -> int:
    """The first step of wsd's decay: decay_fraction of max_steps (rounded, at least one step)
    before the end, but not inside the warmup."""
    return max(cfg.max_steps - max(round(cfg.decay_fraction * cfg.max_steps), 1), cfg.warmup_steps)


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
