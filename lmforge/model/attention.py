"""Attention: the masks, scaled dot-product attention through torch's SDPA (or written out, to
keep the probabilities), and the self- and cross-attention modules.

n_kv_head key/value heads give multi-head (= n_head), grouped-query (Ainslie et al. 2023) or
multi-query (= 1, Shazeer 2019) attention. QK-norm (model.qk_norm) normalises each head's query
and key with the model's norm kind, one gain per head dimension shared by the heads, before RoPE:
as OLMo 2 (Team OLMo 2024, "2 OLMo 2 Furious", sec. 3.1) and Qwen3 (Qwen Team 2025) do with RMSNorm,
and ViT-22B (Dehghani et al. 2023) with LayerNorm, to keep attention logits from growing without
bound. Shapes: B batch, T query length, S key length, C = n_embd, H heads, D = head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.layers import make_norm
from lmforge.model.positions import Rope, apply_rotary

# ---------------------------------------------------------------- masks and attention functions


def causal_mask(start: int, T: int, device: torch.device) -> torch.Tensor:
    """(T, start+T) bool, True where query start+i may see key j (j <= start+i): a new chunk of T
    tokens appended after `start` cached ones. SDPA's is_causal assumes start == 0."""
    q = torch.arange(start, start + T, device=device)
    k = torch.arange(start + T, device=device)
    return k[None, :] <= q[:, None]


def padded_causal_mask(pad: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """(B, 1, T, start+T) bool for a batch of left-padded rows, row b's first pad[b] slots padding:
    causal, and padding keys hidden. A padding query still sees itself: an all-False row makes SDPA
    return NaN, which its cached values would carry into every real query (0 * NaN = NaN)."""
    q = torch.arange(start, start + T, device=pad.device)
    k = torch.arange(start + T, device=pad.device)
    causal, itself = k[None, :] <= q[:, None], k[None, :] == q[:, None]  # (T, S) each
    real = k[None, :] >= pad[:, None]  # (B, S)
    return (causal & (real[:, None, :] | itself))[:, None]  # (B, 1, T, S), broadcast over heads


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool for packed rows: causal, and only within a token's own segment (a
    block-diagonal causal mask; Krell et al. 2021, Llama 3's per-document masking)."""
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    dropout_p: float,
) -> torch.Tensor:
    """q (B, H, T, D), k/v (B, H_kv, S, D) -> (B, H, T, D); H_kv < H shares each K/V head."""
    if k.shape[1] != q.shape[1] and not _NATIVE_GQA:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # an fp32 ALiBi bias under bf16 autocast
    extra = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, **extra
    )


# SDPA's enable_gqa arrived in torch 2.5; older versions repeat the K/V heads instead.
_NATIVE_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """What SDPA computes, written out so the probabilities P = softmax(QK^T/sqrt(D) + mask) (B, H, T, S)
    can be kept (lmforge inspect): returns (P V, P). Slower; used only when a module records."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, S, D)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if is_causal:
        mask = causal_mask(0, q.shape[2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(dim=-1)
    return (probs.to(v.dtype) @ v), probs  # (B, H, T, D), (B, H, T, S)


# ---------------------------------------------------------------- modules


class Attention(nn.Module):
    """Projections and SDPA shared by self- and cross-attention."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        C, D = cfg.n_embd, cfg.head_dim
        # The model's head counts; a tensor-parallel rank holds a slice of the projections, so the
        # forward reads the head count of a projection from its width (`heads`).
        self.n_head, self.n_kv_head, self.head_dim, self.layer = cfg.n_head, cfg.kv_heads, D, layer
        self.q_proj = nn.Linear(C, cfg.n_head * D, bias=cfg.bias)
        self.k_proj = nn.Linear(C, cfg.kv_heads * D, bias=cfg.bias)
        self.v_proj = nn.Linear(C, cfg.kv_heads * D, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_head * D, C, bias=cfg.bias)
        if cfg.qk_norm:  # one gain per head dimension, shared by the heads (as Qwen3's q_norm/k_norm)
            self.q_norm, self.k_norm = make_norm(cfg, D), make_norm(cfg, D)
        self.qk_norm = cfg.qk_norm
        self.dropout_p = cfg.attn_dropout
        self.record: list[torch.Tensor] | None = None  # opt-in: a list receiving each call's probabilities

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, width = x.shape
        return x.view(B, T, width // self.head_dim, self.head_dim).transpose(
            1, 2
        )  # (B, T, n*D) -> (B, n, T, D)

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Queries (B, H, T, D) of a (B, T, C) sequence (normalised per head with QK-norm)."""
        q = self.heads(self.q_proj(x))
        return self.q_norm(q) if self.qk_norm else q

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H_kv, S, D) of a (B, S, C) sequence (keys normalised with QK-norm)."""
        k = self.heads(self.k_proj(memory))
        return (self.k_norm(k) if self.qk_norm else k), self.heads(self.v_proj(memory))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if self.record is not None:  # looking inside (lmforge inspect); SDPA stays the default path
            y, probs = explicit_attention(q, k, v, mask, is_causal)
            self.record.append(probs.detach())
        else:
            y = sdpa(q, k, v, mask, is_causal, self.dropout_p if self.training else 0.0)  # (B, H, T, D)
        B, H, T, D = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * D))  # (B, T, C)


class SelfAttention(Attention):
    def forward(
        self,
        x: torch.Tensor,
        rope: Rope | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
    ) -> torch.Tensor:
        q = self.project_q(x)  # (B, H, T, D)
        k, v = self.project_kv(x)  # (B, H_kv, T, D)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)  # (B, H_kv, start+T, D)
        return self.attend(q, k, v, mask, is_causal)


class CrossAttention(Attention):
    """Decoder queries over the encoder's output; its keys/values come precomputed (once per source)."""

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = self.project_q(x)  # (B, H, T, D)
        return self.attend(q, *memory_kv, None, False)  # every source token is visible
