"""The sampling core (lmforge/serve/sampling.py): a batch with per-row generators samples what each
row samples alone, a tiny temperature is greedy, and token_budget keeps the KV cache in context."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.sampling import cache_slots, sample, token_budget

temperatures = st.one_of(st.just(0.0), st.just(1e-300), st.floats(0.05, 3.0))
row_settings = st.builds(
    SampleConfig,
    temperature=temperatures,
    top_k=st.one_of(st.none(), st.integers(1, 60)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
    seed=st.integers(0, 2**32),
)


def gens(cfgs):
    return [torch.Generator().manual_seed(c.seed) for c in cfgs]


@settings(max_examples=60, deadline=None)
@given(
    cfgs=st.lists(row_settings, min_size=1, max_size=5),
    vocab=st.integers(2, 40),
    scale=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**16),
)
def test_batch_equals_row_by_row_with_the_same_generators(cfgs, vocab, scale, seed):
    logits = torch.randn(len(cfgs), vocab, generator=torch.Generator().manual_seed(seed)) * scale
    batch_gens, row_gens = gens(cfgs), gens(cfgs)
    for _ in range(3):  # the generators must also be left in the same state
        batched = sample(logits, cfgs, batch_gens)
        alone = [int(sample(row, c, g)) for row, c, g in zip(logits, cfgs, row_gens)]
        assert batched.shape == (len(cfgs),) and batched.tolist() == alone
    # one setting for the batch, a generator per row: the same as that setting in every row
    shared = sample(logits, cfgs[0], gens(cfgs))
    assert shared.tolist() == sample(logits, [cfgs[0]] * len(cfgs), gens(cfgs)).tolist()


@settings(max_examples=30, deadline=None)
@given(vocab=st.integers(2, 40), seed=st.integers(0, 2**16), top_k=st.one_of(st.none(), st.integers(1, 50)))
def test_greedy_and_a_tiny_temperature_pick_the_argmax(vocab, seed, top_k):
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(seed)) * 5
    want = logits.argmax(-1).tolist()
    for t in (0.0, 1e-300, 1e-45):
        cfg = SampleConfig(temperature=t, top_k=top_k)
        assert sample(logits, cfg, torch.Generator().manual_seed(seed)).tolist() == want


def test_greedy_rows_do_not_draw_from_their_generator():
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    sample(torch.randn(4, 9), SampleConfig(temperature=0), [g, g, g, g])
    assert torch.equal(g.get_state(), before)


def test_one_dimensional_logits_give_one_id():
    out = sample(torch.tensor([0.0, 3.0, 1.0]), SampleConfig(temperature=0), torch.Generator())
    assert out.dim() == 0 and int(out) == 1


def test_mismatched_rows_are_an_error():
    logits = torch.randn(3, 8)
    with pytest.raises(LmforgeError, match="2 settings for 3 rows"):
        sample(logits, [SampleConfig()] * 2, [torch.Generator()] * 3)
    with pytest.raises(LmforgeError, match="per-row generators"):
        sample(logits, [SampleConfig()] * 3, torch.Generator())


@given(max_new=st.integers(0, 100), prompt=st.integers(1, 64), block=st.integers(1, 64))
def test_token_budget_fits_the_context(max_new, prompt, block):
    budget = token_budget(max_new, prompt, block)
    assert 0 <= budget <= max_new
    if prompt <= block:
        # the last token sits at position block_size at most; the cache holds all but it
        assert budget == min(max_new, block - prompt + 1)
        assert budget == 0 or cache_slots(prompt, budget) <= block
    else:
        assert budget == 0
