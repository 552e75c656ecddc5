"""The fast decoding step (lmforge/model/decode.py) against the model's own cached forward: same
logits for every architecture option, padded rows, packed and unpacked weights, weights that
change in place; compiled (inductor on the CPU) gives the eager tokens and compiles once per shape.
Tiny random models built here."""

from __future__ import annotations

import gc

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.model import ModelConfig, Transformer, decode
from lmforge.model.decode import Decoder, decode_weights
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate_batch, generate_tokens

GREEDY = {"temperature": 0.0, "top_k": None, "top_p": None}
PROMPTS = [[5, 9, 2, 7, 11, 3, 8], [4], [13, 1, 6]]  # lengths 7, 1, 3: left-padded in a batch


def tiny(**kw) -> Transformer:
    torch.manual_seed(kw.pop("seed", 0))
    # init_std 0.2: logits spread wide enough that float rounding never flips a greedy argmax
    cfg = {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_embd": 32, "n_head": 4, "init_std": 0.2}
    return Transformer(ModelConfig(**{**cfg, **kw})).eval()


def cached_logits(model, prompts: list[list[int]], feed: list[list[int]], decoder: bool) -> torch.Tensor:
    """Prefill the left-padded prompts, then feed one column of `feed` per step: each step's next-token
    logits (steps, B, V), from the Decoder or from the model's own cached forward."""
    n = max(map(len, prompts))
    pad = [n - len(p) for p in prompts]
    ids = torch.tensor([[0] * k + p for k, p in zip(pad, prompts)])
    with torch.inference_mode():
        cache = model.new_kv_cache(len(prompts), n + len(feed[0]), pad=pad)
        model(ids, kv_cache=cache)
        step = Decoder(model, cache) if decoder else (lambda t: model(t[:, None], kv_cache=cache)[0][:, -1])
        return torch.stack([step(torch.tensor(col)) for col in zip(*feed)])


ARCHITECTURES = [
    {"pos": "learned"}, {"pos": "sinusoidal"}, {"pos": "rope"}, {"pos": "alibi"},
    {"pos": "rope", "n_kv_head": 2}, {"pos": "learned", "n_kv_head": 1},
    {"pos": "alibi", "n_head": 6, "n_embd": 48, "n_kv_head": 2},
    {"pos": "rope", "norm": "rmsnorm", "activation": "swiglu", "bias": False},
    {"pos": "learned", "activation": "geglu", "tie_embeddings": False},
    {"pos": "rope", "norm_position": "post", "norm": "layernorm", "activation": "relu"},
]


@pytest.mark.parametrize("kw", ARCHITECTURES)
def test_decoder_logits_equal_the_models_cached_forward(kw):
    model = tiny(**kw)
    feed = [[3, 17, 40, 8], [22, 5, 5, 61], [9, 30, 2, 44]]  # four steps for each of the three rows
    torch.testing.assert_close(cached_logits(model, PROMPTS, feed, decoder=True),
                               cached_logits(model, PROMPTS, feed, decoder=False), atol=2e-5, rtol=1e-5)


def test_unpacked_weights_give_the_same_logits():
    """Float64 has no oneDNN packing: the plain fused matmuls (the path on GPUs) match too."""
    model = tiny(pos="rope", n_kv_head=2).double()
    assert not decode_weights(model).packed
    feed = [[3, 17], [22, 5], [9, 30]]
    torch.testing.assert_close(cached_logits(model, PROMPTS, feed, decoder=True),
                               cached_logits(model, PROMPTS, feed, decoder=False))


def test_weights_are_rebuilt_when_parameters_change():
    model = tiny(pos="rope")
    feed = [[3, 17], [22, 5], [9, 30]]
    before = cached_logits(model, PROMPTS, feed, decoder=True)
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight.mul_(-1.5)  # in place: same tensor, new version
        model.blocks[1].mlp.up_proj.weight.add_(0.1)
    after = cached_logits(model, PROMPTS, feed, decoder=True)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, cached_logits(model, PROMPTS, feed, decoder=False), atol=2e-5, rtol=1e-5)


def test_packed_copies_go_with_the_model():
    model = tiny(pos="rope")
    weights = decode_weights(model)
    if not weights.packed:
        pytest.skip("no oneDNN packing in this torch build")
    keys = list(weights._keys)
    assert keys and all(k in decode._PACKED for k in keys)
    del model, weights
    gc.collect()
    assert not any(k in decode._PACKED for k in keys)


def test_generation_uses_a_decoder_only_where_its_copy_pays():
    model = tiny()
    assert Decoder.wanted(model)  # a small CPU model: the eager decoder's fused copy is cheap
    assert not Decoder.wanted(model, limit=0)  # past the memory limit: the model's own forward
    assert Decoder.wanted(model, compile=True, limit=0)  # compiling asks for it whatever the size
    assert not Decoder.wanted(tiny(kind="encoder-decoder"), compile=True)


def test_decoder_refuses_other_models_and_training_mode():
    with pytest.raises(LmforgeError, match="decoder models"):
        Decoder(tiny(kind="encoder-decoder"), None)
    assert Decoder.supports(tiny()) and not Decoder.supports(tiny(kind="encoder"))
    model = tiny().train()
    with pytest.raises(LmforgeError, match="eval mode"):
        Decoder(model, model.new_kv_cache(1, 4))


def test_greedy_generation_equals_the_models_cached_forward():
    """generate_tokens now decodes through the Decoder; the tokens are those of the model's own loop."""
    model = tiny(pos="rope", n_kv_head=2)
    prompt = PROMPTS[0]
    reference = []
    with torch.inference_mode():
        cache = model.new_kv_cache(1, len(prompt) + 12)
        logits, _ = model(torch.tensor([prompt]), kv_cache=cache)
        for _ in range(12):
            reference.append(int(logits[0, -1].argmax()))
            logits, _ = model(torch.tensor([[reference[-1]]]), kv_cache=cache)
    assert list(generate_tokens(model, prompt, SampleConfig(max_new_tokens=12, **GREEDY))) == reference


@pytest.mark.slow
def test_compiled_decoding_gives_eager_tokens_and_compiles_once():
    """sample.compile=true: torch.compile (inductor on the CPU) of the decode step; the tokens equal
    eager decoding, and the step compiles once for a shape, not once per token."""
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    model = tiny(pos="rope", n_kv_head=2)
    eager, compiled = (SampleConfig(max_new_tokens=10, compile=c, **GREEDY) for c in (False, True))
    before = counters["stats"]["unique_graphs"]
    assert generate_batch(model, PROMPTS, compiled) == generate_batch(model, PROMPTS, eager)
    assert counters["stats"]["unique_graphs"] == before + 1  # one graph for all 9 steps
    with torch.compiler.set_stance("fail_on_recompile"):  # same shapes again: no compiling at all
        assert generate_batch(model, PROMPTS, compiled) == generate_batch(model, PROMPTS, eager)
    assert list(generate_tokens(model, PROMPTS[0], compiled)) == list(generate_tokens(model, PROMPTS[0], eager))


@pytest.mark.slow
def test_served_model_with_compile_answers_as_without(tmp_path):
    """`lmforge serve/chat --compile` sets ServedModel.compile: every request decodes compiled."""
    from torch._dynamo.utils import counters

    from lmforge.serve.engine import ServedModel
    from lmforge.serve.tiny import make_tiny_run

    served = ServedModel.load(str(make_tiny_run(tmp_path / "run", seed=0, block_size=64)))
    ids = served.text_ids("the quick brown")
    cfg = SampleConfig(max_new_tokens=8, **GREEDY)
    plain = served.complete(ids, cfg, stop_ids=[])
    graphs = counters["stats"]["unique_graphs"]
    served.compile = True
    assert served.complete(ids, cfg, stop_ids=[]).token_ids == plain.token_ids
    assert counters["stats"]["unique_graphs"] > graphs  # the compiled step ran


def test_lora_wrapped_models_generate_through_their_own_forward():
    """An unmerged LoRA adapter adds its update in forward: no Decoder (whose fused weights would
    miss it); generation runs the model's cached forward and still sees the adapter."""
    from lmforge.tune.config import LoraConfig
    from lmforge.tune.lora import apply_lora, merge_lora

    model = tiny(pos="rope")
    apply_lora(model, LoraConfig(rank=2, targets=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero update
    assert not Decoder.supports(model)
    cfg = SampleConfig(max_new_tokens=8, **GREEDY)
    adapted = generate_batch(model, PROMPTS, cfg)
    merge_lora(model)
    assert Decoder.supports(model)
    assert generate_batch(model, PROMPTS, cfg) == adapted
