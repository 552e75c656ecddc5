"""Small building blocks of the transformer: norms, dropout, and where a residual branch's norm sits.

- norm: LayerNorm (Ba et al. 2016) or RMSNorm (Zhang & Sennrich 2019), over the residual width or,
  for QK-norm, over one head's dimension;
- placement: after each residual add (post-norm, Vaswani et al. 2017) or before each sublayer
  (pre-norm, GPT-2; Xiong et al. 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmforge.model.config import ModelConfig


def pre_norm_residual(x: torch.Tensor, norm: nn.Module, sublayer: Callable) -> torch.Tensor:
    return x + sublayer(norm(x))  # GPT-2: the residual stream itself is never normalised


def post_norm_residual(x: torch.Tensor, norm: nn.Module, sublayer: Callable) -> torch.Tensor:
    return norm(x + sublayer(x))  # Vaswani et al. 2017: LayerNorm(x + Sublayer(x))


RESIDUALS = {"pre": pre_norm_residual, "post": post_norm_residual}


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The model's norm kind over the last `dim` values (default the residual width n_embd)."""
    dim = cfg.n_embd if dim is None else dim
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=cfg.norm_eps)  # gain only, no bias or mean-centring
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


def dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()  # p = 0 costs nothing, not even a copy
