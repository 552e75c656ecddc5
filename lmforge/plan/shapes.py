"""A model shape for a parameter count, when the user gives a size but no architecture.

Memory and the attention FLOPs need a shape (layers, width, heads, vocabulary); a bare `--params
7e9` gets a Llama-style decoder of about that size. Width/depth ~128 follows the large published
models (Llama 2 7B: 4096/32, GPT-3 175B: 12288/96; Kaplan et al. 2020 §3.1 find the loss flat over a
wide range of aspect ratios), with head dim 128, SwiGLU, RMSNorm, RoPE and no biases (Llama 2,
Touvron et al. 2023). The vocabulary defaults to Llama 2's 32,000 tokens.
"""

from __future__ import annotations

import math

from lmforge.errors import LmforgeError
from lmforge.model.config import ModelConfig

ASPECT = 128  # n_embd / n_layer
HEAD_DIM = 128
DEFAULT_VOCAB = 32_000
DEFAULT_SEQ_LEN = 2048


def llama_shape(
    n_layer: int, n_embd: int, vocab_size: int = DEFAULT_VOCAB, seq_len: int = DEFAULT_SEQ_LEN
) -> ModelConfig:
    head_dim = HEAD_DIM if n_embd % HEAD_DIM == 0 else 64 if n_embd % 64 == 0 else n_embd
    return ModelConfig(
        kind="decoder",
        vocab_size=vocab_size,
        block_size=seq_len,
        n_layer=n_layer,
        n_head=n_embd // head_dim,
        n_embd=n_embd,
        activation="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
        tie_embeddings=False,
        ffn_multiple_of=256,
    )


def shape_for_params(
    params: float, vocab_size: int = DEFAULT_VOCAB, seq_len: int = DEFAULT_SEQ_LEN
) -> ModelConfig:
    """The Llama-style shape (width a multiple of 64, or of 128 from 1024 up) whose parameter count
    is closest to `params`, preferring, among shapes within 10% of the count, width/depth near
    ASPECT and a depth divisible by 4."""
    if not params > 0:
        raise LmforgeError(f"params must be positive, got {params!r}")
    best, best_score = None, math.inf
    for n_layer in range(1, 257):
        # 12·L·d² (attention 4d², SwiGLU 8d²) + 2·V·d (untied embeddings) = N, solved for d
        a, b = 12.0 * n_layer, 2.0 * vocab_size
        d = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
        step = 128 if d >= 1024 else 64  # tensor-core and tensor-parallel friendly widths
        for width in {max(64, step * math.floor(d / step)), max(64, step * math.ceil(d / step))}:
            cfg = llama_shape(n_layer, width, vocab_size, seq_len)
            size_err = abs(math.log(cfg.num_params() / params))
            score = (
                size_err + (0.0 if size_err > 0.1 else -1.0) + 0.05 * abs(math.log(width / n_layer / ASPECT))
            )
            score += 0.02 if n_layer > 8 and n_layer % 4 else 0.0  # depths that split into pipeline stages
            if score < best_score:
                best, best_score = cfg, score
    return best
