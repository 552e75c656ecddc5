"""The global gradient norm (and clipping by it) when the gradients are spread over ranks.

Each parameter's gradient is a DTensor sharded over dp (FSDP) and/or tp, or a plain tensor that
is the same on every rank that holds it (DDP after its all-reduce, a norm's gain under TP). The
squared norms of the sharded ones are summed over their meshes (DTensor does that in
full_tensor()); plain ones count once. Pipeline stages hold disjoint parameters, so the squares
are finally summed over the pp group. Every rank ends with the same norm, hence the same clip.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of these tensors together (a DTensor result if they are DTensors)."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def global_grad_norm(params: list[torch.nn.Parameter], pp_group=None) -> torch.Tensor:
    """L2 norm of all gradients of the whole model (fp32 scalar, the same on every rank)."""
    groups: dict[object, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        key = (g.device_mesh, tuple(g.placements)) if isinstance(g, DTensor) else "plain"
        groups.setdefault(key, []).append(g)
    device = next((p.device for p in params), torch.device("cpu"))
    sq = torch.zeros((), dtype=torch.float32, device=device)
    # Same parameters, same order on every rank of a stage: the collectives inside line up.
    for grads in groups.values():
        norm = total_norm(grads)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        sq = sq + norm.float() ** 2
    if pp_group is not None:
        dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=pp_group)
    return sq.sqrt()


def clip_grads_(params: list[torch.nn.Parameter], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale every gradient by max_norm / total_norm when that is below 1 (as clip_grad_norm_)."""
    coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            g = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
            g.mul_(coef.to(g.device, g.dtype))
