"""LoRA: low-rank adapters on the model's linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation
of Large Language Models").

A frozen linear layer W gets a trainable update: y = W x + (alpha / r) * B A dropout(x), with
A (r, in) initialised like a linear layer's weight (Kaiming-uniform) and B (out, r) zero, so
training starts exactly at the base model (§4.1). Only A and B train, so the optimizer keeps
state for ~0.1-1% of the parameters and no gradient is stored for the frozen weights.
`merge_lora` folds B A into W, leaving a plain model with the base's parameter names, which every
other command (generate, chat, serve, export) loads as usual.

Written here rather than taken from `peft`: peft wraps any nn.Linear, but it requires
`transformers` and `accelerate` (importing it takes ~16 s on the 2-core CI machine, against ~5 s
for torch alone); our layers are plain nn.Linear with stable names, and the adapter is ~100 lines.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.tune.config import LoraConfig


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable rank-r update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        self.scaling = alpha / rank
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True  # off: the base layer alone (DPO's reference, tune/dpo_source.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        update = self.drop(x) @ self.lora_A.T @ self.lora_B.T  # (..., in) -> (..., r) -> (..., out)
        return self.base(x) + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in), like base.weight

    def merged(self) -> nn.Linear:
        """The base layer with B A added to its weight (in place), trainable again."""
        with torch.no_grad():
            self.base.weight.copy_(self.base.weight + self.delta_weight().to(self.base.weight.dtype))
        self.base.weight.requires_grad_(True)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(True)
        return self.base


def _targets(model: nn.Module, names: list[str]) -> list[str]:
    found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in names]
    missing = [t for t in names if not any(n.split(".")[-1] == t for n in found)]
    if missing:
        raise LmforgeError(
            f"lora.targets: this model has no linear layer named {missing[0]!r} "
            f"(a gated MLP has gate_proj; a plain one only up_proj and down_proj)"
        )
    if "lm_head" in names and getattr(getattr(model, "cfg", None), "tie_embeddings", False):
        raise LmforgeError(
            "lora.targets: lm_head shares its weight with tok_emb (model.tie_embeddings); "
            "merging an adapter into it would change the input embeddings too"
        )
    return found


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Freeze every parameter, then wrap each target linear layer in a LoRALinear (in place).
    Returns the wrapped layers' names."""
    cfg.validate()
    names = _targets(model, cfg.targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _set(model, name, LoRALinear(model.get_submodule(name), cfg.rank, cfg.alpha, cfg.dropout))
    return names


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and put the plain nn.Linear back; returns how many.
    Afterwards the model has exactly the base model's parameter names, all trainable again."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        _set(model, name, model.get_submodule(name).merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return len(names)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """Inside the block the model computes as its base: every adapter is switched off."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.enabled = False
    try:
        yield
    finally:
        for m in layers:
            m.enabled = True


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (…lora_A / …lora_B), for saving an adapter on its own."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if ".lora_" in n}


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied tensors once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
