"""The transformer family: decoder-only, encoder-only and encoder-decoder. transformer.py is the
model (read it top to bottom), config.py its shape and analytic size/FLOPs, kv_cache.py the
decoding cache, objectives.py the inputs/targets each kind trains on."""

from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.transformer import Transformer

__all__ = ["KVCache", "ModelConfig", "Transformer"]
