"""The transformer: causality, KV-cache decoding, positions against their papers' formulas,
analytic size and FLOPs, optimizer groups, and clear errors for impossible shapes."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import KVCache, ModelConfig, Transformer
from lmforge.model.positions import alibi_bias, alibi_slopes, apply_rotary, rope_tables, sinusoidal_table

POSITIONS = ["learned", "sinusoidal", "rope", "alibi"]


def tiny(**overrides) -> ModelConfig:
    base = {"vocab_size": 37, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32}
    base.update(overrides)
    return ModelConfig(**base)


def build(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny(**overrides)).eval()


# ---------------------------------------------------------------- causality


@pytest.mark.parametrize("pos", POSITIONS)
def test_decoder_never_looks_ahead(pos):
    model = build(pos=pos)
    x = torch.randint(0, 37, (2, 12))
    for t in (0, 5, 11):
        y = x.clone()
        y[:, t:] = (y[:, t:] + 1 + torch.randint(0, 30, y[:, t:].shape)) % 37  # every future token differs
        a, _ = model(x)
        b, _ = model(y)
        torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-5)
        assert (a[:, t] - b[:, t]).abs().max() > 1e-3  # the changed position itself does change


@pytest.mark.parametrize("pos", POSITIONS)
def test_encoder_decoder_decoder_never_looks_ahead_but_sees_all_source(pos):
    model = build(kind="encoder-decoder", pos=pos, n_encoder_layer=1)
    src, tgt = torch.randint(0, 37, (2, 9)), torch.randint(0, 37, (2, 12))
    base, _ = model(src, decoder_input_ids=tgt)
    later = tgt.clone()
    later[:, 6:] = (later[:, 6:] + 3) % 37
    changed, _ = model(src, decoder_input_ids=later)
    torch.testing.assert_close(base[:, :6], changed[:, :6], rtol=0, atol=1e-5)
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 3) % 37  # the last source token is visible to the first target
    other, _ = model(src2, decoder_input_ids=tgt)
    assert (other[:, 0] - base[:, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("pos", POSITIONS)
def test_encoder_attends_both_ways(pos):
    model = build(kind="encoder", pos=pos)
    x = torch.randint(0, 37, (2, 10))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 5) % 37
    a, _ = model(x)
    b, _ = model(y)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6  # the first position saw the last token


# ---------------------------------------------------------------- KV cache


def decode_in_chunks(model, x, chunks, source=None):
    cache = model.new_kv_cache(x.shape[0], 16)
    outs, s = [], 0
    for c in chunks:
        piece = x[:, s : s + c]
        s += c
        if source is None:
            logits, _ = model(piece, kv_cache=cache)
        else:
            logits, _ = model(source, decoder_input_ids=piece, kv_cache=cache)
        outs.append(logits)
    assert cache.length == x.shape[1]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("kind", ["decoder", "encoder-decoder"])
@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("n_kv_head", [None, 2, 1])  # MHA, GQA, MQA
def test_kv_cache_decoding_equals_full_recompute(kind, pos, n_kv_head):
    model = build(kind=kind, pos=pos, n_kv_head=n_kv_head)
    x = torch.randint(0, 37, (2, 13))
    source = torch.randint(0, 37, (2, 7)) if kind == "encoder-decoder" else None
    full, _ = model(x) if source is None else model(source, decoder_input_ids=x)
    for chunks in ([1] * 13, [4, 1, 5, 3], [13]):
        torch.testing.assert_close(decode_in_chunks(model, x, chunks, source), full, rtol=1e-5, atol=1e-5)


def test_encoder_decoder_cache_computes_cross_kv_once():
    model = build(kind="encoder-decoder")
    cache = model.new_kv_cache(1, 8)
    src = torch.randint(0, 37, (1, 5))
    model(src, decoder_input_ids=torch.tensor([[1]]), kv_cache=cache)
    cross = cache.cross_kv
    assert cross is not None and len(cross) == 2 and cross[0][0].shape == (1, 4, 5, 8)
    model(None, decoder_input_ids=torch.tensor([[2]]), kv_cache=cache)  # source no longer needed
    assert cache.cross_kv is cross and cache.length == 2
    cache.reset()
    assert cache.length == 0 and cache.cross_kv is None


def test_kv_cache_overflow_and_batch_mismatch_raise_and_leave_cache_unchanged():
    model = build()
    cache = model.new_kv_cache(1, 4)
    model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
    with pytest.raises(LmforgeError, match="holds 4 positions"):
        model(torch.tensor([[4, 5]]), kv_cache=cache)
    with pytest.raises(LmforgeError, match="batch size 1"):
        model(torch.tensor([[4], [5]]), kv_cache=cache)
    assert cache.length == 3
    with pytest.raises(LmforgeError, match="block_size=16"):
        model.new_kv_cache(1, 17)  # a learned table has 16 positions


# ---------------------------------------------------------------- positions against their papers


def test_rope_matches_complex_rotation_reference():
    D, n_pos, theta = 8, 11, 10000.0
    x = torch.randn(2, 3, n_pos, D, dtype=torch.float64)
    cos, sin = rope_tables(n_pos, D, theta)
    got = apply_rotary(x, cos.double(), sin.double())
    # Su et al. 2021 eq. 34: pair i of position p is multiplied by e^{i p theta^{-2i/D}}; our pairs
    # are (x[i], x[i + D/2]).
    want = torch.empty_like(x)
    for p in range(n_pos):
        for i in range(D // 2):
            angle = p * theta ** (-2 * i / D)
            rot = complex(math.cos(angle), math.sin(angle))
            z = torch.complex(x[..., p, i], x[..., p, i + D // 2]) * rot
            want[..., p, i], want[..., p, i + D // 2] = z.real, z.imag
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    D = 16
    cos, sin = rope_tables(40, D, 10000.0)
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)

    def score(m, n):
        return (
            apply_rotary(q, cos[m : m + 1], sin[m : m + 1]) * apply_rotary(k, cos[n : n + 1], sin[n : n + 1])
        ).sum()

    torch.testing.assert_close(score(7, 3), score(30, 26), rtol=1e-4, atol=1e-5)
    assert (score(7, 3) - score(7, 5)).abs() > 1e-4


def test_alibi_slopes_follow_press_et_al():
    # Power of two: 2^(-8/n), 2^(-16/n), ..., 2^-8.
    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]
    torch.testing.assert_close(alibi_slopes(16), torch.tensor([2.0 ** (-k / 2) for k in range(1, 17)]))
    # Otherwise: the 4-head slopes, then every other slope of the 8-head sequence.
    assert alibi_slopes(6).tolist() == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]


def test_alibi_bias_is_slope_times_distance():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, start=2, T=3, causal=True)  # queries at 2, 3, 4; keys 0..4
    assert bias.shape == (4, 3, 5)
    for h in range(4):
        for qi, i in enumerate(range(2, 5)):
            for j in range(5):
                want = -slopes[h].item() * (i - j) if j <= i else float("-inf")
                assert bias[h, qi, j].item() == pytest.approx(want)
    both = alibi_bias(slopes, start=0, T=4, causal=False)
    assert both[1, 0, 3].item() == pytest.approx(-slopes[1].item() * 3) == both[1, 3, 0].item()


def test_sinusoidal_table_matches_vaswani():
    table = sinusoidal_table(5, 6)
    for p in range(5):
        for i in range(3):
            assert table[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 6)), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 6)), abs=1e-6)


@pytest.mark.parametrize("pos,n_kv_head", [("rope", 2), ("alibi", 1), ("learned", None)])
def test_self_attention_matches_explicit_reference(pos, n_kv_head):
    """One attention layer against a loop over heads with softmax written out: checks the head
    grouping of GQA/MQA, RoPE on q and k, the ALiBi bias and the causal mask."""
    model = build(pos=pos, n_kv_head=n_kv_head)
    attn = model.blocks[0].attn
    T, H, D = 6, 4, 8
    x = torch.randn(1, T, 32)
    rope = model.pos_emb.rotary(0, T)
    mask = model.pos_emb.bias(0, T, causal=True)
    got = attn(x, rope, mask, mask is None, None)[0]
    q = attn.q_proj(x)[0].view(T, H, D)
    k = attn.k_proj(x)[0].view(T, -1, D)
    v = attn.v_proj(x)[0].view(T, -1, D)
    group = H // k.shape[1]
    angles = torch.outer(torch.arange(T).float(), 10000.0 ** (-torch.arange(0, D, 2).float() / D))

    def rot(t):  # (T, D): pair (t[i], t[i + D/2]) as a complex number times e^{i p theta_i}
        z = torch.complex(t[:, : D // 2], t[:, D // 2 :]) * torch.polar(torch.ones_like(angles), angles)
        return torch.cat([z.real, z.imag], dim=-1)

    heads = []
    for h in range(H):
        qh, kh, vh = q[:, h], k[:, h // group], v[:, h // group]  # query head h reads K/V head h // group
        if pos == "rope":
            qh, kh = rot(qh), rot(kh)
        scores = qh @ kh.T / math.sqrt(D)
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        if pos == "alibi":
            scores = scores - alibi_slopes(H)[h] * (i - j)
        scores = scores.masked_fill(j > i, float("-inf"))
        heads.append(F.softmax(scores, dim=-1) @ vh)
    want = attn.o_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- size, FLOPs, init, groups


def test_num_params_analytic_equals_counted_for_every_combination():
    combos = itertools.product(
        ["decoder", "encoder", "encoder-decoder"],
        POSITIONS,
        ["relu", "gelu", "silu", "swiglu", "geglu"],
        [None, 2, 1],
        ["layernorm", "rmsnorm"],
        ["pre", "post"],
        [True, False],
        [True, False],
    )
    for i, (kind, pos, act, kv, norm, place, bias, tie) in enumerate(combos):
        if i % 7:  # a deterministic seventh of the 2,880 combinations: every value of every option
            continue
        cfg = ModelConfig(
            kind=kind,
            pos=pos,
            activation=act,
            n_kv_head=kv,
            norm=norm,
            norm_position=place,
            bias=bias,
            tie_embeddings=tie,
            vocab_size=19,
            block_size=8,
            n_layer=2,
            n_encoder_layer=1 + i % 2,
            n_head=4,
            n_embd=16,
            ffn_hidden=None if i % 3 else 24,
        )
        model = Transformer(cfg)
        counted = sum(p.numel() for p in model.parameters())
        assert cfg.num_params() == model.num_params() == counted, cfg


def test_num_params_matches_published_models():
    gpt2 = ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert gpt2.num_params() == 124_439_808  # GPT-2 small as published by Hugging Face
    llama = ModelConfig(
        vocab_size=128256,
        block_size=2048,
        n_layer=16,
        n_head=32,
        n_kv_head=8,
        n_embd=2048,
        ffn_hidden=8192,
        activation="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
    )
    assert llama.num_params() == 1_235_814_400  # Llama 3.2 1B


def test_flops_per_token_formula():
    cfg = tiny(tie_embeddings=False)  # learned positions, untied: both tables are lookups
    parts = cfg.param_breakdown()
    n = cfg.num_params() - parts["pos_emb"] - parts["tok_emb"]
    assert cfg.flops_per_token(16) == 6 * n + 12 * 2 * 32 * 16
    tied = tiny(pos="rope")  # no position table; the tied table is the output matmul
    assert tied.flops_per_token(10) == 6 * tied.num_params() + 12 * 2 * 32 * 10
    gpt2 = ModelConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    nanogpt_n = gpt2.num_params() - 1024 * 768  # nanoGPT's get_num_params(non_embedding=True)
    assert gpt2.flops_per_token(1024) == 6 * nanogpt_n + 12 * 12 * 768 * 1024
    s2s = tiny(kind="encoder-decoder", n_encoder_layer=3, pos="alibi")
    assert s2s.flops_per_token(8) == 6 * s2s.num_params() + 12 * (3 + 2 * 2) * 32 * 8


def test_param_groups_cover_every_parameter_once():
    for overrides in (
        {},
        {"tie_embeddings": False, "bias": False},
        {"kind": "encoder-decoder", "norm": "rmsnorm"},
    ):
        model = build(**overrides)
        groups = model.param_groups(0.1)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
        decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
        matmul = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
        assert decayed == matmul  # all Linear weights (incl. a tied token table), nothing else
        torch.optim.AdamW(groups, lr=1e-3)  # accepted as they are
    untied = build(tie_embeddings=False)
    no_decay = {id(p) for g in untied.param_groups(0.1) if g["weight_decay"] == 0 for p in g["params"]}
    assert id(untied.tok_emb.weight) in no_decay and id(untied.pos_emb.weight) in no_decay


def test_init_scales_residual_projections_and_ties_embeddings():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=256))
    assert model.lm_head.weight is model.tok_emb.weight
    assert "lm_head.weight" not in dict(model.named_parameters())
    params = dict(model.named_parameters())

    def std(name):
        return params[name].std().item()

    assert std("blocks.0.attn.q_proj.weight") == pytest.approx(0.02, rel=0.05)
    assert std("blocks.3.attn.o_proj.weight") == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert std("blocks.3.mlp.down_proj.weight") == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    untied = build(tie_embeddings=False, bias=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert not any(name.endswith("bias") for name, _ in untied.named_parameters())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"n_embd": 30, "n_head": 4}, "n_head=4 does not divide model.n_embd=30"),
        ({"n_kv_head": 3}, "n_kv_head=3 must divide model.n_head=4"),
        ({"pos": "rope", "n_embd": 12, "n_head": 4}, "RoPE needs an even head dim"),
        ({"activation": "tanh"}, "model.activation='tanh' is not one of"),
        ({"attn_dropout": 1.0}, "attn_dropout must be in"),
    ],
)
def test_bad_shapes_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Transformer(tiny(**overrides))


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_sequence_longer_than_position_table_raises(pos):
    model = build(pos=pos)
    with pytest.raises(LmforgeError, match=f"17 tokens is longer than model.block_size=16.*{pos}"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("pos", ["rope", "alibi"])
def test_relative_positions_extrapolate_past_block_size(pos):
    model = build(pos=pos)
    x = torch.randint(0, 37, (1, 24))
    long_logits, _ = model(x)
    short_logits, _ = model(x[:, :16])
    torch.testing.assert_close(long_logits[:, :16], short_logits, rtol=1e-5, atol=1e-5)


def test_wrong_call_shapes_raise():
    with pytest.raises(LmforgeError, match="needs decoder_input_ids"):
        build(kind="encoder-decoder")(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(LmforgeError, match="decoder_input_ids is for encoder-decoder"):
        build()(torch.zeros(1, 4, dtype=torch.long), decoder_input_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(LmforgeError, match="cannot decode with a KV cache"):
        build(kind="encoder").new_kv_cache(1, 8)
    with pytest.raises(LmforgeError, match=r"\(batch, time\)"):
        build()(torch.zeros(4, dtype=torch.long))
    assert isinstance(build().new_kv_cache(2), KVCache)


def test_loss_is_mean_cross_entropy_over_unignored_targets():
    model = build(kind="encoder")
    x = torch.randint(0, 37, (2, 8))
    targets = torch.full_like(x, -100)
    targets[0, 3], targets[1, 5] = 7, 11
    logits, loss = model(x, targets)
    want = (
        F.cross_entropy(logits[0, 3], torch.tensor(7)) + F.cross_entropy(logits[1, 5], torch.tensor(11))
    ) / 2
    assert logits.shape == (2, 8, 37)
    torch.testing.assert_close(loss, want)
