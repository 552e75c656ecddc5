"""Length-aware batching in the log-likelihood engine: prefix sharing is chosen per context group
from token counts, shared contexts are packed with their continuations into one row (backends
that honour a packed-row mask) or run through the KV cache (the others), the positions run through
the model are counted, and scores are the same whichever path, batch size or request order."""

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.eval.lm import HFCausalLM
from lmforge.eval.loglik import loglikelihood, loglikelihood_tokens
from lmforge.tiny import tiny_lmforge, tiny_tokenizer

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "ran",
    "to",
    "house",
    "tree",
    "red",
    "blue",
    "big",
    "small",
    "it",
    "was",
    "there",
    "when",
    "you",
    "see",
    "water",
]


@pytest.fixture(scope="module")
def lm():
    return tiny_lmforge(tiny_tokenizer(), block_size=256, n_layer=1, n_embd=16)


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    from lmforge.tiny import tiny_gpt2

    return tiny_gpt2(tiny_tokenizer(), n_positions=64, n_layer=2, n_embd=32)


def _requests(seed, n_docs, n_choices, ctx_words, cont_words, shots=0):
    """Documents of n_choices continuations each; `shots` fixed examples before every question."""
    rnd = random.Random(seed)
    s = lambda n: " ".join(rnd.choice(WORDS) for _ in range(n))
    prefix = "".join(f"Question: {s(8)}\nAnswer: {s(1)}\n\n" for _ in range(shots))
    return [
        (q, " " + s(rnd.randint(*cont_words)))
        for q in [f"{prefix}Question: {s(rnd.randint(*ctx_words))}\nAnswer:" for _ in range(n_docs)]
        for _ in range(n_choices)
    ]


@pytest.mark.parametrize(
    "shape",
    [
        (60, 2, (3, 10), (3, 50)),  # PIQA-like: short question, long answers of varying length
        (30, 4, (20, 50), (5, 20)),  # HellaSwag/ARC-like: long context, shorter endings
        (20, 4, (5, 15), (1, 1), 3),  # MMLU-like 3-shot: fixed examples, one-word answers
    ],
)
def test_sharing_never_runs_more_positions_than_whole_requests(lm, shape):
    reqs = _requests(1, *shape)
    shared, flat = {}, {}
    a = loglikelihood(lm, reqs, 8, stats=shared)
    b = loglikelihood(lm, reqs, 8, stats=flat, share_prefix=False)
    assert [x.ll for x in a] == pytest.approx([x.ll for x in b], abs=1e-4)
    assert [x.greedy for x in a] == [x.greedy for x in b]
    assert shared["positions_padded"] <= flat["positions_padded"]
    assert shared["positions_real"] <= flat["positions_real"]  # a shared context runs once
    assert shared["model_seconds"] > 0 and shared["model_cpu_seconds"] > 0  # wall and this thread's CPU time


def test_one_continuation_per_context_is_not_shared(lm):
    reqs = _requests(2, 10, 1, (3, 10), (3, 20))
    st_ = {}
    loglikelihood(lm, reqs, 4, stats=st_)
    flat = {}
    loglikelihood(lm, reqs, 4, stats=flat, share_prefix=False)
    assert st_["positions_real"] == flat["positions_real"]  # nothing to share: whole rows, as lm-eval


# ---------------------------------------------------------------- packed rows (HF backend)


def test_hf_backend_packs_and_runs_each_context_once(hf):
    assert hf.packs_prefixes()
    reqs = _requests(3, 12, 3, (3, 12), (2, 6))  # 3 continuations per context, contexts of any length
    packed, flat = {}, {}
    a = loglikelihood(hf, reqs, 4, stats=packed)
    b = loglikelihood(hf, reqs, 4, stats=flat, share_prefix=False)
    assert [x.ll for x in a] == pytest.approx([x.ll for x in b], abs=1e-4)
    assert [x.greedy for x in a] == [x.greedy for x in b]
    ctx_tokens = sum(len(hf.encode(reqs[3 * d][0])) for d in range(12))  # each row fits in 64 positions
    # each context once, not 3 times (and continuations sharing a first token share it too)
    assert flat["positions_real"] - packed["positions_real"] >= 2 * ctx_tokens
    assert packed["positions_padded"] < flat["positions_padded"]


def test_a_group_too_long_for_one_row_is_split(hf):
    """Continuations that together overflow the context window go into several packed rows."""
    ctx = [5] * 20
    pairs = [(ctx, [7 + k] * 15) for k in range(6)]  # 20 + 6 * 14 = 104 positions > 64
    st_ = {}
    got = loglikelihood_tokens(hf, pairs, 8, stats=st_)
    want = loglikelihood_tokens(hf, pairs, 8, share_prefix=False)
    assert [x.ll for x in got] == pytest.approx([x.ll for x in want], abs=1e-4)
    assert st_["positions_real"] < sum(len(c) + len(x) - 1 for c, x in pairs)


class _IgnoresMask(HFCausalLM):
    """A backend whose packed forward drops the mask and positions (as a model that does not take
    custom 4-D masks would): the engine must notice and share through the KV cache instead."""

    def hidden_packed(self, ids, positions, keep):
        return self.hidden(ids)


def test_backend_that_ignores_the_mask_falls_back_to_the_kv_cache(hf):
    odd = _IgnoresMask(hf.model, hf.tok, name="ignores-mask")
    assert not odd.packs_prefixes()
    reqs = _requests(4, 8, 3, (10, 20), (2, 10))
    a = loglikelihood(odd, reqs, 4)
    b = loglikelihood(hf, reqs, 4, share_prefix=False)
    assert [x.ll for x in a] == pytest.approx([x.ll for x in b], abs=1e-4)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 9), choices=st.integers(1, 4))
def test_scores_do_not_depend_on_batch_size_or_request_order(hf, seed, batch, choices):
    reqs = _requests(seed, 5, choices, (1, 12), (1, 12))
    base = loglikelihood(hf, reqs, 4)
    order = list(range(len(reqs)))
    random.Random(seed).shuffle(order)
    shuffled = loglikelihood(hf, [reqs[i] for i in order], batch)
    assert [shuffled[order.index(i)].ll for i in range(len(reqs))] == pytest.approx(
        [x.ll for x in base], abs=1e-4
    )
    assert [shuffled[order.index(i)].greedy for i in range(len(reqs))] == [x.greedy for x in base]


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_rotary_models_pack_unless_windowed(arch):
    """A Llama (rotary positions from position_ids) packs with the same scores; a model with a
    sliding window does not (a custom mask would replace its window), and scores the same anyway."""
    transformers = pytest.importorskip("transformers")
    from lmforge.tiny import hf_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    kind = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": 16}),
    }[arch]
    cfg = kind[0](
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tok.pad_id,
        bos_token_id=tok.eot_id,
        eos_token_id=tok.eot_id,
        **kind[2],
    )
    model = HFCausalLM(kind[1](cfg).eval(), hf_tokenizer(tok), name=arch)
    assert model.packs_prefixes() == (arch == "llama")
    reqs = _requests(5, 6, 3, (2, 8), (2, 6))
    a = loglikelihood(model, reqs, 4)
    b = loglikelihood(model, reqs, 4, share_prefix=False)
    assert [x.ll for x in a] == pytest.approx([x.ll for x in b], abs=1e-4)


@pytest.mark.parametrize("pos", ["learned", "rope", "sinusoidal", "alibi"])
def test_lmforge_models_pack_except_alibi(pos):
    """lmforge's own decoder packs with its position scheme at the packed positions; ALiBi biases by
    distance along the row, so it keeps the KV-cache path. Scores equal whole requests either way."""
    from lmforge.eval.lm import LmforgeLM
    from lmforge.model import ModelConfig, Transformer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32, init_std=0.1, pos=pos
    )
    model = LmforgeLM(Transformer(cfg), tok)
    assert model.packs_prefixes() == (pos != "alibi")
    reqs = _requests(6, 10, 3, (2, 20), (1, 12))
    shared, flat = {}, {}
    a = loglikelihood(model, reqs, 8, stats=shared)
    b = loglikelihood(model, reqs, 8, stats=flat, share_prefix=False)
    assert [x.ll for x in a] == pytest.approx([x.ll for x in b], abs=1e-4)
    assert [x.greedy for x in a] == [x.greedy for x in b]
    assert shared["positions_real"] < flat["positions_real"]
