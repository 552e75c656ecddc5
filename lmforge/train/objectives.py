"""Pre-training objectives: turn a window of tokens into a model batch, one function per model kind.

- decoder: next-token prediction (the loader's x, y = x shifted by one).
- encoder: masked language modelling (BERT, Devlin et al. 2019 §3.1): 15% of the tokens are
  chosen; of those 80% become the mask token, 10% a random token, 10% stay; the loss is on the
  chosen positions only (targets are -100 elsewhere).
- encoder-decoder: denoising with contiguous spans covering `noise_density` of the tokens, of mean
  length `mean_span_length`; each span becomes one mask token in the source.
  "t5" (Raffel et al. 2020 §3.1.4): the target lists the spans, each after a mask token, then eot.
  With a single mask token the spans are told apart by order (T5 uses distinct sentinels).
  "bart" (Lewis et al. 2020 §2.2, text infilling): the target is the whole original window.
  The decoder input is the target shifted right behind a start token (eot, as BART's </s>).

Randomness comes from a generator seeded per (run seed, step, micro-batch), so masks need no
saved state to be reproduced on resume, and validation sees the same masks every time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.train.config import TrainConfig

IGNORE = -100  # targets with this value carry no loss (torch cross_entropy's ignore_index)


def batch_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence hashing; no collisions in practice)."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )


class Objective:
    """Callable: objective(x, y, seed) -> {"input_ids", "targets"[, "decoder_input_ids"]} (CPU int64)."""

    def __init__(self, kind: str, cfg: TrainConfig, tokenizer):
        self.kind = kind
        self.cfg = cfg
        self.mask_id = tokenizer.mask_id
        self.start_id = tokenizer.eot_id  # decoder start token for encoder-decoder models
        self.eot_id = tokenizer.eot_id
        token_bytes = torch.as_tensor(np.asarray(tokenizer.token_bytes()), dtype=torch.int64)
        self.is_special = token_bytes == 0  # special tokens have no bytes
        self.normal_ids = torch.nonzero(~self.is_special).flatten()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        if self.kind == "decoder":
            return {"input_ids": x, "targets": y}
        gen = torch.Generator().manual_seed(seed)
        if self.kind == "encoder":
            return mlm_batch(x, self.cfg.mlm_probability, self.mask_id, self.is_special, self.normal_ids, gen)
        if self.kind == "encoder-decoder":
            noise = span_noise_mask(x.shape, self.cfg.noise_density, self.cfg.mean_span_length, gen)
            if self.cfg.denoising == "bart":
                return infill_batch(x, noise, self.mask_id, self.start_id)
            return span_corruption_batch(x, noise, self.mask_id, self.start_id, self.eot_id)
        raise ValueError(f"unknown model kind {self.kind!r}")


def masked_nll_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss-masked objective of fine-tuning: summed cross-entropy (fp32) over the targets other
    than IGNORE; packed rows (segment_ids, position_ids) keep their examples apart. A sum, so the
    loop can weigh every loss token of a step the same (train/source.py)."""
    logits, _ = model(
        batch["input_ids"], None, segment_ids=batch.get("segment_ids"), position_ids=batch.get("position_ids")
    )
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        batch["targets"].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def mlm_batch(
    x: torch.Tensor,
    probability: float,
    mask_id: int,
    is_special: torch.Tensor,
    normal_ids: torch.Tensor,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """BERT masking. Each row gets round(probability * its non-special tokens) chosen positions
    (at least one), so no batch is left without a loss term."""
    B, T = x.shape
    candidate = ~is_special[x]  # (B, T)
    scores = torch.rand(B, T, generator=gen).masked_fill(~candidate, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, T) rank of each position's score in its row
    k = (candidate.sum(dim=1, keepdim=True) * probability).round().clamp(min=1)  # (B, 1)
    chosen = (rank < k) & candidate
    action = torch.rand(B, T, generator=gen)
    random_tokens = normal_ids[torch.randint(len(normal_ids), (B, T), generator=gen)]
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(x, mask_id), x)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
    targets = torch.where(chosen, x, torch.full_like(x, IGNORE))
    return {"input_ids": inputs, "targets": targets}


def span_noise_mask(
    shape: torch.Size, density: float, mean_span: float, gen: torch.Generator
) -> torch.Tensor:
    """bool (B, T): True on corrupted tokens. Every row has the same number of noise tokens and
    spans (T5's random_spans_noise_mask), so corrupted rows stay equal in length.

    The row alternates kept and noise spans, starting with a kept one; span lengths are random
    positive integers with the right totals.
    """
    B, T = shape
    n_noise = min(max(round(T * density), 1), T - 1)
    n_spans = max(min(round(n_noise / mean_span), n_noise, T - n_noise), 1)
    rows = []
    for _ in range(B):
        noise_len = _random_partition(n_noise, n_spans, gen)
        keep_len = _random_partition(T - n_noise, n_spans, gen)
        lengths = torch.stack([keep_len, noise_len], dim=1).flatten()  # keep, noise, keep, noise, ...
        flags = torch.tensor([False, True]).repeat(n_spans)
        rows.append(flags.repeat_interleave(lengths))
    return torch.stack(rows)


def _random_partition(total: int, parts: int, gen: torch.Generator) -> torch.Tensor:
    """`parts` positive ints summing to `total`, uniformly over compositions."""
    cuts = torch.randperm(total - 1, generator=gen)[: parts - 1] + 1
    edges = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([total])])
    return edges.diff()


def _select(x: torch.Tensor, noise: torch.Tensor, mask_id: int, tokens: torch.Tensor) -> torch.Tensor:
    """Read each row left to right emitting a mask token where a noise span starts and the token
    where `tokens` is True. Every row emits the same count, so the result is (B, L)."""
    span_start = noise & ~torch.nn.functional.pad(noise, (1, 0))[:, :-1]  # (B, T)
    slots = torch.stack([torch.full_like(x, mask_id), x], dim=2)  # (B, T, 2): [mask, token]
    keep = torch.stack([span_start, tokens], dim=2)  # (B, T, 2)
    return slots[keep].view(x.shape[0], -1)


def _corrupt_source(x: torch.Tensor, noise: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Each noise span becomes one mask token: (B, T) -> (B, T - n_noise + n_spans)."""
    return _select(x, noise, mask_id, ~noise)


def span_corruption_batch(
    x: torch.Tensor, noise: torch.Tensor, mask_id: int, start_id: int, eot_id: int
) -> dict[str, torch.Tensor]:
    """T5: source keeps the text with a mask per span; target = (mask, span tokens) per span, then eot."""
    target = _select(x, noise, mask_id, noise)  # (B, n_noise + n_spans)
    target = torch.cat([target, torch.full((x.shape[0], 1), eot_id, dtype=x.dtype)], dim=1)
    return {
        "input_ids": _corrupt_source(x, noise, mask_id),
        "decoder_input_ids": _shift_right(target, start_id),
        "targets": target,
    }


def infill_batch(
    x: torch.Tensor, noise: torch.Tensor, mask_id: int, start_id: int
) -> dict[str, torch.Tensor]:
    """BART text infilling: source has a mask per span; target is the original window."""
    return {
        "input_ids": _corrupt_source(x, noise, mask_id),
        "decoder_input_ids": _shift_right(x, start_id),
        "targets": x,
    }


def _shift_right(target: torch.Tensor, start_id: int) -> torch.Tensor:
    """(B, L) -> (B, L): start token, then target[:, :-1] (teacher forcing)."""
    start = torch.full((target.shape[0], 1), start_id, dtype=target.dtype)
    return torch.cat([start, target[:, :-1]], dim=1)
