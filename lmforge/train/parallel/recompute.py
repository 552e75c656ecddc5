"""Activation checkpointing: keep a block's input, recompute its insides during backward.

A block's saved activations grow with batch x sequence x width (and attention's with T^2 without
a fused kernel); checkpointing trades them for one more forward of the block (~33% more compute
when every block is checkpointed; Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"). "selective" here checkpoints every k-th block, a dial between the two ends.

The block's forward is replaced on the instance, so parameter names stay the model's (no wrapper
module in the state dict) and FSDP/TP hooks on the block still run around it. torch's checkpoint
restores the RNG state for the recompute, so dropout masks are the same both times.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from torch import nn
from torch.utils.checkpoint import checkpoint


def checkpoint_blocks(blocks: Iterable[tuple[int, nn.Module]], mode: str, every: int = 2) -> int:
    """Checkpoint the (layer index, block) pairs `mode` selects: "none", "full", or "selective"
    (layers 0, every, 2*every, ...). Returns how many blocks are checkpointed."""
    if mode == "none":
        return 0
    count = 0
    for i, block in blocks:
        if mode == "full" or (mode == "selective" and i % every == 0):
            block.forward = functools.partial(_checkpointed, block.forward)
            count += 1
    return count


def _checkpointed(forward, *args, **kwargs):
    # Non-reentrant checkpointing (the recommended kind): works with kwargs, with inputs that do
    # not require grad, and composes with FSDP2 and DTensor.
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
