"""lmforge <-> GPT-2 (`GPT2LMHeadModel`).

GPT-2 (Radford et al. 2019) is a pre-norm decoder with LayerNorm, learned absolute positions and a
plain (ungated) MLP; lmforge with pos=learned, norm=layernorm and activation gelu/relu/silu/relu2 is the
same function. The names differ and GPT-2's projections are `Conv1D` layers, whose weight is the
transpose of a Linear's ((in, out) instead of (out, in)), with q, k and v fused into one `c_attn`:

    tok_emb, pos_emb                    transformer.wte, transformer.wpe
    blocks.{i}.attn_norm, mlp_norm      transformer.h.{i}.ln_1, ln_2
    blocks.{i}.attn.{q,k,v}_proj        transformer.h.{i}.attn.c_attn   = [Wq; Wk; Wv]^T
    blocks.{i}.attn.o_proj              transformer.h.{i}.attn.c_proj   = Wo^T
    blocks.{i}.mlp.up_proj, down_proj   transformer.h.{i}.mlp.c_fc, c_proj (transposed)
    norm_f                              transformer.ln_f
    lm_head                             lm_head (absent when tied)

GPT-2 always has biases: an lmforge model with bias=false exports zeros (the same function).
GPT-2's own checkpoints use activation "gelu_new", the tanh approximation of GELU; lmforge's gelu
is the exact erf form, so those import only with allow_approximate (activations differ by up to
5e-4 per unit).
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError
from lmforge.export.mapping import ExportError, Reader, need
from lmforge.model.config import ModelConfig

NAME = "gpt2"
HF_CLASS = "GPT2LMHeadModel"
MODEL_TYPES = ("gpt2",)
ACT_TO_HF = {"gelu": "gelu", "relu": "relu", "silu": "silu", "relu2": "relu2"}  # relu2: ReLUSquaredActivation
ACT_FROM_HF = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "relu2": "relu2"}
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def check(cfg: ModelConfig) -> None:
    if cfg.norm != "layernorm":
        raise ExportError(
            f"model.norm={cfg.norm!r} with pos=learned: GPT-2 uses LayerNorm (model.norm=layernorm); "
            "no supported transformers architecture pairs learned positions with RMSNorm"
        )
    if cfg.activation not in ACT_TO_HF:
        raise ExportError(
            f"model.activation={cfg.activation!r} with pos=learned: GPT-2's MLP is not gated "
            "(model.activation=gelu, relu, silu or relu2; gated MLPs export as Llama, with pos=rope)"
        )
    if cfg.kv_heads != cfg.n_head:
        raise ExportError(
            f"model.n_kv_head={cfg.n_kv_head} (grouped-query attention) with pos=learned: GPT-2 has "
            "one key/value head per query head; GQA exports as Llama (pos=rope)"
        )


def hf_config(cfg: ModelConfig, special: dict) -> dict:
    return {
        "architectures": [HF_CLASS],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.hidden_dim,
        "activation_function": ACT_TO_HF[cfg.activation],
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.resid_dropout,
        "embd_pdrop": cfg.embd_dropout,
        "attn_pdrop": cfg.attn_dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "use_cache": True,
        **special,
    }


def to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    def bias(name: str, n: int) -> torch.Tensor:
        return sd[name] if name in sd else torch.zeros(n, dtype=sd["tok_emb.weight"].dtype)

    C, F = cfg.n_embd, cfg.hidden_dim
    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"]}
    for i in range(cfg.n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[h + theirs + ".weight"] = sd[b + ours + ".weight"]
            out[h + theirs + ".bias"] = bias(b + ours + ".bias", C)
        qkv = [b + f"attn.{p}_proj" for p in "qkv"]
        out[h + "attn.c_attn.weight"] = torch.cat([sd[n + ".weight"] for n in qkv], dim=0).T  # (C, 3C)
        out[h + "attn.c_attn.bias"] = torch.cat([bias(n + ".bias", C) for n in qkv])
        for ours, theirs, n in (
            ("attn.o_proj", "attn.c_proj", C),
            ("mlp.up_proj", "mlp.c_fc", F),
            ("mlp.down_proj", "mlp.c_proj", C),
        ):
            out[h + theirs + ".weight"] = sd[b + ours + ".weight"].T  # Linear (out, in) -> Conv1D (in, out)
            out[h + theirs + ".bias"] = bias(b + ours + ".bias", n)
    out["transformer.ln_f.weight"] = sd["norm_f.weight"]
    out["transformer.ln_f.bias"] = bias("norm_f.bias", C)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def model_config(hf: dict, names: set[str], allow_approximate: bool = False) -> tuple[ModelConfig, list[str]]:
    """The lmforge ModelConfig of a GPT-2 config.json, and warnings (an approximated activation)."""
    for key, ok in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if bool(hf.get(key, ok)) != ok:
            raise LmforgeError(
                f"config.json: {key}={hf[key]} is not supported (lmforge's attention is "
                "standard scaled dot-product self-attention)"
            )
    act, warnings = hf.get("activation_function", "gelu_new"), []
    if act in TANH_GELU:
        if not allow_approximate:
            raise LmforgeError(
                f"config.json: activation_function={act!r} is the tanh approximation of GELU; "
                "lmforge's gelu is the exact erf form, so logits would differ slightly (the "
                "activation by up to 5e-4); pass --allow-approximate to import it as gelu anyway"
            )
        warnings.append(
            f"activation_function={act!r} (tanh-approximate GELU) imported as the exact GELU: "
            "logits differ slightly from the original"
        )
        act = "gelu"
    if act not in ACT_FROM_HF:
        raise LmforgeError(
            f"config.json: activation_function={act!r} is not supported (gelu, relu, silu, relu2)"
        )
    C = int(need(hf, "n_embd"))
    cfg = ModelConfig(
        kind="decoder",
        vocab_size=int(need(hf, "vocab_size")),
        block_size=int(need(hf, "n_positions")),
        n_layer=int(need(hf, "n_layer")),
        n_head=int(need(hf, "n_head")),
        n_embd=C,
        ffn_hidden=int(hf.get("n_inner") or 4 * C),
        activation=ACT_FROM_HF[act],
        norm="layernorm",
        norm_position="pre",
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        pos="learned",
        embd_dropout=float(hf.get("embd_pdrop", 0.0)),
        attn_dropout=float(hf.get("attn_pdrop", 0.0)),
        resid_dropout=float(hf.get("resid_pdrop", 0.0)),
        bias=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )
    return cfg, warnings


def from_hf(r: Reader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    # OpenAI's GPT-2 files name the body's tensors without the "transformer." prefix.
    t = "transformer." if r.has("transformer.wte.weight") else ""
    C, V, F = cfg.n_embd, cfg.vocab_size, cfg.hidden_dim
    emb = r.take(t + "wte.weight", (V, C))
    sd = {
        "tok_emb.weight": emb,
        "pos_emb.weight": r.take(t + "wpe.weight", (cfg.block_size, C)),
        "norm_f.weight": r.take(t + "ln_f.weight", (C,)),
        "norm_f.bias": r.take(t + "ln_f.bias", (C,)),
    }
    for i in range(cfg.n_layer):
        b, h = f"blocks.{i}.", f"{t}h.{i}."
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            sd[b + ours + ".weight"] = r.take(h + theirs + ".weight", (C,))
            sd[b + ours + ".bias"] = r.take(h + theirs + ".bias", (C,))
        w = r.take(h + "attn.c_attn.weight", (C, 3 * C)).T  # (3C, C): rows q, k, v
        bias = r.take(h + "attn.c_attn.bias", (3 * C,))
        for j, p in enumerate("qkv"):
            sd[b + f"attn.{p}_proj.weight"] = w[j * C : (j + 1) * C]
            sd[b + f"attn.{p}_proj.bias"] = bias[j * C : (j + 1) * C]
        for ours, theirs, n_in, n_out in (
            ("attn.o_proj", "attn.c_proj", C, C),
            ("mlp.up_proj", "mlp.c_fc", C, F),
            ("mlp.down_proj", "mlp.c_proj", F, C),
        ):
            sd[b + ours + ".weight"] = r.take(h + theirs + ".weight", (n_in, n_out)).T
            sd[b + ours + ".bias"] = r.take(h + theirs + ".bias", (n_out,))
    if cfg.tie_embeddings:
        r.used.add("lm_head.weight")
        sd["lm_head.weight"] = emb
    else:
        sd["lm_head.weight"] = r.take("lm_head.weight", (V, C))
    return sd
