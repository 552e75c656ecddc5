"""Attention probabilities per layer and head, read from the model's own attention modules.

Every attention module has an opt-in `record` list (lmforge/model/transformer.py): while it is set,
the module computes softmax(QK^T/sqrt(D) + mask) explicitly instead of through SDPA, uses those
probabilities for its output and appends them to the list. `recording(model)` switches it on for
one forward pass and off again, so every other path keeps the fused SDPA kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from lmforge.inspect.inputs import Reading, read
from lmforge.model.attention import Attention, CrossAttention


@dataclass
class AttentionMap:
    """One attention module's probabilities for one text."""

    name: str  # module name, e.g. blocks.0.attn, blocks.0.cross_attn, encoder_blocks.1.attn
    stack: str  # "decoder", "encoder" or "cross" (decoder queries over encoder keys)
    layer: int
    queries: list[str]  # labels of the query positions (rows)
    keys: list[str]  # labels of the key positions (columns)
    probs: np.ndarray  # (H, T, S) float32, each row sums to 1

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "stack": self.stack,
            "layer": self.layer,
            "queries": self.queries,
            "keys": self.keys,
            "probs": np.round(self.probs, 5).tolist(),
        }


@contextmanager
def recording(model: torch.nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """{module name: list of (B, H, T, S) probabilities, one per call} while the block runs."""
    modules = {name: m for name, m in model.named_modules() if isinstance(m, Attention)}
    records: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    try:
        for name, m in modules.items():
            m.record = records[name]
        yield records
    finally:
        for m in modules.values():
            m.record = None


def stack_of(name: str, module: torch.nn.Module, kind: str) -> str:
    if isinstance(module, CrossAttention):
        return "cross"
    if name.startswith("encoder_blocks") or kind == "encoder":
        return "encoder"
    return "decoder"


@torch.no_grad()
def attention_maps(model: torch.nn.Module, tokenizer, text: str | Reading) -> list[AttentionMap]:
    """Every attention module's probabilities on `text`, in execution order: an encoder-decoder's
    encoder layers first, then each decoder layer's self- and cross-attention."""
    reading = text if isinstance(text, Reading) else read(model, tokenizer, text)
    modules = dict(model.named_modules())
    with recording(model) as records:
        model(**reading.feed)
    maps = []
    for name, calls in records.items():
        if not calls:
            continue
        stack = stack_of(name, modules[name], reading.kind)
        queries = reading.source_labels if stack == "encoder" and reading.source_labels else reading.labels
        keys = reading.source_labels if stack in ("encoder", "cross") and reading.source_labels else queries
        maps.append(
            AttentionMap(name, stack, modules[name].layer, queries, keys, calls[-1][0].float().cpu().numpy())
        )
    order = {"encoder": 0, "decoder": 1, "cross": 1}
    return sorted(maps, key=lambda m: (order[m.stack], m.layer, m.stack == "cross"))
