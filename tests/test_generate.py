"""Generation: the KV-cache path against full recomputation, sampling options, stop strings,
streaming and the context limit, on a throwaway tokenizer and tiny models built here."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate, generate_tokens
from lmforge.serve.sampling import sample
from lmforge.tokenizer import TokenizerConfig, train_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. héllo wörld ☃ 日本 "
GREEDY = {"temperature": 0.0, "top_k": None, "top_p": None}


@pytest.fixture(scope="module")
def tokenizer():
    # Few merges on purpose: multi-byte characters stay split over several byte tokens.
    return train_tokenizer([TEXT * 20], TokenizerConfig(vocab_size=300, min_frequency=2))


def tiny(tokenizer, **kw) -> Transformer:
    torch.manual_seed(kw.pop("seed", 0))
    cfg = {"vocab_size": tokenizer.vocab_size, "block_size": 48, "n_layer": 2, "n_embd": 32, "n_head": 4}
    return Transformer(ModelConfig(**{**cfg, **kw})).eval()


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny decoder fitted to TEXT, so greedy decoding recites it: a known continuation."""
    model = tiny(tokenizer, block_size=64, n_embd=64)
    ids = torch.tensor(tokenizer.encode(TEXT * 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        starts = torch.randint(len(ids) - 33, (8,), generator=g)
        batch = torch.stack([ids[s : s + 33] for s in starts])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5, loss.item()
    return model.eval()


def full_recompute_greedy(model, ids: list[int], n: int, eot: int, source=None) -> list[int]:
    """Reference: argmax decoding that reruns the model on the whole sequence, no cache."""
    out = []
    with torch.no_grad():
        for _ in range(n):
            if source is None:
                logits, _ = model(torch.tensor([ids + out]))
            else:
                logits, _ = model(torch.tensor([source]), decoder_input_ids=torch.tensor([ids + out]))
            token = int(logits[0, -1].argmax())
            if token == eot:
                break
            out.append(token)
    return out


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pos": "rope", "n_kv_head": 2},
        {"pos": "alibi"},
        {"pos": "sinusoidal", "norm": "rmsnorm", "activation": "swiglu"},
    ],
)
def test_cached_greedy_equals_full_recompute(tokenizer, kw):
    model = tiny(tokenizer, init_std=0.2, **kw)  # wide logits: no near-ties for argmax to flip on
    prompt = tokenizer.encode("the quick")
    cfg = SampleConfig(max_new_tokens=20, **GREEDY)
    got = list(generate_tokens(model, prompt, cfg, stop_ids=[tokenizer.eot_id]))
    assert got == full_recompute_greedy(model, prompt, 20, tokenizer.eot_id)
    assert generate(model, tokenizer, "the quick", cfg) == tokenizer.decode(got)


def test_encoder_decoder_generates_from_source(tokenizer):
    model = tiny(tokenizer, kind="encoder-decoder", init_std=0.2)
    cfg = SampleConfig(max_new_tokens=12, **GREEDY)
    source = tokenizer.encode("the lazy dog")
    got = list(generate_tokens(model, [tokenizer.eot_id], cfg, [tokenizer.eot_id], source_ids=source))
    assert got == full_recompute_greedy(model, [tokenizer.eot_id], 12, tokenizer.eot_id, source)
    assert generate(model, tokenizer, "", cfg, source="the lazy dog") == tokenizer.decode(got)
    with pytest.raises(LmforgeError, match="source"):
        generate(model, tokenizer, "x", cfg)


def test_encoder_only_cannot_generate(tokenizer):
    with pytest.raises(LmforgeError, match="encoder-only"):
        generate(tiny(tokenizer, kind="encoder"), tokenizer, "the", SampleConfig())


def test_greedy_is_deterministic_and_recites_training_text(trained, tokenizer):
    cfg = SampleConfig(max_new_tokens=30, **GREEDY)
    first = generate(trained, tokenizer, "the quick", cfg)
    assert first == generate(trained, tokenizer, "the quick", cfg)
    assert first.startswith(" brown fox jumps")


def test_seed_decides_the_sample(tokenizer):
    model = tiny(tokenizer)  # near-uniform next-token distribution: samples vary a lot
    cfg = SampleConfig(max_new_tokens=20, temperature=1.0, top_k=None, seed=1)
    a = list(generate_tokens(model, [7], cfg))
    assert a == list(generate_tokens(model, [7], cfg))
    cfg.seed = 2
    assert a != list(generate_tokens(model, [7], cfg))


@pytest.mark.parametrize("option", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_1_and_tiny_top_p_are_greedy(tokenizer, option):
    model = tiny(tokenizer, init_std=0.2)
    greedy = list(generate_tokens(model, [7, 8], SampleConfig(max_new_tokens=15, **GREEDY)))
    sampled = SampleConfig(max_new_tokens=15, temperature=1.5, **{"top_k": None, **option})
    assert list(generate_tokens(model, [7, 8], sampled)) == greedy


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.5, 0.3, 0.2, 0.0]).clamp_min(1e-9).log()
    g = torch.Generator().manual_seed(0)
    for p, allowed in [(0.5, {0}), (0.6, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2})]:
        cfg = SampleConfig(temperature=1.0, top_k=None, top_p=p)
        seen = {int(sample(logits, cfg, g)) for _ in range(300)}
        assert seen == allowed, (p, seen)


def test_stop_string_cuts_output_and_stream(trained, tokenizer):
    cfg = SampleConfig(max_new_tokens=40, **GREEDY)
    full = generate(trained, tokenizer, "the quick", cfg)
    assert "lazy" in full
    chunks: list[str] = []
    cfg.stop = ["lazy", "never appears"]
    out = generate(trained, tokenizer, "the quick", cfg, on_text=chunks.append)
    assert out == full[: full.index("lazy")]
    assert "".join(chunks) == out  # the stream never ran past the stop string, not even "la"


def test_stream_concatenates_to_result_without_half_characters(trained, tokenizer):
    chunks: list[str] = []
    cfg = SampleConfig(max_new_tokens=40, **GREEDY)
    out = generate(trained, tokenizer, "héllo", cfg, on_text=chunks.append)
    assert "☃" in out and "日本" in out  # multi-byte characters, split over tokens by this tokenizer
    assert len(tokenizer.encode("☃")) > 1
    assert "".join(chunks) == out
    # Decoding token by token would emit a U+FFFD for every half character; the stream holds
    # them back, so it equals decoding all tokens at once.
    ids = list(generate_tokens(trained, tokenizer.encode("héllo"), cfg, [tokenizer.eot_id]))
    assert "\ufffd" in "".join(tokenizer.decode([i]) for i in ids)
    assert out == tokenizer.decode(ids)


def test_max_new_tokens_and_context_limit(tokenizer):
    model = tiny(tokenizer)  # block_size 48
    cfg = SampleConfig(max_new_tokens=7, temperature=1.0, top_k=None)
    assert len(list(generate_tokens(model, [9] * 10, cfg))) == 7
    cfg.max_new_tokens = 100  # the prompt fills 45 of 48 positions: 3 fed back + 1 last = 4 tokens
    assert len(list(generate_tokens(model, [9] * 45, cfg))) == 4
    assert len(list(generate_tokens(model, [9] * 48, cfg))) == 1
    cfg.max_new_tokens = 0
    assert generate(model, tokenizer, "the", cfg) == ""


def test_prompt_longer_than_context_is_an_error(tokenizer):
    model = tiny(tokenizer)
    with pytest.raises(LmforgeError, match=r"49 tokens.*48 tokens"):
        list(generate_tokens(model, [9] * 49, SampleConfig()))


def test_bad_options_and_training_mode(tokenizer):
    model = tiny(tokenizer).train()
    with pytest.raises(ConfigError, match="top_p"):
        generate(model, tokenizer, "the", SampleConfig(top_p=1.5))
    generate(model, tokenizer, "the", SampleConfig(max_new_tokens=3))
    assert model.training  # back in the mode it was in
