"""Attention probabilities from the model's own modules (the `record` opt-in): equal to
softmax(QK^T/sqrt(D) + mask) recomputed by hand from the module's inputs and weights, rows summing
to 1, causal rows zero above the diagonal, and the logits unchanged by recording."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.inspect.attention import attention_maps, recording
from lmforge.model import ModelConfig, Transformer
from lmforge.model.attention import CrossAttention, SelfAttention
from lmforge.model.positions import apply_rotary

VARIANTS = [
    {"kind": "decoder", "pos": "learned"},
    {"kind": "decoder", "pos": "rope", "n_kv_head": 1},  # multi-query: K/V heads shared
    {"kind": "decoder", "pos": "alibi", "norm_position": "post"},
    {"kind": "encoder", "pos": "sinusoidal"},
    {"kind": "encoder", "pos": "alibi"},
    {"kind": "encoder-decoder", "pos": "rope", "n_kv_head": 2},
]


def model_of(seed: int = 0, **options) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32, init_std=0.3, **options)
    return Transformer(cfg).eval()


def feed_of(model: Transformer, ids: torch.Tensor) -> dict:
    if model.cfg.kind == "encoder-decoder":
        return {"input_ids": ids, "decoder_input_ids": ids.flip(1)}
    return {"input_ids": ids}


def by_hand(module, x: torch.Tensor, kv_source: torch.Tensor, rope, bias, causal: bool) -> torch.Tensor:
    """softmax(QK^T/sqrt(D) + mask) (B, H, T, S) from the module's weights, written independently."""
    B, T, _ = x.shape
    S = kv_source.shape[1]
    H, D = module.n_head, module.head_dim
    q = module.q_proj(x).view(B, T, H, D).transpose(1, 2)
    k = module.k_proj(kv_source).view(B, S, -1, D).transpose(1, 2)
    k = k.repeat_interleave(H // k.shape[1], dim=1)  # (B, H, S, D)
    if rope is not None:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1)


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_recorded_probabilities_equal_the_formula_and_leave_logits_unchanged(options):
    model = model_of(**options)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(1))
    feed = feed_of(model, ids)
    with torch.no_grad():
        plain, _ = model(**feed)
    inputs: dict[str, tuple] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args))
        for name, m in model.named_modules()
        if isinstance(m, (SelfAttention, CrossAttention))
    ]
    encoder_out = []
    if model.cfg.kind == "encoder-decoder":
        hooks.append(model.encoder_norm.register_forward_hook(lambda m, a, out: encoder_out.append(out)))
    with torch.no_grad(), recording(model) as records:
        recorded, _ = model(**feed)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)  # the opt-in changes nothing
    assert all(m.record is None for m in model.modules() if hasattr(m, "record"))  # switched off again

    n_modules = model.cfg.n_layer * (2 if model.cfg.kind == "encoder-decoder" else 1) + (
        model.cfg.encoder_layers if model.cfg.kind == "encoder-decoder" else 0
    )
    assert len(records) == n_modules and all(len(calls) == 1 for calls in records.values())
    modules = dict(model.named_modules())
    for name, (probs,) in records.items():
        module = modules[name]
        decoder_self = (
            isinstance(module, SelfAttention)
            and not name.startswith("encoder")
            and model.cfg.kind != "encoder"
        )
        T = probs.shape[2]
        if isinstance(module, CrossAttention):
            x, (memory,) = inputs[name][0], encoder_out
            want = by_hand(module, x, memory, None, None, causal=False)
        else:
            x, rope = inputs[name][0], inputs[name][1]
            bias = model.pos_emb.bias(0, T, decoder_self)
            if bias is not None and decoder_self:
                bias = bias.masked_fill(torch.isinf(bias), 0.0)  # by_hand adds the causal -inf itself
            want = by_hand(module, x, x, rope, bias, causal=decoder_self)
        torch.testing.assert_close(probs, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
        if decoder_self:
            assert torch.all(probs.masked_select(torch.ones(T, T, dtype=torch.bool).triu(1)) == 0)
        else:
            assert torch.all(probs > 0)  # bidirectional / cross: every key visible


@settings(max_examples=8, deadline=None)
@given(
    ids=st.lists(st.integers(7, 96), min_size=1, max_size=20),
    kind=st.sampled_from(["decoder", "encoder", "encoder-decoder"]),
)
def test_maps_have_one_row_per_query_summing_to_one(ids, kind):
    """Any text: each map is (heads, queries, keys) with labelled axes and rows that sum to 1."""

    class Tok:  # ids as their own labels: the maps' shapes and labels follow the text
        eot_id, mask_id = 0, 2

        def encode(self, text):
            return [int(t) for t in text.split()]

        def decode(self, ids):
            return "".join(f"t{i}" for i in ids)

    model = model_of(kind=kind, pos="rope")
    maps = attention_maps(model, Tok(), " ".join(map(str, ids)))
    n = len(ids)
    assert len(maps) == model.cfg.n_layer * (3 if kind == "encoder-decoder" else 1)
    for m in maps:
        assert m.probs.shape == (4, len(m.queries), len(m.keys))
        assert len(m.keys) == (n + 1 if m.stack == "decoder" else n)
        assert abs(m.probs.sum(-1) - 1).max() < 1e-5
