"""Tensor parallelism: the model's weight matrices split over the `tp` mesh dimension with DTensor.

Megatron-LM's split (Shoeybi et al. 2019, §3): in attention, q/k/v projections are split by
columns (each rank gets whole heads, GQA's key/value heads included) and the output projection
by rows; in the MLP, gate/up by columns and down by rows. Each block then costs one all-reduce
in forward and one in backward per sublayer. The token table and the output layer are split
over the vocabulary (the output's logits are gathered for the loss).

With sequence parallelism (Korthikanti et al. 2022) the activations between sublayers are
split along the sequence instead of replicated: norms and dropout work on T/tp positions, and
the all-reduces become reduce-scatter + all-gather pairs of the same volume.

Nothing in the model changes: parallelize_module swaps the weights for DTensor shards and hooks
the inputs and outputs; the attention reads its per-rank head count from its projections' width.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)


def apply_tensor_parallel(
    model: nn.Module, blocks: list[nn.Module], tp_mesh, sequence_parallel: bool
) -> None:
    """Split `blocks` (and, when `model` holds them, tok_emb, norm_f and lm_head) over tp_mesh.

    `model` is a Transformer or one pipeline stage of it; parameter names do not change."""
    sp = sequence_parallel
    between = Shard(1) if sp else Replicate()  # layout of the residual stream between sublayers
    for block in blocks:
        plan = {}
        for name in ("attn", "cross_attn"):
            if hasattr(block, name):
                plan.update(
                    {
                        f"{name}.q_proj": ColwiseParallel(),
                        f"{name}.k_proj": ColwiseParallel(),
                        f"{name}.v_proj": ColwiseParallel(),
                        f"{name}.o_proj": RowwiseParallel(output_layouts=between),
                    }
                )
                if getattr(block, name).qk_norm:
                    # The per-head q/k norms see only this rank's heads (dim 1 of (B, H, T, D)): their
                    # gains are replicated and the gradient, partial on each rank, is summed over tp.
                    plan.update(
                        {
                            f"{name}.{norm}": SequenceParallel(sequence_dim=1, use_local_output=True)
                            for norm in ("q_norm", "k_norm")
                        }
                    )
        for proj in ("gate_proj", "up_proj"):
            if hasattr(block.mlp, proj):
                plan[f"mlp.{proj}"] = ColwiseParallel()
        plan["mlp.down_proj"] = RowwiseParallel(output_layouts=between)
        if sp:
            plan.update(
                {
                    "attn_norm": SequenceParallel(use_local_output=True),
                    "mlp_norm": SequenceParallel(use_local_output=True),
                }
            )
        parallelize_module(block, tp_mesh, plan)
        if sp:  # sublayers see the whole sequence: gather it at their entry
            gather_first_input(block.attn, tp_mesh)
            gather_first_input(block.mlp, tp_mesh)

    plan = {}
    tied = _tied(model)
    if getattr(model, "tok_emb", None) is not None:
        plan["tok_emb"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    if getattr(model, "lm_head", None) is not None:
        plan["lm_head"] = ColwiseParallel(input_layouts=between, output_layouts=Replicate())
        if sp and not isinstance(model.norm_f, nn.Identity):
            plan["norm_f"] = SequenceParallel(use_local_output=True)
    parallelize_module(model, tp_mesh, plan)
    if tied:  # both were split the same way (vocab rows); make them one parameter again
        model.lm_head.weight = model.tok_emb.weight
    if sp and getattr(model, "tok_emb", None) is not None:
        # The embedding (with positions and dropout) is replicated; the first block takes its shard.
        first = blocks[0]
        first.register_forward_pre_hook(lambda m, args: (_shard_seq(args[0], tp_mesh),) + args[1:])


def _tied(model: nn.Module) -> bool:
    emb, head = getattr(model, "tok_emb", None), getattr(model, "lm_head", None)
    return emb is not None and head is not None and head.weight is emb.weight


def _shard_seq(x, mesh):
    """A replicated (B, T, C) tensor -> this rank's (B, T/tp, C) slice (no communication)."""
    return (
        DTensor.from_local(x, mesh, (Replicate(),), run_check=False)
        .redistribute(mesh, (Shard(1),))
        .to_local()
    )


def _gather_seq(x, mesh):
    """This rank's (B, T/tp, C) slice -> the whole (B, T, C) sequence (all-gather)."""
    if isinstance(x, DTensor):
        return x.redistribute(mesh, (Replicate(),)).to_local()
    return (
        DTensor.from_local(x, mesh, (Shard(1),), run_check=False)
        .redistribute(mesh, (Replicate(),))
        .to_local()
    )


def gather_first_input(module: nn.Module, mesh) -> None:
    """Give `module` the whole sequence in its first argument (the others pass through)."""
    module.register_forward_pre_hook(lambda m, args: (_gather_seq(args[0], mesh),) + args[1:])
