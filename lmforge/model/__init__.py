"""The transformer family: decoder-only, encoder-only and encoder-decoder. transformer.py is the
model (read it top to bottom), attention.py its attention (masks, SDPA, QK-norm), layers.py the
norms, dropout and residual placements, config.py its shape and analytic size/FLOPs, kv_cache.py
the decoding cache, positions.py the position schemes, decode.py the one-token decoding step (the
model's own cached forward, optionally compiled)."""

import importlib

from lmforge.model.config import ModelConfig

# torch is imported on first use of the modules, so loading a config (and `lmforge --help`) stays fast.
_LAZY = {"KVCache": "kv_cache", "Transformer": "transformer"}
__all__ = ["KVCache", "ModelConfig", "Transformer"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"lmforge.model.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lmforge.model' has no attribute {name!r}")
