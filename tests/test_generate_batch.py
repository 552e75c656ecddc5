"""Batched generation: every row of a left-padded batch equals generating its prompt alone, for
each positional encoding and for grouped-query attention; rows stop independently; seeded
sampling is reproducible. Tiny random models built here."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.serve.batching import generate_batch
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate_tokens

GREEDY = {"temperature": 0.0, "top_k": None, "top_p": None}
PROMPTS = [[5, 9, 2, 7, 11, 3, 8], [4], [13, 1, 6], [2, 2, 9, 12, 5]]  # lengths 7, 1, 3, 5


def tiny(**kw) -> Transformer:
    torch.manual_seed(kw.pop("seed", 0))
    # init_std 0.2: logits spread wide enough that float rounding never flips a greedy argmax
    cfg = {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_embd": 32, "n_head": 4, "init_std": 0.2}
    return Transformer(ModelConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize(
    "kw",
    [
        {"pos": "rope"},
        {"pos": "learned"},
        {"pos": "sinusoidal"},
        {"pos": "alibi"},
        {"pos": "rope", "n_kv_head": 2},
        {"pos": "learned", "n_kv_head": 1},
        {"pos": "alibi", "n_head": 6, "n_embd": 48, "n_kv_head": 2},
        {"pos": "rope", "norm_position": "post", "norm": "layernorm", "activation": "gelu"},
    ],
)
def test_batched_greedy_rows_equal_batch_1(kw):
    model = tiny(**kw)
    cfg = SampleConfig(max_new_tokens=12, **GREEDY)
    batched = generate_batch(model, PROMPTS, cfg)
    alone = [list(generate_tokens(model, p, cfg)) for p in PROMPTS]
    assert batched == alone
    assert all(len(row) == 12 for row in batched)


def test_batched_logits_match_batch_1_closely():
    """Beyond argmax: the padded prefill's last-position logits equal each prompt's own."""
    model = tiny(pos="rope", n_kv_head=2)
    n = max(map(len, PROMPTS))
    pad = [n - len(p) for p in PROMPTS]
    ids = torch.tensor([[0] * k + p for k, p in zip(pad, PROMPTS)])
    with torch.inference_mode():
        batched, _ = model(ids, kv_cache=model.new_kv_cache(len(PROMPTS), 16, pad=pad), last_only=True)
        for row, p in enumerate(PROMPTS):
            alone, _ = model(torch.tensor([p]))
            torch.testing.assert_close(batched[row, 0], alone[0, -1], atol=1e-5, rtol=1e-5)


def test_rows_stop_independently_at_stop_ids():
    model = tiny(pos="rope")
    cfg = SampleConfig(max_new_tokens=12, **GREEDY)
    free = generate_batch(model, PROMPTS, cfg)
    stop = next(t for t in free[1] if free[1].index(t) > 0)  # a token row 1 makes after others
    cut = generate_batch(model, PROMPTS, cfg, stop_ids=[stop])
    for row, full in zip(cut, free):
        assert row == (full[: full.index(stop)] if stop in full else full)
    assert 0 < len(cut[1]) < 12 and any(len(row) == 12 for row in cut)  # one row cut, another not


def test_seeded_sampling_is_deterministic():
    model = tiny(pos="learned")
    cfg = SampleConfig(max_new_tokens=10, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    a, b = generate_batch(model, PROMPTS, cfg), generate_batch(model, PROMPTS, cfg)
    assert a == b and all(len(row) == 10 for row in a)
    cfg.seed = 4
    assert generate_batch(model, PROMPTS, cfg) != a


def test_equal_lengths_use_no_padding_and_match():
    model = tiny(pos="alibi")
    prompts = [[1, 2, 3], [4, 5, 6]]
    cfg = SampleConfig(max_new_tokens=6, **GREEDY)
    assert model.new_kv_cache(2, 8, pad=[0, 0]).pad is None  # the unpadded fast path
    assert generate_batch(model, prompts, cfg) == [list(generate_tokens(model, p, cfg)) for p in prompts]


def test_context_limit_and_errors():
    model = tiny(pos="learned", block_size=8)
    cfg = SampleConfig(max_new_tokens=20, **GREEDY)
    out = generate_batch(model, [[1, 2, 3, 4, 5, 6], [7]], cfg)
    assert [len(r) for r in out] == [3, 3]  # the longest prompt's limit: 8 - 6 + 1
    assert generate_batch(model, [], cfg) == []
    with pytest.raises(LmforgeError, match="empty"):
        generate_batch(model, [[1], []], cfg)
    with pytest.raises(LmforgeError, match="longer than"):
        generate_batch(model, [list(range(9))], cfg)
    with pytest.raises(LmforgeError, match="decoder models"):
        generate_batch(tiny(kind="encoder-decoder", n_encoder_layer=1), [[1]], cfg)
    with pytest.raises(LmforgeError, match="pad"):
        model.new_kv_cache(2, 8, pad=[1])
    assert model.training is False


def test_seeded_rows_sample_what_their_prompt_samples_alone():
    """Each row has its own generator seeded by cfg.seed (the server's batch path), so a sampled
    row equals generating its prompt alone with that seed."""
    model = tiny(pos="rope", n_kv_head=2)
    cfg = SampleConfig(max_new_tokens=10, temperature=0.9, top_k=20, top_p=0.95, seed=11)
    assert generate_batch(model, PROMPTS, cfg) == [list(generate_tokens(model, p, cfg)) for p in PROMPTS]
