"""Activation checkpointing: keep a block's input, recompute its insides during backward.

A block's saved activations grow with batch x sequence x width (and attention's with T^2 without
a fused kernel); checkpointing trades them for one more forward of the block (~33% more compute
when every block is checkpointed; Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"). "selective" here checkpoints every k-th block, a dial between the two ends.

The block runs its sublayers through torch.utils.checkpoint when its `recompute` flag is set
(Block.forward), so parameter names stay the model's (no wrapper module in the state dict) and
FSDP/TP hooks on the block still run around it. Non-reentrant checkpointing restores the RNG state
for the recompute, so dropout masks are the same both times.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def checkpoint_blocks(blocks: Iterable[tuple[int, nn.Module]], mode: str, every: int = 2) -> int:
    """Checkpoint the (layer index, block) pairs `mode` selects: "none", "full", or "selective"
    (layers 0, every, 2*every, ...). Returns how many blocks are checkpointed."""
    count = 0
    for i, block in blocks:
        block.recompute = mode == "full" or (mode == "selective" and i % every == 0)
        count += block.recompute
    return count
