"""Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/): momentum SGD whose update
of a weight matrix is orthogonalised, for the 2-D weights inside the transformer blocks.

Each step: momentum buffer B <- mu B + (1 - mu) G (torch's lerp form); Nesterov update
U = (1 - mu) G + mu B; O ~ the orthogonal factor of U (U = P S Q^T -> roughly P Q^T) by five
quintic Newton-Schulz steps; W <- W (1 - lr wd) - lr' O, where lr' rescales lr by the matrix's
shape (`adjusted_lr`). Orthogonalising equalises the update's singular values, so rarely-used
directions of a matrix learn as fast as the dominant ones.

This is torch.optim.Muon (torch 2.13) with its own step: the constructor, hyperparameters, state
layout ("momentum_buffer") and learning-rate adjustment are torch's, so state dicts move between
the two, and with ns_dtype=bfloat16 the arithmetic is torch's too (tests/test_optim.py checks it).
The step differs in two ways that lmforge needs:

- Sharded parameters. Under FSDP2 or tensor parallelism a weight is a DTensor holding a shard,
  and orthogonalisation needs the whole matrix. The momentum buffer stays a shard (as Adam's
  moments do); the update is gathered per matrix (`full_tensor`), orthogonalised, and every rank
  keeps its own slice of the result. Every rank orthogonalises every matrix (redundant work, but
  no extra communication beyond the gather; fine for the sizes lmforge trains on CPU).
- The Newton-Schulz precision. torch's always iterates in bfloat16; here that is the choice on
  CUDA (as modded-nanoGPT), while CPUs iterate in float32: without bf16 matrix units bf16 is
  slower there, and float32 keeps one-process and sharded runs equal to ~1e-6.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Jordan's quintic coefficients: the polynomial a x + b x^3 + c x^5 maps every singular value in
# (0, 1] into roughly [0.7, 1.2] within five steps (its slope at zero, a, is made as large as
# possible; exact convergence to 1 is traded for fewer steps, which does not hurt training).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7
BATCH = 16  # matrices orthogonalised in one batched product (see Muon.step)


def orthogonalize(
    g: Tensor,
    dtype: torch.dtype,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
) -> Tensor:
    """Approximately P Q^T for g = P S Q^T, computed in `dtype`, for a matrix (m, n) or a stack of
    them (k, m, n), by the iteration X <- a X + (b A + c A^2) X with A = X X^T. X starts as
    g / ||g||_F, so its spectral norm is at most 1; tall matrices are transposed so that A is the
    smaller Gram matrix."""
    a, b, c = coefficients
    x = g.to(dtype)
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    if tall:
        x = x.mT
    return x[0] if single else x


def adjusted_lr(lr: float, how: str | None, shape: torch.Size) -> float:
    """The step size for an (A, B) matrix. "original" (Jordan): lr * sqrt(max(1, A / B)), so a
    matrix's update has about the same RMS whatever its aspect ratio; lr ~0.02 suits it.
    "match_rms_adamw" (Liu et al. 2025, "Muon is Scalable for LLM Training", §2.2): lr * 0.2 *
    sqrt(max(A, B)), which gives the update AdamW's typical RMS (0.2-0.4), so Muon can take
    AdamW's learning rate and weight decay. torch.optim.Muon's two options, same formulas."""
    rows, cols = shape[0], shape[1]
    if how in (None, "original"):
        return lr * math.sqrt(max(1.0, rows / cols))
    if how == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"unknown Muon learning-rate adjustment {how!r}")


def _whole(update: Tensor) -> Tensor:
    """The whole matrix of a (possibly sharded) update."""
    return update.full_tensor() if hasattr(update, "full_tensor") else update


def _like(ortho: Tensor, update: Tensor) -> Tensor:
    """`ortho` (whole) sharded as `update` is: each rank slices its own part, no communication
    (every rank computed the same whole matrix)."""
    if not hasattr(update, "full_tensor"):
        return ortho
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(ortho, update.device_mesh, update.placements, src_data_rank=None)


class Muon(torch.optim.Muon):
    """torch.optim.Muon whose step also handles sharded (DTensor) matrices and iterates
    Newton-Schulz in `ns_dtype` (see the module docstring)."""

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.float32, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, mu = float(group["lr"]), group["weight_decay"], group["momentum"]
            params, updates = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                params.append(p)
                updates.append(p.grad.lerp(buf, mu) if group["nesterov"] else buf)
            # Matrices of one shape are orthogonalised together, as one batched product: the
            # blocks repeat the same few shapes, and batched small matmuls ran ~2.7x faster than
            # one call per matrix on this project's 2-core CPU (the tiny recipe's 28 matrices).
            # At most BATCH whole matrices at a time: a sharded run holds no more than that
            # gathered at once.
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, p in enumerate(params):
                by_shape.setdefault(tuple(p.shape), []).append(i)
            for same in by_shape.values():
                for first in range(0, len(same), BATCH):
                    idx = same[first : first + BATCH]
                    stacked = orthogonalize(
                        torch.stack([_whole(updates[i]) for i in idx]),
                        self.ns_dtype,
                        group["ns_steps"],
                        group["ns_coefficients"],
                        group["eps"],
                    )
                    for i, ortho in zip(idx, stacked):
                        p, step_size = params[i], adjusted_lr(lr, group["adjust_lr_fn"], params[i].shape)
                        p.mul_(1 - lr * wd)  # decoupled weight decay, at the unadjusted lr (as torch's)
                        p.add_(_like(ortho.to(p.dtype), updates[i]), alpha=-step_size)
        return loss
