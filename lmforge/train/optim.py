"""The optimizer: AdamW (or Adam) with weight decay on weight matrices only.

Decoupled weight decay (Loshchilov & Hutter 2019) is applied to the 2-D matmul weights; norms'
gains and biases are not decayed (decaying them only pulls activations toward zero; GPT-2/3,
nanoGPT and Llama all exempt them). The model says which tensors decay through
`model.param_groups(weight_decay)` when it has that method (it also knows that e.g. a learned
position table is not a matmul weight); any other module falls back to "2-D or more decays".
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: {"params": decayed, "weight_decay": wd} and {"params": rest, "weight_decay": 0}.

    Only parameters with requires_grad are included; tied parameters appear once.
    """
    if hasattr(model, "param_groups"):
        groups = model.param_groups(weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    return [g for g in groups if g["params"]]


def no_decay_names(model: nn.Module, weight_decay: float) -> set[str]:
    """Names of the parameters `param_groups` exempts from weight decay. A part of the model (a
    pipeline stage, a sharded copy) keeps the whole model's names, so this decides for it too."""
    exempt = {id(p) for g in param_groups(model, weight_decay) if g["weight_decay"] == 0.0 for p in g["params"]}
    return {name for name, p in model.named_parameters() if id(p) in exempt}


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                    no_decay: set[str] | None = None) -> torch.optim.Optimizer:
    """AdamW/Adam over the model's parameter groups; fused kernels on CUDA (one launch per step).
    With `no_decay` (names, from no_decay_names of the whole model), the groups follow it instead."""
    if no_decay is None:
        groups = param_groups(model, cfg.weight_decay)
    else:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if n not in no_decay], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    if device.type == "cuda":
        kwargs["fused"] = True
    if cfg.optimizer == "adam":  # weight decay here is an L2 term in the gradient (torch's Adam)
        return torch.optim.Adam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
