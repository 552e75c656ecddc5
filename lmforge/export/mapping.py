"""The tensor bookkeeping export and import share, below the per-architecture modules.

arch.py picks an architecture (llama.py or gpt2.py); those modules and hf_import.py take the
error type, the checkpoint Reader and `need` from here, so no module imports the one that
imports it.
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError


class ExportError(LmforgeError):
    """The model uses an option no supported Hugging Face architecture expresses."""


class Reader:
    """The tensors of a Hugging Face checkpoint, taken by name with their shape checked; remembers
    which were used so leftovers (an option lmforge does not model) can be reported."""

    # Buffers some checkpoints store that carry no learned weights: old Llama files saved RoPE's
    # inv_freq, old GPT-2 files the causal mask ("attn.bias") and its fill value ("attn.masked_bias").
    IGNORED = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")

    def __init__(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        self.tensors = tensors
        self.source = source
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.tensors:
            raise LmforgeError(f"{self.source}: missing tensor {name!r}")
        t = self.tensors[name]
        if tuple(t.shape) != tuple(shape):
            raise LmforgeError(
                f"{self.source}: tensor {name!r} has shape {tuple(t.shape)}, but config.json "
                f"implies {tuple(shape)}"
            )
        self.used.add(name)
        return t

    def take_or_zeros(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A bias the architecture lacks on this layer (Qwen2's o_proj): zeros are the same function."""
        if name in self.tensors:
            return self.take(name, shape)
        return torch.zeros(shape, dtype=like.dtype)

    def check_all_used(self) -> None:
        left = sorted(n for n in self.tensors if n not in self.used and not n.endswith(self.IGNORED))
        if left:
            more = f" and {len(left) - 3} more" if len(left) > 3 else ""
            raise LmforgeError(
                f"{self.source}: tensors lmforge has no place for: {', '.join(left[:3])}{more} "
                "(the model uses an option lmforge does not model)"
            )


def need(hf: dict, key: str) -> int | float:
    """A required config.json field; LmforgeError naming it when absent."""
    if hf.get(key) is None:
        raise LmforgeError(f"config.json: missing {key!r}")
    return hf[key]
