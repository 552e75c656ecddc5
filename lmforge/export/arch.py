"""Which transformers architecture an lmforge model is (the shared tensor bookkeeping: mapping.py).

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

from lmforge.errors import LmforgeError
from lmforge.export import gpt2, llama
from lmforge.export.mapping import ExportError
from lmforge.model.config import ModelConfig

__all__ = ["ExportError", "architecture", "by_model_type"]


def architecture(cfg: ModelConfig) -> ModuleType:
    """The module (llama or gpt2) that writes `cfg` as a transformers model; ExportError otherwise."""
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
    for arch in (llama, gpt2):
        if model_type in arch.MODEL_TYPES:
            return arch
    known = ", ".join(t for a in (llama, gpt2) for t in a.MODEL_TYPES)
    raise LmforgeError(f"config.json: model_type={model_type!r} is not supported (supported: {known})")
