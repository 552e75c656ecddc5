"""Which transformers architecture an lmforge model is, and the tensor bookkeeping both directions share.

An lmforge decoder maps onto one architecture when every option it uses has a counterpart there:

    Llama  (LlamaForCausalLM): pos=rope, norm=rmsnorm, activation=swiglu (or geglu), any n_kv_head,
                               biases on all linear layers or none, tied or untied output layer.
    GPT-2  (GPT2LMHeadModel):  pos=learned, norm=layernorm, activation=gelu|relu|silu (not gated),
                               n_kv_head = n_head; biases always present (zeros for bias=false).

Each architecture lives in its own module (llama.py, gpt2.py) with the same five functions:
check(cfg), hf_config(cfg, special), to_hf(state_dict, cfg), model_config(hf_config, names,
allow_approximate) and from_hf(reader, cfg). A model that fits neither gets an error that names
the option in the way.
"""

from __future__ import annotations

from types import ModuleType

import torch

from lmforge.errors import LmforgeError
from lmforge.model.config import ModelConfig


class ExportError(LmforgeError):
    """The model uses an option no supported Hugging Face architecture expresses."""


def architecture(cfg: ModelConfig) -> ModuleType:
    """The module (llama or gpt2) that writes `cfg` as a transformers model; ExportError otherwise."""
    from lmforge.export import gpt2, llama

    if cfg.kind != "decoder":
        raise ExportError(f"model.kind={cfg.kind!r}: only decoder-only models export to a transformers "
                          "causal LM (Llama, GPT-2); encoder and encoder-decoder models have no mapping here")
    if cfg.norm_position != "pre":
        raise ExportError(f"model.norm_position={cfg.norm_position!r} (post-norm): Llama and GPT-2 are "
                          "pre-norm; no supported transformers architecture normalises after the residual add")
    if cfg.pos == "rope":
        arch = llama
    elif cfg.pos == "learned":
        arch = gpt2
    else:
        what = {"alibi": "ALiBi attention biases", "sinusoidal": "fixed sinusoidal positions"}[cfg.pos]
        raise ExportError(f"model.pos={cfg.pos!r} ({what}): no supported transformers architecture has it "
                          "(Llama uses pos=rope, GPT-2 pos=learned)")
    arch.check(cfg)
    return arch


def by_model_type(model_type: str | None) -> ModuleType:
    """The module that reads a Hugging Face config.json of this `model_type`."""
    from lmforge.export import gpt2, llama

    for arch in (llama, gpt2):
        if model_type in arch.MODEL_TYPES:
            return arch
    known = ", ".join(t for a in (llama, gpt2) for t in a.MODEL_TYPES)
    raise LmforgeError(f"config.json: model_type={model_type!r} is not supported (supported: {known})")


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
            raise LmforgeError(f"{self.source}: tensor {name!r} has shape {tuple(t.shape)}, but config.json "
                               f"implies {tuple(shape)}")
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
            raise LmforgeError(f"{self.source}: tensors lmforge has no place for: {', '.join(left[:3])}{more} "
                               "(the model uses an option lmforge does not model)")


def need(hf: dict, key: str) -> int | float:
    """A required config.json field; LmforgeError naming it when absent."""
    if hf.get(key) is None:
        raise LmforgeError(f"config.json: missing {key!r}")
    return hf[key]

