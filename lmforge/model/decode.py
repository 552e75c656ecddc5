"""One-token decoding steps for decoder models: the model's own cached forward, optionally compiled.

After a prefill has filled a KV cache, generation feeds one token per row and needs the logits
after it. A `DecodeStep` is exactly `model(tokens[:, None], kv_cache=cache, last_only=True)`:
no second copy of the attention, MLP or masks to keep in step with transformer.py, no private
torch ops. With `compile=True` that call runs through `torch.compile` (public API), and inductor
fuses the many small ops of a step (norms, RoPE, activations, residual adds) between the matmuls,
which at CPU sizes cost as much as the arithmetic (bench/RESULTS.md, generation speed part 3).
"""

from __future__ import annotations

import functools

import torch

from lmforge.errors import LmforgeError
from lmforge.model.kv_cache import KVCache
from lmforge.model.transformer import Transformer


def decode_step(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Feed tokens (B, 1) after what `cache` holds; next-token logits (B, V)."""
    return model(tokens, kv_cache=cache, last_only=True)[0][:, -1]


@functools.cache
def compiled_step():
    """decode_step through torch.compile, made once per process so every DecodeStep shares its graphs.
    The cache length changes every step: torch.compile's automatic dynamic shapes make it symbolic
    after the second length, so a generation compiles about twice and then reuses the graph (also
    for other prompt lengths; a new batch size or model compiles again)."""
    return torch.compile(decode_step)


class DecodeStep:
    """Next-token logits for a decoder model, one token per row, after a prefill has filled `cache`.

    `step(tokens)` takes (B,) ids at the cache's next slot and returns logits (B, V), advancing
    the cache. compile=True runs the step through torch.compile: seconds of compiling on the first
    calls, then fewer, fused kernels per token.
    """

    def __init__(self, model: Transformer, cache: KVCache, compile: bool = False) -> None:
        if not self.supports(model):
            raise LmforgeError(f"DecodeStep is for decoder models; this is a {model.cfg.kind}")
        self.model, self.cache = model, cache
        self.step = compiled_step() if compile else decode_step

    @staticmethod
    def wanted(model: Transformer, compile: bool = False) -> bool:
        """Whether generation should decode through a DecodeStep: when compiling is asked for (eager,
        the step is the model's plain cached forward, which generation calls directly)."""
        return compile and DecodeStep.supports(model)

    @staticmethod
    def supports(model: Transformer) -> bool:
        return model.cfg.kind == "decoder"

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step(self.model, tokens[:, None], self.cache)
