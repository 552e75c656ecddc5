"""The log-likelihood engine against direct computations on tiny random models."""

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.eval.cache import ResultCache
from lmforge.eval.loglik import (
    Encoder,
    loglikelihood,
    loglikelihood_rolling_tokens,
    loglikelihood_tokens,
    rolling_windows,
)
from lmforge.tiny import tiny_lmforge, tiny_tokenizer


@pytest.fixture(scope="module")
def lm():
    return tiny_lmforge(tiny_tokenizer(), block_size=32)


def direct(lm, ctx, cont):
    """log P(cont | ctx) from one plain forward over (ctx + cont)[-(L+1):][:-1] (lm-eval's input)."""
    inp = (ctx + cont)[-(lm.max_length + 1) :][:-1]
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([inp]))
    lp = torch.log_softmax(logits[0].float(), -1)[len(inp) - len(cont) :]
    t = torch.tensor(cont)
    return float(lp.gather(1, t[:, None]).sum()), bool((lp.argmax(-1) == t).all())


REQUESTS = [
    ("Question: Why is the sky blue?\nAnswer:", " Rayleigh scattering of light"),
    ("Question: Why is the sky blue?\nAnswer:", " because"),
    ("Question: Why is the sky blue?\nAnswer:", " it reflects the sea"),
    ("The letter is", " B"),
    ("The letter is ", "C"),  # trailing space moves to the continuation
    ("", "An empty context scores from the end-of-text token"),
    ("x " * 40, " a context longer than the model's window"),  # left truncation
    ("y " * 40, " Z"),
]


def test_encode_pair_whitespace_move_and_joint_split(lm):
    enc = Encoder(lm)
    ctx, cont = enc.pair("The letter is ", "C")
    assert ctx == lm.encode("The letter is") and ctx + cont == lm.encode("The letter is C")
    ctx, cont = enc.pair("", "Hello")
    assert ctx == [lm.prefix_token_id] and cont == lm.encode("Hello")


@pytest.mark.parametrize("share", [True, False])
def test_engine_equals_direct_forward(lm, share):
    enc = Encoder(lm)
    got = loglikelihood(lm, REQUESTS, batch_size=3, share_prefix=share)
    for (c, x), s in zip(REQUESTS, got):
        ll, greedy = direct(lm, *enc.pair(c, x))
        assert s.ll == pytest.approx(ll, abs=1e-4) and s.greedy == greedy


def test_scores_do_not_depend_on_batch_size(lm):
    from lmforge.eval import evaluate, get_tasks

    try:
        tasks = get_tasks("arc_easy") + get_tasks("mmlu_anatomy") + get_tasks("truthfulqa_mc2")
    except LmforgeError:
        pytest.skip("benchmark data not found")
    one = evaluate(lm, tasks, limit=6, batch_size=1, log_samples=True, progress=False)
    many = evaluate(lm, tasks, limit=6, batch_size=16, log_samples=True, progress=False)
    for name in one["tasks"]:
        assert one["tasks"][name]["metrics"] == many["tasks"][name]["metrics"]
        for a, b in zip(one["tasks"][name]["samples"], many["tasks"][name]["samples"]):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-4)


def test_greedy_flag_on_a_continuation_the_model_predicts(lm):
    ctx = lm.encode("Once upon a time")
    with torch.no_grad():
        nxt = int(lm.model(torch.tensor([ctx]))[0][0, -1].argmax())
    (s,) = loglikelihood_tokens(lm, [(ctx, [nxt])])
    assert s.greedy


def test_too_long_continuation_is_a_user_error(lm):
    with pytest.raises(LmforgeError, match="longer than the model's context"):
        loglikelihood_tokens(lm, [([1, 2], list(range(7, 7 + 40)))])


def test_rolling_windows_cover_each_token_once_like_lm_eval():
    toks = list(range(10, 33))  # 23 tokens, window 8
    wins = rolling_windows(toks, 0, 8)
    assert [k for _, k in wins] == [8, 8, 7]
    assert wins[0][0] == [0] + toks[:7] and wins[1][0] == toks[7:15] and wins[2][0] == toks[14:22]
    lm_utils = pytest.importorskip("lm_eval.utils")
    ref = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(toks, 0, 8, 1)]
    for (inp, k), (a, b) in zip(wins, ref):
        assert inp == (a + b)[-(8 + 1) :][:-1] and k == len(b)  # the model input lm-eval feeds


def test_rolling_loglikelihood_equals_direct_computation(lm):
    L = lm.max_length
    toks = lm.encode("The quick brown fox jumps over the lazy dog. " * 6)
    assert len(toks) > 2 * L
    z = [lm.prefix_token_id] + toks  # token i of the document is z[i+1]
    want, start = 0.0, 0
    while start < len(toks):  # every window ends at a multiple of L (or the end) and sees <= L tokens
        end = min(start + L, len(toks))
        inp = z[max(0, end - L) : end]
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(torch.tensor([inp]))[0][0].float(), -1)
        tgt = toks[start:end]
        want += float(lp[len(inp) - len(tgt) :].gather(1, torch.tensor(tgt)[:, None]).sum())
        start = end
    short = toks[:10]
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(torch.tensor([z[:10]]))[0][0].float(), -1)
    want_short = float(lp.gather(1, torch.tensor(short)[:, None]).sum())
    got = loglikelihood_rolling_tokens(lm, [toks, short], batch_size=2)
    assert got == pytest.approx([want, want_short], abs=1e-3)
    assert loglikelihood_rolling_tokens(lm, [toks], batch_size=1) == pytest.approx([want], abs=1e-3)


def test_result_cache_makes_a_rerun_free(lm, tmp_path):
    with ResultCache(tmp_path / "c.sqlite") as cache:
        first = loglikelihood(lm, REQUESTS, cache=cache)
    with ResultCache(tmp_path / "c.sqlite") as cache:
        again = loglikelihood(lm, REQUESTS, cache=cache)
        assert cache.hits == len(REQUESTS)
    assert [s.ll for s in again] == pytest.approx([s.ll for s in first], abs=1e-6)


def test_hf_backend_shared_prefix_equals_full_forward():
    pytest.importorskip("transformers")
    from lmforge.tiny import tiny_gpt2

    hf = tiny_gpt2(tiny_tokenizer(), n_positions=32)
    enc = Encoder(hf)
    shared = loglikelihood(hf, REQUESTS, batch_size=4)
    flat = loglikelihood(hf, REQUESTS, batch_size=4, share_prefix=False)
    for (c, x), a, b in zip(REQUESTS, shared, flat):
        ctx, cont = enc.pair(c, x)
        inp = (ctx + cont)[-(hf.max_length + 1) :][:-1]
        with torch.no_grad():
            logits = hf.model(torch.tensor([inp])).logits[0]
        lp = torch.log_softmax(logits.float(), -1)[len(inp) - len(cont) :]
        ll = float(lp.gather(1, torch.tensor(cont)[:, None]).sum())
        assert a.ll == pytest.approx(ll, abs=1e-4) and b.ll == pytest.approx(ll, abs=1e-4)
