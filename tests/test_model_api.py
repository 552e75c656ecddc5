"""The model's public API for callers that need more than logits (evaluation): hidden states and a
KV cache whose rows can be selected, checked against the model's own full forward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import LmforgeError
from lmforge.model import ModelConfig, Transformer


def build(**overrides) -> Transformer:
    torch.manual_seed(0)
    base = {"vocab_size": 37, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32, "pos": "rope"}
    return Transformer(ModelConfig(**{**base, **overrides})).eval()


@pytest.mark.parametrize("kind", ["decoder", "encoder", "encoder-decoder"])
def test_hidden_states_are_what_forward_projects(kind):
    model = build(kind=kind)
    x = torch.randint(0, 37, (2, 9))
    extra = {"decoder_input_ids": x[:, :5]} if kind == "encoder-decoder" else {}
    h = model.hidden_states(x, **extra)
    assert h.shape == (2, 5 if extra else 9, 32)
    torch.testing.assert_close(model.lm_head(h), model(x, **extra)[0], rtol=0, atol=0)


def test_hidden_states_of_packed_rows_and_with_a_cache():
    model = build()
    x = torch.randint(0, 37, (1, 8))
    seg, pos = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]]), torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])
    h = model.hidden_states(x, segment_ids=seg, position_ids=pos)
    torch.testing.assert_close(h[:, 3:], model.hidden_states(x[:, 3:]), rtol=1e-5, atol=1e-5)
    cache = model.new_kv_cache(1, 8)
    chunks = torch.cat([model.hidden_states(x[:, :5], cache), model.hidden_states(x[:, 5:], cache)], dim=1)
    torch.testing.assert_close(chunks, model.hidden_states(x), rtol=1e-5, atol=1e-5)
    assert cache.length == 8


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(0, 2), min_size=1, max_size=5),
    prefix=st.integers(1, 6),
    suffix=st.integers(1, 5),
    pos=st.sampled_from(["learned", "rope", "alibi"]),
)
def test_selected_rows_continue_their_prefix_as_a_full_forward_would(rows, prefix, suffix, pos):
    model = build(pos=pos, n_kv_head=2)
    prefixes = torch.randint(0, 37, (3, prefix))
    suffixes = torch.randint(0, 37, (len(rows), suffix))
    cache = model.new_kv_cache(3, prefix)
    model.hidden_states(prefixes, cache)
    before = [k.clone() for k in cache.k]
    picked = cache.select_rows(torch.tensor(rows), max_len=prefix + suffix)
    assert (picked.batch_size, picked.length, picked.max_len) == (len(rows), prefix, prefix + suffix)
    got = model.hidden_states(suffixes, picked)
    want = model.hidden_states(torch.cat([prefixes[rows], suffixes], dim=1))[:, prefix:]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert cache.length == prefix and all(torch.equal(a, b) for a, b in zip(before, cache.k))  # untouched


def test_select_rows_keeps_padding_and_cross_attention():
    model = build()
    prompts = [[5, 6, 7], [8, 9]]
    cache = model.new_kv_cache(2, 6, pad=[0, 1])
    model(torch.tensor([[5, 6, 7], [0, 8, 9]]), kv_cache=cache)
    picked = cache.select_rows(torch.tensor([1]))
    logits = model(torch.tensor([[3]]), kv_cache=picked)[0][0, -1]
    torch.testing.assert_close(
        logits, model(torch.tensor([prompts[1] + [3]]))[0][0, -1], rtol=1e-5, atol=1e-5
    )

    s2s = build(kind="encoder-decoder")
    src, tgt = torch.randint(0, 37, (2, 5)), torch.randint(0, 37, (2, 4))
    cache = s2s.new_kv_cache(2, 8)
    s2s(src, decoder_input_ids=tgt[:, :2], kv_cache=cache)
    picked = cache.select_rows(torch.tensor([1, 1, 0]))
    got = s2s(None, decoder_input_ids=tgt[[1, 1, 0], 2:], kv_cache=picked)[0]
    want = s2s(src[[1, 1, 0]], decoder_input_ids=tgt[[1, 1, 0]])[0][:, 2:]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "rows, max_len, message",
    [
        ([3], None, "row indices below 2"),
        ([-1], None, "row indices below 2"),
        ([], None, "non-empty"),
        ([[0]], None, "1-d"),
        ([0], 2, "max_len=2 is shorter than the 3 cached"),
    ],
)
def test_select_rows_refuses_bad_rows(rows, max_len, message):
    model = build()
    cache = model.new_kv_cache(2, 8)
    model(torch.zeros(2, 3, dtype=torch.long), kv_cache=cache)
    with pytest.raises(LmforgeError, match=message):
        cache.select_rows(torch.tensor(rows, dtype=torch.long), max_len=max_len)


def test_evaluation_uses_only_the_public_model_api():
    """eval/ calls no Transformer internals and writes no cache fields (issue 15 part 6)."""
    private = {"stack", "causal_lm", "masked_lm", "seq2seq", "packed_lm", "blocks", "norm_f"}
    for path in Path(__file__).parents[1].joinpath("lmforge", "eval").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            library = (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("torch", "np")
            )  # torch.stack is not Transformer.stack
            if isinstance(node, ast.Attribute) and node.attr in private and not library:
                pytest.fail(f"{path.name}:{node.lineno} uses Transformer.{node.attr}")
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for sub in ast.walk(t):
                        own = (
                            isinstance(sub, ast.Attribute)
                            and isinstance(sub.value, ast.Name)
                            and sub.value.id == "self"
                        )
                        if (
                            isinstance(sub, ast.Attribute)
                            and sub.attr in {"k", "v", "length", "cross_kv"}
                            and not own
                        ):
                            pytest.fail(f"{path.name}:{node.lineno} writes a KV cache's {sub.attr}")


@pytest.mark.parametrize("pos", ["rope", "learned", "sinusoidal"])
def test_hidden_states_under_an_attention_mask_share_one_context(pos):
    """One row holds a context and two continuations that each see the context and themselves, at
    the positions they would have alone: their hidden states equal two separate forwards."""
    model = build(pos=pos)
    ctx, a, b = [3, 5, 7], [11, 13], [17, 19, 23]
    ids = torch.tensor([ctx + a + b])
    positions = torch.tensor([[0, 1, 2, 3, 4, 3, 4, 5]])
    owner = [0, 0, 0, 1, 1, 2, 2, 2]  # 0: context, 1: continuation a, 2: continuation b
    keep = torch.tensor([[s <= t and owner[s] in (0, owner[t]) for s in range(8)] for t in range(8)])[None]
    h = model.hidden_states(ids, position_ids=positions, attention_mask=keep)
    alone_a = model.hidden_states(torch.tensor([ctx + a]))
    alone_b = model.hidden_states(torch.tensor([ctx + b]))
    torch.testing.assert_close(h[:, :5], alone_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h[:, 5:], alone_b[:, 3:], rtol=1e-5, atol=1e-5)


def test_attention_mask_bad_input_is_one_clear_error():
    model = build()
    ids, pos = torch.randint(0, 37, (1, 4)), torch.arange(4)[None]
    keep = torch.ones(1, 4, 4, dtype=torch.bool).tril()
    with pytest.raises(LmforgeError, match="position_ids"):
        model.hidden_states(ids, attention_mask=keep)
    with pytest.raises(LmforgeError, match="bool"):
        model.hidden_states(ids, position_ids=pos, attention_mask=keep.float())
    with pytest.raises(LmforgeError, match="batch, time, time"):
        model.hidden_states(ids, position_ids=pos, attention_mask=keep[:, :3])
    with pytest.raises(LmforgeError, match="ALiBi"):
        build(pos="alibi").hidden_states(ids, position_ids=pos, attention_mask=keep)
    with pytest.raises(LmforgeError, match="decoder"):
        build(kind="encoder").hidden_states(ids, position_ids=pos, attention_mask=keep)
