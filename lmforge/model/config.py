"""The model's shape and options: one dataclass, one comment per field."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Literal

from lmforge.errors import ConfigError

FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max: a larger soft-cap is infinite there


@dataclass(frozen=True)
class Activation:
    """What the model and the planners need to know of an MLP activation."""

    function: str  # the torch.nn.functional function applied to the (gate) projection
    gated: bool  # GLU variant: down(act(gate(x)) * up(x)), three matrices (Shazeer 2020)
    saved_per_hidden: int  # values autograd keeps per MLP hidden unit per token (plan/memory.py)
    # FLOPs: element-wise, so not in flops_per_token (matmuls only, as Kaplan et al. and PaLM count)


# One entry per `ModelConfig.activation` choice (a test checks they match). Saved values: ReLU's
# backward needs only its output (also down_proj's input); GELU/SiLU their input and output; ReLU^2
# relu(x), which both of its steps keep, and its square (down_proj's input); a GLU the gate and up
# outputs, the activated gate and the product. "relu2" is no torch.nn.functional name: the model
# resolves it (transformer.activation_function).
ACTIVATIONS = {
    "relu": Activation("relu", gated=False, saved_per_hidden=1),
    "gelu": Activation("gelu", gated=False, saved_per_hidden=2),
    "silu": Activation("silu", gated=False, saved_per_hidden=2),
    "relu2": Activation("relu2", gated=False, saved_per_hidden=2),
    "swiglu": Activation("silu", gated=True, saved_per_hidden=4),
    "geglu": Activation("gelu", gated=True, saved_per_hidden=4),
}


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
    activation: Literal["relu", "gelu", "silu", "relu2", "swiglu", "geglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_position: Literal["pre", "post"] = "pre"  # pre-norm (GPT-2+) or post-norm (original Transformer)
    norm_eps: float = 1e-5
    qk_norm: bool = False  # normalise each head's query and key (model.norm's kind) before RoPE/attention
    pos: Literal["learned", "sinusoidal", "rope", "alibi"] = "learned"
    rope_theta: float = 10000.0
    embd_dropout: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    bias: bool = True  # biases in linear layers and LayerNorm
    tie_embeddings: bool = True  # share the token embedding with the output projection
    logit_softcap: float | None = None  # output logits become cap * tanh(logits / cap); None = uncapped
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
    def act(self) -> Activation:
        return ACTIVATIONS[self.activation]

    @property
    def is_glu(self) -> bool:
        return self.act.gated

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

    @classmethod
    def choices(cls) -> dict[str, tuple[str, ...]]:
        """Each option field and its allowed values, read from the Literal annotations above."""
        hints = typing.get_type_hints(cls)
        return {
            f.name: typing.get_args(hints[f.name])
            for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal
        }

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible shape or unknown option. Checks run in
        order and each may assume the ones before it passed (n_head > 0 before n_embd % n_head)."""
        for name, allowed in self.choices().items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"model.{name}={value!r} is not one of {', '.join(allowed)}")
        for name in (
            "vocab_size",
            "block_size",
            "n_layer",
            "n_encoder_layer",
            "n_head",
            "n_kv_head",
            "n_embd",
            "ffn_hidden",
            "ffn_multiple_of",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        checks = [
            lambda: (
                self.n_embd % self.n_head == 0,
                f"model.n_head={self.n_head} does not divide model.n_embd={self.n_embd}",
            ),
            lambda: (
                self.n_head % self.kv_heads == 0,
                f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head}",
            ),
            lambda: (
                self.pos != "rope" or self.head_dim % 2 == 0,
                f"RoPE needs an even head dim, got n_embd/n_head={self.n_embd}/{self.n_head}",
            ),
            lambda: (
                self.pos != "sinusoidal" or self.n_embd % 2 == 0,
                f"sinusoidal positions need an even model.n_embd, got {self.n_embd}",
            ),
            lambda: (self.norm_eps > 0, f"model.norm_eps must be positive, got {self.norm_eps}"),
            lambda: (self.rope_theta > 0, f"model.rope_theta must be positive, got {self.rope_theta}"),
            lambda: (self.init_std > 0, f"model.init_std must be positive, got {self.init_std}"),
            lambda: (
                isinstance(self.qk_norm, bool),
                f"model.qk_norm must be true or false, got {self.qk_norm!r}",
            ),
            lambda: (
                self.logit_softcap is None
                or (
                    not isinstance(self.logit_softcap, bool)
                    and isinstance(self.logit_softcap, int | float)
                    and 0 < self.logit_softcap <= FLOAT32_MAX
                ),
                f"model.logit_softcap must be a positive finite number or null, got {self.logit_softcap!r}",
            ),
        ]
        for d in ("embd_dropout", "attn_dropout", "resid_dropout"):
            checks.append(
                lambda d=d: (
                    0.0 <= getattr(self, d) < 1.0,
                    f"model.{d} must be in [0, 1), got {getattr(self, d)}",
                )
            )
        for check in checks:
            ok, msg = check()
            if not ok:
                raise ConfigError(msg)

    # ---- size and cost (analytic; tests check them against the built model) ----

    def param_breakdown(self) -> dict[str, int]:
        """Parameter count of each part of the model `Transformer(self)` builds.

        tok_emb: token table (also the output layer when tied); pos_emb: learned position table
        (sinusoidal/RoPE/ALiBi have none); lm_head: the untied output layer (0 when tied);
        encoder: encoder blocks + final encoder norm (encoder-decoder only); blocks: the main stack
        (decoder blocks, with cross-attention for encoder-decoder); norm_f: final norm (pre-norm only:
        a post-norm block already ends in a norm, as in Vaswani et al. 2017).
        """
        C, V, b = self.n_embd, self.vocab_size, int(self.bias)
        kv_width = self.kv_heads * self.head_dim
        norm = C * (1 + b) if self.norm == "layernorm" else C  # RMSNorm has a gain, no bias
        attn = (C * C + b * C) + 2 * (C * kv_width + b * kv_width) + (C * C + b * C)  # q, k+v, o
        if self.qk_norm:  # a norm over the head dim for q and one for k
            attn += 2 * (self.head_dim * (1 + b) if self.norm == "layernorm" else self.head_dim)
        up = C * self.hidden_dim + b * self.hidden_dim
        mlp = (2 if self.is_glu else 1) * up + self.hidden_dim * C + b * C  # (gate,) up, down
        block = attn + mlp + 2 * norm
        final_norm = norm if self.norm_position == "pre" else 0
        parts = {
            "tok_emb": V * C,
            "pos_emb": self.block_size * C if self.pos == "learned" else 0,
            "lm_head": 0 if self.tie_embeddings else V * C,
            "encoder": 0,
            "blocks": self.n_layer * block,
            "norm_f": final_norm,
        }
        if self.kind == "encoder-decoder":
            parts["encoder"] = self.encoder_layers * block + final_norm
            parts["blocks"] = self.n_layer * (block + attn + norm)  # + cross-attention and its norm
        return parts

    def num_params(self) -> int:
        """Exactly sum(p.numel() for p in Transformer(self).parameters()) (tied weights once)."""
        return sum(self.param_breakdown().values())

    def num_matmul_params(self) -> int:
        """Parameters used in a matmul per token: all but the lookup tables (the learned position
        table, and the token table when untied; a tied token table counts, as the output layer).
        Norm gains and biases are included, as in nanoGPT's count (they are < 1% of it)."""
        parts = self.param_breakdown()
        lookup = parts["pos_emb"] + (0 if self.tie_embeddings else parts["tok_emb"])
        return self.num_params() - lookup

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context `seq_len`.

        6 * N_matmul (2 per multiply-add forward, 4 backward; Kaplan et al. 2020) plus attention's
        score and value matmuls, 12 * layers * n_embd * seq_len (PaLM, Chowdhery et al. 2022,
        appendix B; nanoGPT's estimate_mfu). The attention term counts the full T x T matrix, also
        for causal masks, as PaLM does. Encoder-decoder convention: FLOPs per *target* token,
        assuming the source is as long as the target (seq_len each), so each target token carries
        one source token through the encoder; attention layers = encoder self + decoder self +
        decoder cross = n_encoder_layer + 2 * n_layer.
        """
        layers = self.n_layer
        if self.kind == "encoder-decoder":
            layers = self.encoder_layers + 2 * self.n_layer
        return 6.0 * self.num_matmul_params() + 12.0 * layers * self.n_embd * seq_len
