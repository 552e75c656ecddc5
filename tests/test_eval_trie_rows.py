"""Token-trie rows in the log-likelihood engine: requests whose model inputs share a token prefix
(a fixed few-shot prefix, one context's continuations, continuations sharing their first tokens)
run it once, and every score equals the request run whole, for any batch size and request order."""

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.errors import LmforgeError
from lmforge.eval.loglik import loglikelihood_tokens
from lmforge.eval.trie_rows import plan_rows, row_tensors
from lmforge.tiny import tiny_lmforge, tiny_tokenizer

TOK = st.integers(10, 200)  # clear of the padding (1) and end-of-text (0) ids


@pytest.fixture(scope="module")
def lm():
    return tiny_lmforge(tiny_tokenizer(), block_size=48, n_layer=1, n_embd=16)


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    from lmforge.tiny import tiny_gpt2

    return tiny_gpt2(tiny_tokenizer(), n_positions=64, n_layer=2, n_embd=32)


@st.composite
def request_sets(draw):
    """A shared few-shot prefix, documents with their own context, choices that share prefixes with
    each other, single-token choices, documents long enough to be truncated, empty-context requests
    as the engine forms them ([prefix token] + continuation) and duplicates."""
    prefix = draw(st.lists(TOK, max_size=20))
    pairs = []
    for _ in range(draw(st.integers(1, 5))):
        ctx = prefix + draw(st.lists(TOK, min_size=1, max_size=draw(st.sampled_from([8, 70]))))
        base = draw(st.lists(TOK, min_size=1, max_size=8))
        for _ in range(draw(st.integers(1, 4))):
            keep = draw(st.integers(0, len(base)))
            cont = base[:keep] + draw(st.lists(TOK, min_size=0 if keep else 1, max_size=6))
            pairs.append((ctx, cont))
    pairs += [([0], draw(st.lists(TOK, min_size=1, max_size=10))) for _ in range(draw(st.integers(0, 2)))]
    pairs += draw(st.lists(st.sampled_from(pairs), max_size=2))  # duplicates
    return pairs


def _check_same(got, want):
    assert [x.ll for x in got] == pytest.approx([x.ll for x in want], abs=1e-4)
    assert [x.greedy for x in got] == [x.greedy for x in want]


@pytest.mark.parametrize("backend", ["lm", "hf"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=request_sets(), batch=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_trie_rows_score_as_whole_requests(request, backend, pairs, batch, seed):
    model = request.getfixturevalue(backend)
    assert model.packs_prefixes()
    want = loglikelihood_tokens(model, pairs, 4, share_prefix=False)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    got = loglikelihood_tokens(model, [pairs[i] for i in order], batch)
    _check_same([got[order.index(i)] for i in range(len(pairs))], want)


def _trie_nodes(inputs):
    """Distinct prefixes of the inputs: the positions one trie over all of them runs."""
    return len({tuple(s[: k + 1]) for s in inputs for k in range(len(s))})


def test_a_shared_few_shot_prefix_runs_once_per_row(lm):
    """5-shot-like: a 60-token prefix of examples, 10 documents, 4 single-token choices each."""
    big = tiny_lmforge(tiny_tokenizer(), block_size=256, n_layer=1, n_embd=16)
    rnd = random.Random(0)
    prefix = [rnd.randrange(10, 200) for _ in range(60)]
    docs = [[10 + d] + [rnd.randrange(10, 200) for _ in range(rnd.randint(5, 14))] for d in range(10)]
    pairs = [(prefix + doc, [20 + c]) for doc in docs for c in range(4)]
    new, whole = {}, {}
    _check_same(
        loglikelihood_tokens(big, pairs, 4, stats=new),
        loglikelihood_tokens(big, pairs, 4, share_prefix=False, stats=whole),
    )
    assert new["positions_real"] == 60 + sum(map(len, docs))  # one row: the prefix once, each document once
    assert new["positions_real"] == _trie_nodes([c for c, _ in pairs])
    old = sum(len(prefix) + len(doc) for doc in docs)  # the previous engine: each distinct context once
    assert new["positions_real"] < old == whole["positions_real"]
    assert new["positions_padded"] <= whole["positions_padded"]
    # a smaller context splits the documents over rows, each repeating the prefix: still fewer positions
    small = {}
    _check_same(
        loglikelihood_tokens(lm, pairs, 4, stats=small),
        loglikelihood_tokens(lm, pairs, 4, share_prefix=False),
    )
    assert small["positions_real"] <= sum(min(len(c), 48) for c, _ in pairs[::4])


def test_continuations_sharing_a_prefix_share_positions(hf):
    """PIQA-like: two solutions that differ in one token near the end."""
    ctx = [11, 12, 13, 14]
    right = [30, 31, 32, 33, 34, 35, 36, 37]
    wrong = right[:6] + [50, 37]
    st_ = {}
    pairs = [(ctx, right), (ctx, wrong)]
    _check_same(
        loglikelihood_tokens(hf, pairs, 2, stats=st_), loglikelihood_tokens(hf, pairs, 2, share_prefix=False)
    )
    assert st_["positions_real"] == len(ctx) + 7 + 1  # the shared 6 tokens once, then one branch of 1 + 1


def test_an_empty_context_is_one_clear_error(lm):
    with pytest.raises(LmforgeError, match="empty context"):
        loglikelihood_tokens(lm, [([], [11, 12])])


def test_requests_sharing_only_a_couple_of_tokens_get_rows_of_their_own():
    a = [5, 6, 7, 8, 9, 10, 11]
    b = [5, 6, 20, 21, 22, 23, 24]  # shares 2 of 7 tokens, and not its context
    assert len(plan_rows([a, b], [1, 1], 64)) == 2
    assert len(plan_rows([a, b], [6, 6], 64)) == 1  # context [5, 6] (s = ctx + cont[:-1]) shared whole
    c = [5, 6, 7, 8, 30, 31]  # shares 4 of its 6 tokens: at least half
    assert len(plan_rows([a, c], [1, 1], 64)) == 1
    assert len(plan_rows([a, c], [1, 1], 9)) == 1  # 7 + 2 new nodes fit in 9, but...
    assert len(plan_rows([a, c], [1, 1], 8)) == 2  # ...not in 8


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=12),
    data=st.data(),
)
def test_rows_are_tries_of_the_inputs(inputs, data):
    """Each request's scored nodes end a root path spelling its input; nodes sit at their depth and see
    exactly their ancestors; rows fit; the plan does not depend on the order of the requests."""
    k = [data.draw(st.integers(1, len(s))) for s in inputs]
    rows = plan_rows(inputs, k, 16)
    assert sorted(i for row in rows for i, _ in row.picks) == list(range(len(inputs)))
    _, pos, keep = row_tensors(rows)
    for r, row in enumerate(rows):
        assert len(row) <= 16
        for i, nodes in row.picks:
            path, n = [], nodes[-1]
            while n != -1:
                path.append(n)
                n = row.parent[n]
            path.reverse()
            assert [row.tokens[n] for n in path] == list(inputs[i])
            assert nodes == path[len(inputs[i]) - k[i] :]
            assert pos[r, path].tolist() == list(range(len(path)))
            assert keep[r, nodes[-1]].nonzero()[:, 0].tolist() == path
        assert torch.equal(keep[r].diagonal(), torch.ones(keep.shape[1], dtype=torch.bool))
    perm = data.draw(st.permutations(range(len(inputs))))
    again = plan_rows([inputs[i] for i in perm], [k[i] for i in perm], 16)
    assert [(r.tokens, r.parent) for r in again] == [(r.tokens, r.parent) for r in rows]
