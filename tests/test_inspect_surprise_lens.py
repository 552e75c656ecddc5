"""Per-token surprise and the logit lens against the model's own outputs: surprise is the
model's cross-entropy in bits (decoder, encoder-decoder; an encoder's is each token masked in
turn), the lens's last layer is the model's output, and the two agree with each other."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.inspect.inputs import read
from lmforge.inspect.lens import logit_lens
from lmforge.inspect.render import lens_table, surprise_ansi, surprise_html
from lmforge.inspect.surprise import token_surprise
from lmforge.model import ModelConfig, Transformer


class Tok:
    """Token ids written as numbers: any id sequence is a text."""

    eot_id, mask_id = 0, 2

    def encode(self, text):
        return [int(t) for t in text.split()]

    def decode(self, ids):
        return "".join(f"t{i}" for i in ids)


def model_of(kind: str, seed: int = 0, **options) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        kind=kind, vocab_size=61, block_size=24, n_layer=3, n_head=2, n_embd=32, init_std=0.2, **options
    )
    return Transformer(cfg).eval()


texts = st.lists(st.integers(7, 60), min_size=1, max_size=12).map(lambda ids: " ".join(map(str, ids)))


@settings(max_examples=10, deadline=None)
@given(
    text=texts, kind=st.sampled_from(["decoder", "encoder-decoder"]), pos=st.sampled_from(["rope", "learned"])
)
def test_surprise_is_the_models_cross_entropy_in_bits(text, kind, pos):
    model = model_of(kind, pos=pos)
    ids = torch.tensor([Tok().encode(text)])
    start = torch.tensor([[0]])
    feed = (
        {"input_ids": torch.cat([start, ids[:, :-1]], 1)}
        if kind == "decoder"
        else {"input_ids": ids, "decoder_input_ids": torch.cat([start, ids[:, :-1]], 1)}
    )
    with torch.no_grad():
        _, loss = model(**feed, targets=ids)
    s = token_surprise(model, Tok(), text, top_k=3)
    assert len(s.tokens) == ids.shape[1]
    assert s.mean_bits == pytest.approx(loss.item() / math.log(2), rel=1e-5)
    for t in s.tokens:
        probs = [p for _, p in t.top]
        assert probs == sorted(probs, reverse=True) and len(probs) == 3
        assert t.prob <= probs[0] + 1e-9 and t.bits == pytest.approx(-math.log2(t.prob), rel=1e-6)


def test_encoder_surprise_masks_each_token_in_turn():
    model = model_of("encoder", pos="sinusoidal")
    text = "9 17 33 41 12"
    s = token_surprise(model, Tok(), text)
    ids = Tok().encode(text)
    for i, t in enumerate(s.tokens):
        masked = torch.tensor([ids[:i] + [Tok.mask_id] + ids[i + 1 :]])
        with torch.no_grad():
            logits, _ = model(masked)
        want = -torch.log_softmax(logits[0, i], -1)[ids[i]].item() / math.log(2)
        assert t.bits == pytest.approx(want, rel=1e-5)


@settings(max_examples=8, deadline=None)
@given(
    text=texts,
    kind=st.sampled_from(["decoder", "encoder", "encoder-decoder"]),
    norm_position=st.sampled_from(["pre", "post"]),
)
def test_lens_last_layer_is_the_model_output_and_agrees_with_surprise(text, kind, norm_position):
    model = model_of(kind, norm_position=norm_position)
    lens = logit_lens(model, Tok(), text)
    s = token_surprise(model, Tok(), text)
    n = len(Tok().encode(text))
    assert lens.layers == ["embed", "block 0", "block 1", "block 2"]
    assert lens.top_prob.shape == lens.target_prob.shape == (4, n)
    assert (lens.target_prob <= lens.top_prob + 1e-6).all()
    for i, t in enumerate(s.tokens):  # the lens's last row is what the model predicts
        assert lens.target_prob[-1, i] == pytest.approx(t.prob, rel=1e-4, abs=1e-7)
        assert lens.top[-1][i] == t.top[0][0]


def test_lens_reads_each_layer_through_the_final_norm_and_head():
    model = model_of("decoder")
    text = "11 12 13 14"
    reading = read(model, Tok(), text)
    streams = []
    hook = model.blocks[1].register_forward_hook(lambda m, a, out: streams.append(out))
    with torch.no_grad():
        model(**reading.feed)
        hook.remove()
        probs = torch.softmax(model.lm_head(model.norm_f(streams[0][0, :4])), -1)  # after block 1
    lens = logit_lens(model, Tok(), text)
    torch.testing.assert_close(
        torch.from_numpy(lens.target_prob[2]), probs[torch.arange(4), torch.tensor([11, 12, 13, 14])]
    )
    assert lens.inputs == ["<eot>", "t11", "t12", "t13"] and lens.tokens == ["t11", "t12", "t13", "t14"]


def test_text_renderings():
    model = model_of("decoder")
    s = token_surprise(model, Tok(), "21 22 23")
    coloured, plain = surprise_ansi(s, colour=True), surprise_ansi(s, colour=False)
    assert "\x1b[48;2;" in coloured and "\x1b" not in plain
    assert plain.startswith("t21t22t23\n") and plain.count(" bits | ") == 3
    page = surprise_html(s, "a <title>")
    assert page.count('class="tok"') == 3 and "a &lt;title&gt;" in page
    table = lens_table(logit_lens(model, Tok(), "21 22 23"))
    assert table.count("\n") == 1 + 4 and table.splitlines()[0].count("|") == 5


def test_empty_and_too_long_texts_are_one_clear_error():
    from lmforge.errors import LmforgeError

    model = model_of("decoder")
    with pytest.raises(LmforgeError, match="empty"):
        token_surprise(model, Tok(), "")
    with pytest.raises(LmforgeError, match="at most 23"):
        logit_lens(model, Tok(), " ".join(["9"] * 24))
