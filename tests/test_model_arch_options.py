"""QK-norm, ReLU² and logit soft-capping (issue 19 part 3), each against its paper's formula, with
the usual model tests (causality, KV-cache decoding, gradients), the planner's memory terms checked
against the tensors autograd really keeps, and soft-capping seen by evaluation and sampling alike."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.eval.lm import LmforgeLM
from lmforge.eval.loglik import loglikelihood_tokens
from lmforge.model import ModelConfig, Transformer
from lmforge.model.config import ACTIVATIONS
from lmforge.model.positions import apply_rotary
from lmforge.model.transformer import MLP, GatedMLP, relu2, soft_cap
from lmforge.plan.memory import activation_elements

V = 37


def build(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    base = {"vocab_size": V, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32}
    return Transformer(ModelConfig(**{**base, **overrides})).eval()


def perturb_norms(model: Transformer) -> Transformer:
    """Untrained gains are 1 and biases 0; perturb them so a test sees them used."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


VARIANTS = {
    "qk_norm-rope-rmsnorm": {
        "qk_norm": True,
        "pos": "rope",
        "norm": "rmsnorm",
        "n_kv_head": 2,
        "bias": False,
    },
    "qk_norm-learned-layernorm": {"qk_norm": True},
    "qk_norm-alibi-post": {"qk_norm": True, "pos": "alibi", "norm_position": "post"},
    "relu2": {"activation": "relu2"},
    "softcap": {"logit_softcap": 2.0, "init_std": 0.5},
    "all-three": {
        "qk_norm": True,
        "activation": "relu2",
        "logit_softcap": 3.0,
        "pos": "rope",
        "norm": "rmsnorm",
    },
}


# ---------------------------------------------------------------- the formulas


def test_qk_norm_normalises_each_head_before_rope():
    """Layer 0's attention output written out: q, k each RMS-normalised over the head dim with one
    gain vector shared by the heads, then rotated (Qwen3's order), then softmax(qk^T/sqrt(D)) v."""
    model = perturb_norms(build(qk_norm=True, pos="rope", norm="rmsnorm", bias=False, n_kv_head=2))
    attn = model.blocks[0].attn
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (8,)  # head_dim, not n_embd
    x = torch.randn(2, 9, 32)
    B, T, H, Hkv, D = 2, 9, 4, 2, 8
    rope = model.pos_emb.rotary(0, T, None)
    got = attn(x, rope, None, True, None)

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + model.cfg.norm_eps) * w

    q = rms(attn.q_proj(x).view(B, T, H, D).transpose(1, 2), attn.q_norm.weight)
    k = rms(attn.k_proj(x).view(B, T, Hkv, D).transpose(1, 2), attn.k_norm.weight)
    q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    v = attn.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(
        ~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf
    )
    want = attn.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 100.0))
def test_qk_norm_makes_attention_blind_to_the_scale_of_q_and_k(scale):
    """RMSNorm is scale invariant, so scaling W_q and W_k (no biases) changes nothing with QK-norm
    (up to norm_eps), and does change the logits without it: the attention logits stay bounded."""
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(0))
    for qk_norm in (True, False):
        model = build(qk_norm=qk_norm, norm="rmsnorm", pos="rope", bias=False, norm_eps=1e-12)
        before = model(ids)[0]
        with torch.no_grad():
            for block in model.blocks:
                block.attn.q_proj.weight.mul_(scale)
                block.attn.k_proj.weight.mul_(scale)
        after = model(ids)[0]
        if qk_norm:
            torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
        elif abs(scale - 1) > 0.2:
            assert (after - before).abs().max() > 1e-4


def test_relu2_is_relu_squared_with_its_gradient():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64, requires_grad=True)
    y = relu2(x)
    torch.testing.assert_close(y, torch.where(x > 0, x * x, torch.zeros_like(x)))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, 2 * x.detach().clamp(min=0))  # d/dx relu(x)^2 = 2 relu(x)
    mlp = build(activation="relu2").blocks[0].mlp
    h = torch.randn(2, 5, 32)
    torch.testing.assert_close(mlp(h), mlp.down_proj(F.relu(mlp.up_proj(h)) ** 2))
    assert ModelConfig(activation="relu2").hidden_dim == 4 * 256  # ungated: the full 4d width


def test_softcap_is_cap_tanh_of_the_uncapped_logits_and_the_loss_uses_it():
    capped = build(logit_softcap=2.0, init_std=0.5)
    plain = build(init_std=0.5)
    plain.load_state_dict(capped.state_dict())  # the same weights; softcap holds no parameters
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    raw, _ = plain(ids)
    assert raw.abs().max() > 4.0  # large enough for the cap to matter
    logits, loss = capped(ids, ids)
    torch.testing.assert_close(logits, 2.0 * torch.tanh(raw / 2.0))
    assert logits.abs().max() < 2.0
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, V), ids.view(-1)))
    last, _ = capped(ids, last_only=True)
    torch.testing.assert_close(last, logits[:, -1:])


def test_softcap_gradient_is_the_formulas():
    """soft_cap works partly in place (one V-wide tensor fewer); its gradient is still sech^2(x/c)."""
    x = (5 * torch.randn(40, 60, generator=torch.Generator().manual_seed(5))).requires_grad_()
    g = torch.randn(40, 60)
    soft_cap(x, 2.0).backward(g)
    torch.testing.assert_close(x.grad, g / torch.cosh(x.detach() / 2.0) ** 2)


def test_softcap_in_bf16_keeps_its_bound():
    model = build(logit_softcap=30.0, init_std=2.0).to(torch.bfloat16)
    logits, _ = model(torch.randint(0, V, (2, 12)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all() and logits.abs().max() <= 30.0


# ---------------------------------------------------------------- the usual model tests, per option


@pytest.mark.parametrize("name", VARIANTS)
def test_decoder_never_looks_ahead(name):
    model = perturb_norms(build(**VARIANTS[name]))
    x = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(2))
    for t in (0, 5, 11):
        y = x.clone()
        y[:, t:] = (y[:, t:] + 1 + torch.randint(0, 30, y[:, t:].shape)) % V
        a, b = model(x)[0], model(y)[0]
        torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-5)
        assert (a[:, t] - b[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["decoder", "encoder-decoder"])
@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cache_decoding_equals_full_forward(name, kind):
    model = perturb_norms(build(kind=kind, **VARIANTS[name]))
    x = torch.randint(0, V, (2, 13), generator=torch.Generator().manual_seed(3))
    source = torch.randint(0, V, (2, 7)) if kind == "encoder-decoder" else None
    full = model(x)[0] if source is None else model(source, decoder_input_ids=x)[0]
    for chunks in ([1] * 13, [4, 1, 5, 3]):
        cache, outs, s = model.new_kv_cache(2, 16), [], 0
        for c in chunks:
            piece = x[:, s : s + c]
            s += c
            kw = {"kv_cache": cache} if source is None else {"decoder_input_ids": piece, "kv_cache": cache}
            outs.append(model(piece if source is None else source, **kw)[0])
        torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_left_padded_batch_rows_equal_their_unpadded_runs(name):
    """Batched generation's path (left-padded rows through the cache) sees the options too."""
    model = perturb_norms(build(**VARIANTS[name]))
    a, b = [3, 4, 5, 6, 7], [8, 9, 10]
    cache = model.new_kv_cache(2, 8, pad=[0, 2])
    batch = torch.tensor([a, [0, 0] + b])
    got = model(batch, kv_cache=cache)[0]
    torch.testing.assert_close(got[0], model(torch.tensor([a]))[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, 2:], model(torch.tensor([b]))[0][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_gets_a_gradient(name):
    model = build(**VARIANTS[name]).train()
    x = torch.randint(0, V, (4, 13), generator=torch.Generator().manual_seed(4))
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    if model.cfg.qk_norm:
        assert {"blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.weight"} <= dict(
            model.named_parameters()
        ).keys()


@pytest.mark.parametrize("name", VARIANTS)
def test_analytic_parameter_count_matches(name):
    for kind in ("decoder", "encoder-decoder"):
        model = build(kind=kind, **VARIANTS[name])
        assert model.cfg.num_params() == model.num_params()


def test_options_off_add_no_parameters():
    keys = build().state_dict().keys()
    assert not any("q_norm" in k or "k_norm" in k for k in keys)
    assert build(logit_softcap=30.0).state_dict().keys() == keys


# ---------------------------------------------------------------- evaluation and sampling see the cap


def test_evaluation_scores_the_capped_logits():
    from lmforge.tiny import tiny_tokenizer

    tok = tiny_tokenizer(vocab_size=300, documents=40)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size,
            block_size=32,
            n_layer=1,
            n_head=2,
            n_embd=32,
            init_std=0.5,
            logit_softcap=2.0,
        )
    ).eval()
    ctx, cont = [5, 9, 17, 30, 44], [61, 7, 120]
    (scored,) = loglikelihood_tokens(LmforgeLM(model, tok), [(ctx, cont)])
    with torch.no_grad():
        logp = model(torch.tensor([ctx + cont]))[0].log_softmax(-1)[0]
    want = sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
    assert scored.ll == pytest.approx(want, abs=1e-4)


def test_sampling_draws_from_the_capped_distribution():
    """At temperature 1 the first sampled token follows softmax(capped logits): with a tiny cap the
    distribution is nearly uniform, which the uncapped logits (init_std 2) are far from."""
    from lmforge.serve.config import SampleConfig
    from lmforge.serve.generate import generate_tokens

    model = build(logit_softcap=0.05, init_std=2.0)
    counts = torch.zeros(V)
    for seed in range(300):
        cfg = SampleConfig(max_new_tokens=1, temperature=1.0, top_k=None, top_p=1.0, seed=seed)
        counts[next(iter(generate_tokens(model, [1, 2, 3], cfg)))] += 1
    assert (counts > 0).sum() > 0.8 * V  # near uniform: almost every token drawn at least once


# ---------------------------------------------------------------- the planner's memory terms


def saved_per_token(module_call, params, tokens: int, width: int | None = None) -> float:
    """Values autograd keeps for backward during `module_call()`, per token (parameters excluded,
    each storage once; only tensors whose last dim is `width` when given)."""
    seen: dict[int, int] = {}
    skip = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip and (width is None or (t.dim() > 0 and t.shape[-1] == width)):
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes() // t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module_call()
    return sum(seen.values()) / tokens


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_saved_values_per_hidden_unit_are_what_autograd_keeps(name):
    cfg = ModelConfig(
        activation=name, n_embd=32, n_head=4, ffn_hidden=96, vocab_size=50, block_size=16, n_layer=1
    )
    mlp = Transformer(cfg).blocks[0].mlp
    assert isinstance(mlp, GatedMLP if cfg.is_glu else MLP)
    x = torch.randn(2, 16, 32, requires_grad=True)
    saved = saved_per_token(lambda: mlp(x), mlp.parameters(), 32, width=96)
    assert saved == cfg.act.saved_per_hidden * 96


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_planner_qk_norm_term_is_close_to_what_autograd_keeps(norm, pos):
    measured, planned = {}, {}
    for qk in (False, True):
        cfg = ModelConfig(
            vocab_size=50,
            block_size=64,
            n_layer=1,
            n_head=4,
            n_kv_head=2,
            n_embd=64,
            ffn_hidden=96,
            norm=norm,
            pos=pos,
            qk_norm=qk,
        )
        model = Transformer(cfg).train()
        h = torch.randn(2, 64, 64, requires_grad=True)
        rope = model.pos_emb.rotary(0, 64, None)
        measured[qk] = saved_per_token(
            lambda m=model, h=h, r=rope: m.blocks[0](h, r, None, True), model.parameters(), 128
        )
        planned[qk] = activation_elements(cfg, 64)["layer"]
    extra_measured, extra_planned = measured[True] - measured[False], planned[True] - planned[False]
    assert extra_measured > 0
    assert abs(extra_planned / extra_measured - 1) < 0.2, (extra_planned, extra_measured)


def test_planner_softcap_term_is_what_autograd_keeps():
    measured, planned = {}, {}
    for cap in (None, 15.0):
        cfg = ModelConfig(vocab_size=300, block_size=64, n_layer=1, n_head=4, n_embd=64, logit_softcap=cap)
        model = Transformer(cfg).train()
        h = torch.randn(2, 64, 64, requires_grad=True)
        y = torch.randint(0, 300, (128,))
        measured[cap] = saved_per_token(
            lambda m=model, h=h, y=y: F.cross_entropy(m.logits(h).flatten(0, 1), y),
            model.parameters(),
            128,
            width=300,
        )
        planned[cap] = activation_elements(cfg, 64)["head"]  # V-sized values per token
    assert measured[15.0] - measured[None] == pytest.approx(planned[15.0] - planned[None]) == 300
