"""The model's shape and options: one dataclass, one comment per field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lmforge.errors import ConfigError


@dataclass
class ModelConfig:
    kind: Literal["decoder", "encoder", "encoder-decoder"] = "decoder"  # causal LM, masked LM, seq2seq
    vocab_size: int = 4096  # set from the tokenizer by `lmforge run`/`train`
    block_size: int = 256  # longest sequence the model sees (position table size for learned/sinusoidal)
    n_layer: int = 4  # transformer blocks (the decoder's, for encoder-decoder)
    n_encoder_layer: int | None = None  # encoder blocks of an encoder-decoder; None = n_layer
    n_head: int = 4  # query heads
    n_kv_head: int | None = None  # key/value heads: None = n_head (MHA), 1 = MQA, between = GQA
    n_embd: int = 256  # residual stream width
    ffn_hidden: int | None = None  # MLP hidden width; None = 4*n_embd, or 2/3 of that for GLU variants
    ffn_multiple_of: int = 32  # round the derived ffn_hidden up to a multiple of this
    activation: Literal["relu", "gelu", "silu", "swiglu", "geglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_position: Literal["pre", "post"] = "pre"  # pre-norm (GPT-2+) or post-norm (original Transformer)
    norm_eps: float = 1e-5
    pos: Literal["learned", "sinusoidal", "rope", "alibi"] = "learned"
    rope_theta: float = 10000.0
    embd_dropout: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    bias: bool = True  # biases in linear layers and LayerNorm
    tie_embeddings: bool = True  # share the token embedding with the output projection
    init_std: float = 0.02
    scaled_residual_init: bool = True  # GPT-2: residual projections get init_std / sqrt(2 * n_layer)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def encoder_layers(self) -> int:
        return self.n_encoder_layer if self.n_encoder_layer is not None else self.n_layer

    @property
    def is_glu(self) -> bool:
        return self.activation in ("swiglu", "geglu")

    @property
    def hidden_dim(self) -> int:
        """MLP hidden width. GLU variants use 2/3 of 4d so the three matrices hold as many
        parameters as the two of a plain MLP (Shazeer 2020, "GLU Variants Improve Transformer")."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        hidden = 4 * self.n_embd
        if self.is_glu:
            hidden = int(2 * hidden / 3)
        m = self.ffn_multiple_of
        return m * math.ceil(hidden / m)

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible shape."""
        checks = [
            (self.vocab_size > 0, f"model.vocab_size must be positive, got {self.vocab_size}"),
            (self.block_size > 0, f"model.block_size must be positive, got {self.block_size}"),
            (self.n_layer > 0, f"model.n_layer must be positive, got {self.n_layer}"),
            (self.encoder_layers > 0, f"model.n_encoder_layer must be positive, got {self.n_encoder_layer}"),
            (self.n_head > 0, f"model.n_head must be positive, got {self.n_head}"),
            (self.n_embd % max(self.n_head, 1) == 0,
             f"model.n_head={self.n_head} does not divide model.n_embd={self.n_embd}"),
            (self.kv_heads > 0 and self.n_head % self.kv_heads == 0,
             f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head}"),
            (self.pos != "rope" or self.head_dim % 2 == 0,
             f"RoPE needs an even head dim, got n_embd/n_head={self.n_embd}/{self.n_head}"),
            (self.hidden_dim > 0, f"model.ffn_hidden must be positive, got {self.ffn_hidden}"),
        ]
        for d in ("embd_dropout", "attn_dropout", "resid_dropout"):
            v = getattr(self, d)
            checks.append((0.0 <= v < 1.0, f"model.{d} must be in [0, 1), got {v}"))
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
