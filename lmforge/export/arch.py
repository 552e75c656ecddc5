"""Which transformers architecture an lmforge model is (the shared tensor bookkeeping: mapping.py).

An lmforge decoder maps onto one architecture when every option it uses has a counterpart there:

    Llama  (LlamaForCausalLM): pos=rope, norm=rmsnorm, activation=swiglu (or geglu), any n_kv_head,
                               biases on all linear layers or none, tied or untied output layer.
    Qwen3  (Qwen3ForCausalLM): the same with qk_norm=true (per-head q/k RMSNorm) and bias=false.
    GPT-2  (GPT2LMHeadModel):  pos=learned, norm=layernorm, activation=gelu|relu|silu|relu2 (not gated),
                               n_kv_head = n_head; biases always present (zeros for bias=false).

Each architecture lives in its own module (llama.py, qwen3.py, gpt2.py) with the same five
functions: check(cfg), hf_config(cfg, special), to_hf(state_dict, cfg), model_config(hf_config,
names, allow_approximate) and from_hf(reader, cfg). A model that fits none gets an error that
names the option in the way. Logit soft-capping is refused: the transformers architectures with
final_logit_softcapping (Gemma 2, NanoChat) differ from lmforge's blocks in other ways.
"""

from __future__ import annotations

from types import ModuleType

from lmforge.errors import LmforgeError
from lmforge.export import gpt2, llama, qwen3
from lmforge.export.mapping import ExportError
from lmforge.model.config import ModelConfig

__all__ = ["ExportError", "architecture", "by_model_type"]


def architecture(cfg: ModelConfig) -> ModuleType:
    """The module (llama, qwen3 or gpt2) that writes `cfg` as a transformers model; ExportError otherwise."""
    if cfg.kind != "decoder":
        raise ExportError(
            f"model.kind={cfg.kind!r}: only decoder-only models export to a transformers "
            "causal LM (Llama, GPT-2); encoder and encoder-decoder models have no mapping here"
        )
    if cfg.logit_softcap is not None:
        raise ExportError(
            f"model.logit_softcap={cfg.logit_softcap}: Llama, Qwen3 and GPT-2 do not cap logits, and the "
            "architectures that do differ otherwise (Gemma 2: scaled embeddings, norms after each "
            "sublayer; NanoChat: norms without gains, a norm on the embeddings)"
        )
    if cfg.norm_position != "pre":
        raise ExportError(
            f"model.norm_position={cfg.norm_position!r} (post-norm): Llama and GPT-2 are "
            "pre-norm; no supported transformers architecture normalises after the residual add"
        )
    if cfg.pos == "rope":
        arch = qwen3 if cfg.qk_norm else llama
    elif cfg.pos == "learned":
        arch = gpt2
    else:
        what = {"alibi": "ALiBi attention biases", "sinusoidal": "fixed sinusoidal positions"}[cfg.pos]
        raise ExportError(
            f"model.pos={cfg.pos!r} ({what}): no supported transformers architecture has it "
            "(Llama uses pos=rope, GPT-2 pos=learned)"
        )
    if cfg.qk_norm and arch is gpt2:
        raise ExportError(
            "model.qk_norm=True with pos=learned: GPT-2 has no query/key norms; QK-norm exports as "
            "Qwen3 (pos=rope, norm=rmsnorm, a gated MLP, bias=false)"
        )
    arch.check(cfg)
    return arch


def by_model_type(model_type: str | None) -> ModuleType:
    """The module that reads a Hugging Face config.json of this `model_type`."""
    for arch in (llama, qwen3, gpt2):
        if model_type in arch.MODEL_TYPES:
            return arch
    known = ", ".join(t for a in (llama, qwen3, gpt2) for t in a.MODEL_TYPES)
    raise LmforgeError(f"config.json: model_type={model_type!r} is not supported (supported: {known})")
