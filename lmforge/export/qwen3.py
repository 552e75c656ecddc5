"""lmforge <-> Qwen3 (`Qwen3ForCausalLM`): a Llama with QK-norm.

Qwen3 (Qwen Team 2025) is Llama's block (llama.py) plus an RMSNorm over each head's query and key,
one gain vector of head_dim values shared by the heads, applied before RoPE: exactly lmforge's
model.qk_norm with norm=rmsnorm. The extra tensors map one to one:

    blocks.{i}.attn.q_norm, k_norm      model.layers.{i}.self_attn.q_norm, k_norm

Qwen3's MLP has no biases (attention_bias covers q/k/v/o only), so a model with bias=true and
QK-norm is refused rather than exported without its MLP biases.
"""

from __future__ import annotations

import dataclasses

import torch

from lmforge.export import llama
from lmforge.export.mapping import ExportError, Reader
from lmforge.model.config import ModelConfig

NAME = "qwen3"
HF_CLASS = "Qwen3ForCausalLM"
MODEL_TYPES = ("qwen3",)
NORMS = {"attn.q_norm.weight": "self_attn.q_norm.weight", "attn.k_norm.weight": "self_attn.k_norm.weight"}


def check(cfg: ModelConfig) -> None:
    llama.check(cfg)
    if cfg.bias:
        raise ExportError(
            "model.bias=True with model.qk_norm: Qwen3, the transformers architecture with per-head "
            "query/key norms, has no MLP biases (use model.bias=false)"
        )


def hf_config(cfg: ModelConfig, special: dict) -> dict:
    out = {
        **llama.hf_config(cfg, special),
        "architectures": [HF_CLASS],
        "model_type": "qwen3",
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": cfg.n_layer,
    }
    for key in ("mlp_bias", "pretraining_tp"):  # Llama's fields Qwen3 does not have
        out.pop(key)
    return out


def to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = llama.to_hf(sd, cfg)
    for i in range(cfg.n_layer):
        for ours, theirs in NORMS.items():
            out[f"model.layers.{i}.{theirs}"] = sd[f"blocks.{i}.{ours}"]
    return out


def model_config(hf: dict, names: set[str], allow_approximate: bool = False) -> tuple[ModelConfig, list[str]]:
    """Llama's reading of the config.json, with QK-norm on."""
    cfg, warnings = llama.model_config(hf, names, allow_approximate)
    return dataclasses.replace(cfg, qk_norm=True), warnings


def from_hf(r: Reader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    sd = llama.from_hf(r, cfg)
    for i in range(cfg.n_layer):
        for ours, theirs in NORMS.items():
            sd[f"blocks.{i}.{ours}"] = r.take(f"model.layers.{i}.{theirs}", (cfg.head_dim,))
    return sd
