"""The transformer family: decoder-only, encoder-only and encoder-decoder, one file to read
(transformer.py), its config (config.py) and the decoding cache (kv_cache.py)."""

from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.transformer import Transformer

__all__ = ["KVCache", "ModelConfig", "Transformer"]
