"""lmforge <-> Llama (`LlamaForCausalLM`; also reads Mistral- and Qwen2-style configs).

Llama (Touvron et al. 2023) is a pre-norm decoder with RMSNorm, a SwiGLU MLP, rotary positions and
optionally grouped-query attention; lmforge with pos=rope, norm=rmsnorm, activation=swiglu is the
same function with the same parameter names, one to one:

    tok_emb                 model.embed_tokens
    blocks.{i}.attn_norm    model.layers.{i}.input_layernorm
    blocks.{i}.attn.{q,k,v,o}_proj      model.layers.{i}.self_attn.{q,k,v,o}_proj
    blocks.{i}.mlp_norm     model.layers.{i}.post_attention_layernorm
    blocks.{i}.mlp.{gate,up,down}_proj  model.layers.{i}.mlp.{gate,up,down}_proj
    norm_f                  model.norm
    lm_head                 lm_head (absent when tie_word_embeddings)

Both rotate the two halves of each head (GPT-NeoX layout), so q/k need no permutation. GeGLU maps
to Llama with hidden_act="gelu" (exact erf GELU in both). lmforge's `bias` puts biases on every
linear layer: attention_bias and mlp_bias together; on import a model with biases on only some
layers (Qwen2: q/k/v only) gets zero biases on the others, which computes the same function.
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError
from lmforge.export.mapping import ExportError, Reader, need
from lmforge.model.config import ModelConfig

NAME = "llama"
HF_CLASS = "LlamaForCausalLM"
MODEL_TYPES = ("llama", "mistral", "qwen2")
ACT_TO_HF = {"swiglu": "silu", "geglu": "gelu"}
ACT_FROM_HF = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu"}

# lmforge name (per block) -> Llama name (per layer)
BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"attn.{p}_proj.{w}": f"self_attn.{p}_proj.{w}" for p in "qkvo" for w in ("weight", "bias")},
    **{f"mlp.{p}_proj.{w}": f"mlp.{p}_proj.{w}" for p in ("gate", "up", "down") for w in ("weight", "bias")},
}


def check(cfg: ModelConfig) -> None:
    if cfg.norm != "rmsnorm":
        raise ExportError(
            f"model.norm={cfg.norm!r} with pos=rope: Llama uses RMSNorm (model.norm=rmsnorm); "
            "no supported transformers architecture pairs rotary positions with LayerNorm"
        )
    if cfg.activation not in ACT_TO_HF:
        raise ExportError(
            f"model.activation={cfg.activation!r} with pos=rope: Llama's MLP is gated "
            "(model.activation=swiglu or geglu)"
        )


def hf_config(cfg: ModelConfig, special: dict) -> dict:
    return {
        "architectures": [HF_CLASS],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": ACT_TO_HF[cfg.activation],
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.norm_eps,
        # transformers < 5 reads rope_theta, >= 5 rope_parameters; both are written.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "attention_dropout": cfg.attn_dropout,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        **special,
    }


def to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["norm_f.weight"]}
    for i in range(cfg.n_layer):
        for ours, theirs in BLOCK.items():
            if f"blocks.{i}.{ours}" in sd:
                out[f"model.layers.{i}.{theirs}"] = sd[f"blocks.{i}.{ours}"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def _rope_theta(hf: dict) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise LmforgeError(
            f"config.json: rope scaling {kind!r} is not supported (lmforge's RoPE is the "
            "plain rotary embedding, rope_type 'default')"
        )
    if float(params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise LmforgeError(
            "config.json: partial_rotary_factor != 1 (rotary on part of each head) is not supported"
        )
    return float(hf.get("rope_theta") or params.get("rope_theta") or 10000.0)


def model_config(hf: dict, names: set[str], allow_approximate: bool = False) -> tuple[ModelConfig, list[str]]:
    """The lmforge ModelConfig of a Llama-family config.json, and warnings (none for Llama)."""
    mt = hf.get("model_type")
    C, H = int(need(hf, "hidden_size")), int(need(hf, "num_attention_heads"))
    H_kv = int(hf.get("num_key_value_heads") or H)
    block = int(need(hf, "max_position_embeddings"))
    window = hf.get("sliding_window")
    if window is not None and (mt == "mistral" or hf.get("use_sliding_window")) and int(window) < block:
        raise LmforgeError(
            f"config.json: sliding_window={window} (sliding-window attention) is not modelled "
            "by lmforge, whose attention sees the whole context"
        )
    if hf.get("head_dim") not in (None, C // H):
        raise LmforgeError(
            f"config.json: head_dim={hf['head_dim']} differs from hidden_size/num_attention_heads="
            f"{C // H}; lmforge derives the head size from those two"
        )
    act = hf.get("hidden_act", "silu")
    if act not in ACT_FROM_HF:
        raise LmforgeError(
            f"config.json: hidden_act={act!r} is not supported (lmforge's gated MLPs are "
            "SwiGLU = silu and GeGLU = exact gelu)"
        )
    bias = any(n.endswith(("_proj.bias",)) for n in names)
    tie = bool(hf.get("tie_word_embeddings", False))  # transformers' default for these model types
    cfg = ModelConfig(
        kind="decoder",
        vocab_size=int(need(hf, "vocab_size")),
        block_size=block,
        n_layer=int(need(hf, "num_hidden_layers")),
        n_head=H,
        n_kv_head=H_kv if H_kv != H else None,
        n_embd=C,
        ffn_hidden=int(need(hf, "intermediate_size")),
        activation=ACT_FROM_HF[act],
        norm="rmsnorm",
        norm_position="pre",
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        pos="rope",
        rope_theta=_rope_theta(hf),
        attn_dropout=float(hf.get("attention_dropout", 0.0) or 0.0),
        bias=bias,
        tie_embeddings=tie,
        init_std=float(hf.get("initializer_range", 0.02)),
        scaled_residual_init=False,
    )
    return cfg, []


def from_hf(r: Reader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    C, V, F, kv = cfg.n_embd, cfg.vocab_size, cfg.hidden_dim, cfg.kv_heads * cfg.head_dim
    shapes = {
        "q": (C, C),
        "k": (kv, C),
        "v": (kv, C),
        "o": (C, C),
        "gate": (F, C),
        "up": (F, C),
        "down": (C, F),
    }
    emb = r.take("model.embed_tokens.weight", (V, C))
    sd = {"tok_emb.weight": emb, "norm_f.weight": r.take("model.norm.weight", (C,))}
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        sd[f"blocks.{i}.attn_norm.weight"] = r.take(p + "input_layernorm.weight", (C,))
        sd[f"blocks.{i}.mlp_norm.weight"] = r.take(p + "post_attention_layernorm.weight", (C,))
        for proj, shape in shapes.items():
            where = "self_attn" if proj in "qkvo" else "mlp"
            ours = f"blocks.{i}.{'attn' if where == 'self_attn' else 'mlp'}.{proj}_proj"
            sd[ours + ".weight"] = r.take(f"{p}{where}.{proj}_proj.weight", shape)
            if cfg.bias:
                sd[ours + ".bias"] = r.take_or_zeros(f"{p}{where}.{proj}_proj.bias", shape[:1], emb)
    if cfg.tie_embeddings:
        r.used.add("lm_head.weight")  # transformers ties it to the embedding whatever the file holds
        sd["lm_head.weight"] = emb
    else:
        sd["lm_head.weight"] = r.take("lm_head.weight", (V, C))
    return sd
