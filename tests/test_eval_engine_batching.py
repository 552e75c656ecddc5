"""Length-aware batching in the log-likelihood engine: prefix sharing is chosen per context group
from token counts, shared batches keep padding small, and the positions run through the model are
counted; scores are the same whichever path a request takes."""

import random

import pytest

from lmforge.eval.loglik import loglikelihood
from lmforge.tiny import tiny_lmforge, tiny_tokenizer

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "house", "tree", "red", "blue", "big", "small", "it", "was", "there", "when", "you", "see", "water"]


@pytest.fixture(scope="module")
def lm():
    return tiny_lmforge(tiny_tokenizer(), block_size=256, n_layer=1, n_embd=16)


def _requests(seed, n_docs, n_choices, ctx_words, cont_words):
    rnd = random.Random(seed)
    s = lambda n: " ".join(rnd.choice(WORDS) for _ in range(n))
    return [(q, " " + s(rnd.randint(*cont_words)))
            for q in [f"Question: {s(rnd.randint(*ctx_words))}\nAnswer:" for _ in range(n_docs)]
            for _ in range(n_choices)]


@pytest.mark.parametrize("shape", [
    (60, 2, (3, 10), (3, 50)),   # PIQA-like: short question, long answers of varying length
    (30, 4, (20, 50), (5, 20)),  # HellaSwag/ARC-like: long context, shorter endings
])
def test_sharing_never_runs_more_positions_than_whole_requests(lm, shape):
    reqs = _requests(1, *shape)
    shared, flat = {}, {}
    a = loglikelihood(lm, reqs, 8, stats=shared)
    b = loglikelihood(lm, reqs, 8, stats=flat, share_prefix=False)
    assert [x.ll for x in a] == pytest.approx([x.ll for x in b], abs=1e-4)
    assert [x.greedy for x in a] == [x.greedy for x in b]
    assert shared["positions_padded"] <= flat["positions_padded"]
    assert shared["positions_real"] <= flat["positions_real"]  # a shared context runs once
    assert shared["model_seconds"] > 0


def test_one_continuation_per_context_is_not_shared(lm):
    reqs = _requests(2, 10, 1, (3, 10), (3, 20))
    st = {}
    loglikelihood(lm, reqs, 4, stats=st)
    flat = {}
    loglikelihood(lm, reqs, 4, stats=flat, share_prefix=False)
    assert st["positions_real"] == flat["positions_real"]  # nothing to share: whole rows, as lm-eval
