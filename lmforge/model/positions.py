"""Position schemes: what each adds to a forward pass, and the tables behind them.

- learned absolute embeddings (GPT-2), added to the token embeddings;
- sinusoidal (Vaswani et al. 2017, sec. 3.5), added after scaling the tokens by sqrt(d);
- rotary RoPE (Su et al. 2021), rotating queries and keys;
- ALiBi (Press et al. 2022), a distance bias on the attention scores.

A chunk of T tokens sits at positions [start, start+T), or, for left-padded rows of a batch, at
per-row positions `pos` (B, T). Shapes: B batch, H heads, T query length, S key length, D head dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.model.config import ModelConfig

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin: (T, D/2) each


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """(n_pos, dim): PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same) (Vaswani, sec. 3.5)."""
    angles = torch.outer(
        torch.arange(n_pos, dtype=torch.float32),
        10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim),
    )
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # interleave sin, cos


def rope_tables(n_pos: int, head_dim: int, theta: float) -> Rope:
    """cos and sin of p * theta^(-2i/D) for positions p < n_pos and pairs i < D/2 (Su et al. 2021)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)  # (n_pos, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + D/2]) of x (B, H, T, D) by its angle. Pairs are the two halves
    of the head (GPT-NeoX / Hugging Face Llama layout), so q/k_proj export without permutation."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, D)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes (Press et al. 2022, sec. 3): for n a power of two, the geometric sequence
    2^(-8/n), 2^(-16/n), ..., 2^(-8); otherwise those of the nearest smaller power of two m, then
    every other slope of 2m's sequence (the paper's code)."""

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    m = 2 ** math.floor(math.log2(n_head))
    return torch.tensor(geometric(m) + geometric(2 * m)[0::2][: n_head - m])


def alibi_bias(slopes: torch.Tensor, start: int, T: int, causal: bool) -> torch.Tensor:
    """(H, T, start+T) additive attention bias: -slope * distance between query and key. Causal: keys
    after the query get -inf (the paper). Bidirectional (encoder): the symmetric -slope * |i - j|."""
    q = torch.arange(start, start + T, device=slopes.device)
    k = torch.arange(start + T, device=slopes.device)
    dist = (k[None, :] - q[:, None]).to(slopes.dtype)  # (T, S): j - i, <= 0 for the past
    if not causal:
        return -slopes[:, None, None] * dist.abs()
    bias = slopes[:, None, None] * dist  # (H, T, S)
    return bias.masked_fill(dist > 0, float("-inf"))


class Positions(nn.Module):
    """What a position scheme contributes to a forward pass; the defaults contribute nothing.

    A chunk of T tokens sits at positions [start, start+T), or, for left-padded rows of a batch, at
    per-row positions `pos` (B, T). ALiBi needs no `pos`: padding shifts queries and keys alike."""

    limit: int | None = None  # longest sequence it can encode (a table's size); None = unbounded

    def add(self, x: torch.Tensor, start: int, pos: torch.Tensor | None = None) -> torch.Tensor:
        return x  # absolute schemes, at the input

    def rotary(self, start: int, T: int, pos: torch.Tensor | None = None) -> Rope | None:
        return None  # RoPE, on queries and keys

    def bias(self, start: int, T: int, causal: bool) -> torch.Tensor | None:  # ALiBi, on scores
        return None


class LearnedPositions(Positions):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.block_size, cfg.n_embd))  # (block_size, C)
        self.limit = cfg.block_size

    def add(self, x: torch.Tensor, start: int, pos: torch.Tensor | None = None) -> torch.Tensor:
        table = self.weight[start : start + x.shape[1]] if pos is None else self.weight[pos]
        return x + table  # (B, T, C) + (T, C) or (B, T, C)


class SinusoidalPositions(Positions):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(cfg.block_size, cfg.n_embd), persistent=False)
        self.limit = cfg.block_size
        # Vaswani et al. sec. 3.4 scale the token embeddings by sqrt(d_model), so the sinusoids'
        # unit amplitude does not drown the tokens.
        self.scale = math.sqrt(cfg.n_embd)

    def add(self, x: torch.Tensor, start: int, pos: torch.Tensor | None = None) -> torch.Tensor:
        table = self.table[start : start + x.shape[1]] if pos is None else self.table[pos]
        return x * self.scale + table  # (B, T, C) + (T, C) or (B, T, C)


class RotaryPositions(Positions):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim, self.theta = cfg.head_dim, cfg.rope_theta
        cos, sin = rope_tables(cfg.block_size, cfg.head_dim, cfg.rope_theta)  # computed once
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def rotary(self, start: int, T: int, pos: torch.Tensor | None = None) -> Rope:
        cos, sin = self.cos, self.sin
        if start + T > cos.shape[0]:  # past block_size: extrapolate with fresh tables
            cos, sin = (t.to(self.cos.device) for t in rope_tables(start + T, self.head_dim, self.theta))
        if pos is not None:  # per-row positions (pos <= slot < start + T)
            return cos[pos][:, None], sin[pos][:, None]  # (B, 1, T, D/2): broadcast over heads
        return cos[start : start + T], sin[start : start + T]


class ALiBiPositions(Positions):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(cfg.n_head), persistent=False)

    def bias(self, start: int, T: int, causal: bool) -> torch.Tensor:
        # Once per forward, shared by all layers; fp32 even in a bf16 model, as distances grow large.
        return alibi_bias(self.slopes.float(), start, T, causal)


POSITIONS = {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "rope": RotaryPositions,
    "alibi": ALiBiPositions,
}
