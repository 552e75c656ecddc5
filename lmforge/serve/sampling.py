"""The one sampling core: next-token logits -> token ids, and how many tokens a prompt may get.

`sample` serves every generation path (serve's generate_tokens and batcher, eval's backends):
greedy at temperature 0, else temperature, top-k and top-p (nucleus) filtering and a draw from a
torch.Generator. A batch may share one setting and one generator (one draw over the batch), or
give each row its own; a row with its own generator draws exactly what it would draw alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig


def token_budget(max_new_tokens: int, prompt_len: int, block_size: int) -> int:
    """Tokens a prompt of `prompt_len` may generate: max_new_tokens, fewer at the context limit.

    The last sampled token is never fed back, so it may sit at position block_size: a prompt
    that fills the context still gets one token."""
    return max(0, min(max_new_tokens, block_size - prompt_len + 1))


def cache_slots(prompt_len: int, budget: int) -> int:
    """KV-cache positions a prompt and `budget` new tokens need (the last token is not fed back)."""
    return prompt_len + budget - 1


def scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits (..., V) divided by a temperature > 0, shifted so each row's largest is 0.

    The shift (softmax does not change with it) keeps a tiny temperature finite: the best token
    scores 0 and the others -inf at worst, never inf - inf = nan. Below float32's smallest normal
    number a temperature would round to 0 (and 0/0 is nan), so it is raised to that number: the
    same limit, the most likely token(s)."""
    temperature = max(temperature, torch.finfo(logits.dtype).tiny)
    return (logits - logits.amax(dim=-1, keepdim=True)) / temperature


def probabilities(logits: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """The distribution (B, V) a temperature > 0 sample draws from, after top-k and top-p."""
    logits = scaled(logits.float(), cfg.temperature)
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2020): keep the smallest set of most likely tokens
        # whose mass reaches top_p; a token is kept if the mass before it is still below top_p,
        # so the most likely token always survives.
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= cfg.top_p, 0.0)
        sorted_probs[:, 0] = sorted_probs[:, 0].clamp_min(torch.finfo(sorted_probs.dtype).tiny)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs


def _sample_shared(logits: torch.Tensor, cfg: SampleConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, V) -> (B,) with one setting and one generator for the whole batch."""
    if cfg.temperature == 0:
        return torch.argmax(logits, dim=-1)  # the first index on ties, as lm-eval and HF
    return torch.multinomial(probabilities(logits, cfg), 1, generator=gen)[:, 0]


def sample(
    logits: torch.Tensor,
    settings: SampleConfig | Sequence[SampleConfig],
    generators: torch.Generator | Sequence[torch.Generator],
) -> torch.Tensor:
    """Token ids from next-token logits: (B, V) -> (B,), or (V,) -> a 0-d tensor.

    `settings` and `generators` are one for the whole batch, or a sequence with one per row. A
    row with its own generator is sampled on its own, so its draws do not depend on the batch
    (a served request's seeded sample is the same in any batch); a shared generator makes one
    draw over the batch. Greedy rows (temperature 0) never touch their generator.
    """
    if logits.dim() == 1:
        return sample(logits[None], settings, generators)[0]
    rows = logits.shape[0]
    per_row_cfg = not isinstance(settings, SampleConfig)
    per_row_gen = not isinstance(generators, torch.Generator)
    for given, per_row, what in (
        (settings, per_row_cfg, "settings"),
        (generators, per_row_gen, "generators"),
    ):
        if per_row and len(given) != rows:
            raise LmforgeError(f"sample: {len(given)} {what} for {rows} rows of logits")
    if not per_row_cfg and not per_row_gen:
        return _sample_shared(logits, settings, generators)
    if not per_row_gen:
        raise LmforgeError(
            "sample: per-row settings need per-row generators (one shared generator "
            "would make each row's draws depend on the rows before it)"
        )
    cfgs = settings if per_row_cfg else [settings] * rows
    out = torch.empty(rows, dtype=torch.long, device=logits.device)
    greedy = [i for i, cfg in enumerate(cfgs) if cfg.temperature == 0]
    if len(greedy) == rows:  # the common all-greedy batch: no copies
        return torch.argmax(logits, dim=-1)
    if greedy:  # one argmax for all greedy rows: row by row it gives the same ids, slower
        out[greedy] = torch.argmax(logits[greedy], dim=-1)
    for i, cfg in enumerate(cfgs):
        if cfg.temperature != 0:
            out[i] = _sample_shared(logits[i : i + 1], cfg, generators[i])[0]
    return out
