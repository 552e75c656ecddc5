"""The log-likelihood engine: log P(continuation | context) and rolling document log-likelihoods.

Semantics follow lm-evaluation-harness 0.4 exactly (`lm_eval/api/model.py: TemplateLM._encode_pair,
loglikelihood`; `lm_eval/models/huggingface.py: _loglikelihood_tokens`; `lm_eval/utils.py:
get_rolling_token_windows, make_disjoint_window`; summarised in docs/eval-semantics.md §1.2,
§1.4):

- trailing whitespace of the context moves to the front of the continuation;
- continuation tokens = enc(context + continuation)[len(enc(context)):] (the joint split);
- an empty context becomes [prefix token] (BOS, else end-of-text);
- model input = (ctx + cont)[-(max_length + 1):][:-1] (left truncation; the continuation is kept);
- answer = (sum of the continuation's token log-probs, every token is the argmax).

How it is computed is ours, and faster (§7 of the notes): positions shared by several requests run
once, only scored positions go through the output layer, batches are sorted by length, every
string is tokenised once, and a result cache skips requests seen before.

Backends that take a packed-row mask (`LM.packs_prefixes`: lmforge's and transformers' models, not
those with ALiBi or a sliding window) run every request as lm-eval feeds it (truncation included),
packed into token tries (`trie_rows`): requests whose inputs share a prefix (a fixed few-shot
prefix, one context's continuations, continuations sharing their first tokens) run it once, each
token at the position it would have alone and attending to its ancestors only; rows of any shape
batch together, longest first, and a batch without branching is a plain causal forward.

Other backends take three paths (`share_prefix=False`: the first and the last, whole requests):
single-token continuations (MMLU letters) need only their context's last position, one row per
distinct context; a shared context runs once through the KV cache (`LM.hidden_shared`) with its
continuations after it, contexts of equal length batched together, and since that path costs more
per position (two model calls, a cache reorder, small batches) only where the context once plus
the continuations padded to their longest, weighted by SHARED_COST, is fewer positions than every
request whole (PIQA-like groups go the whole way); everything else runs whole, as lm-eval batches
it. Either way the grouping depends on the requests alone, so scores do not depend on the batch
size or order. `stats` receives the positions run through the model (padded and real) and the
seconds spent in model calls.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lmforge.errors import LmforgeError
from lmforge.eval.lm import LM
from lmforge.eval.trie_rows import TrieRow, plan_rows, row_tensors

Progress = Callable[[int], None]  # called with the number of requests just finished
# A position on the shared path (small equal-length batches, two model calls, a KV-cache reorder)
# costs about 1.5 positions of whole requests (bench/eval_shapes.py, HF GPT-2 on CPU): sharing must
# save more than that.
SHARED_COST = 1.5
# A packed batch is cut where a row is shorter than this fraction of the batch's longest: padding
# stays under ~1/PACK_SPLIT - 1 of a batch at the price of a few smaller batches.
PACK_SPLIT = 0.85


@dataclass
class Scored:
    ll: float  # sum of the continuation's token log-probs (nats)
    greedy: bool  # every continuation token is the argmax

    def __iter__(self):  # unpacks like lm-eval's (ll, is_greedy) tuples
        return iter((self.ll, self.greedy))


class Encoder:
    """Tokenises each distinct string once."""

    def __init__(self, lm: LM):
        self.lm = lm
        self.memo: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self.memo.get(text)
        if ids is None:
            ids = self.memo[text] = self.lm.encode(text)
        return ids

    def prefetch(self, requests: Sequence[tuple[str, str]]) -> None:
        """Encode every string `pair` will need in one batch call (the tokenizer's thread pool)."""
        need = set()
        for context, continuation in requests:
            if context == "":
                need.add(continuation)
                continue
            n_spaces = len(context) - len(context.rstrip())
            ctx = context[:-n_spaces] if n_spaces else context
            need.update((ctx, context + continuation))
        todo = [t for t in need if t not in self.memo]
        for t, ids in zip(todo, self.lm.encode_batch(todo)):
            self.memo[t] = ids

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) with lm-eval's whitespace move and joint split."""
        if context == "":
            cont = self(continuation)
            if not cont:
                raise LmforgeError("empty continuation: nothing to score")
            p = self.lm.prefix_token_id
            return ([p], cont) if cont[0] != p else (cont[:1], cont[1:])
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self(context + continuation)
        ctx = self(context)
        return ctx, whole[len(ctx) :]


def score_rows(lm: LM, h: torch.Tensor, targets: list[int], lengths: list[int]) -> list[Scored]:
    """Project hidden rows (N, C) predicting `targets` (N,); sum each consecutive segment."""
    logits = lm.head(h).float()  # (N, V); log-softmax in fp32 whatever the model dtype
    logp = torch.log_softmax(logits, dim=-1)
    t = torch.tensor(targets, device=logits.device)
    tok_lp = logp.gather(1, t[:, None])[:, 0]
    hit = logits.argmax(dim=-1) == t
    out, start = [], 0
    for n in lengths:
        out.append(Scored(float(tok_lp[start : start + n].sum()), bool(hit[start : start + n].all())))
        start += n
    return out


def _pad(rows: Sequence[Sequence[int]], device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return x.to(device)


def _request_key(fp: str, ctx: list[int], cont: list[int]) -> str:
    return hashlib.sha256(f"{fp}|{ctx}|{cont}".encode()).hexdigest()


@torch.inference_mode()
def loglikelihood(
    lm: LM,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 16,
    *,
    share_prefix: bool = True,
    cache=None,
    progress: Progress | None = None,
    encoder: Encoder | None = None,
    stats: dict | None = None,
) -> list[Scored]:
    """Score (context, continuation) string pairs; results in request order. `stats` (if given)
    receives "truncated": how many requests were cut to the model's context."""
    enc = encoder or Encoder(lm)
    enc.prefetch(requests)
    pairs = [enc.pair(c, x) for c, x in requests]
    if stats is not None:
        stats["truncated"] = sum(len(c) + len(x) > lm.max_length + 1 for c, x in pairs)
    return loglikelihood_tokens(
        lm, pairs, batch_size, share_prefix=share_prefix, cache=cache, progress=progress, stats=stats
    )


class _Meter:
    """Counts positions through the model (padded, real) and the seconds of model calls: wall-clock,
    and CPU time of the calling thread (what the calls cost whatever else shares the machine; with
    torch on one thread, all of it)."""

    def __init__(self, stats: dict | None):
        self.stats = stats if stats is not None else {}
        for k in ("positions_padded", "positions_real", "model_seconds", "model_cpu_seconds"):
            self.stats.setdefault(k, 0)

    def run(self, fn, *args, real: int, padded: int):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn(*args)
        self.stats["model_cpu_seconds"] += time.thread_time() - c0
        self.stats["model_seconds"] += time.perf_counter() - t0
        self.stats["positions_real"] += real
        self.stats["positions_padded"] += padded
        return out


@torch.inference_mode()
def loglikelihood_tokens(
    lm: LM,
    pairs: Sequence[tuple[list[int], list[int]]],
    batch_size: int = 16,
    *,
    share_prefix: bool = True,
    cache=None,
    progress: Progress | None = None,
    stats: dict | None = None,
) -> list[Scored]:
    """Score (context ids, continuation ids) pairs; see the module docstring for the semantics."""
    meter = _Meter(stats)
    L = lm.max_length
    results: list[Scored | None] = [None] * len(pairs)
    fp = lm.fingerprint() if cache is not None else ""
    keys: dict[int, str] = {}
    todo = []
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            raise LmforgeError("a continuation encodes to zero tokens; nothing to score")
        if not ctx:  # nothing would predict the first token (`Encoder.pair` gives [prefix token])
            raise LmforgeError("an empty context: start it with the prefix token, as lm-eval does")
        if len(cont) > L:
            raise LmforgeError(
                f"a continuation of {len(cont)} tokens is longer than the model's context of {L} tokens"
            )
        if cache is not None:
            keys[i] = _request_key(fp, ctx, cont)
            hit = cache.get(keys[i])
            if hit is not None:
                results[i] = Scored(*hit)
                continue
        todo.append(i)
    if progress and len(todo) < len(pairs):
        progress(len(pairs) - len(todo))

    def done(idx: list[int], scored: list[Scored]) -> None:
        for i, s in zip(idx, scored):
            results[i] = s
            if cache is not None:
                cache.put(keys[i], (s.ll, s.greedy))
        if progress:
            progress(len(idx))

    if share_prefix and todo and lm.packs_prefixes():
        _trie_path(lm, todo, pairs, batch_size, meter, done)
        return results  # type: ignore[return-value]

    # Sort the work into three paths.
    last: dict[tuple[int, ...], list[int]] = {}  # context -> requests whose continuation is one token
    groups: dict[tuple[int, ...], list[int]] = {}  # context -> multi-token requests, no truncation
    flat: list[int] = []  # requests that need left truncation
    for i in todo:
        ctx, cont = pairs[i]
        if len(cont) == 1:
            last.setdefault(tuple(ctx[-L:]), []).append(i)  # input = ctx[-L:], score its last position
        elif share_prefix and len(ctx) + len(cont) - 1 <= L:
            groups.setdefault(tuple(ctx), []).append(i)
        else:
            flat.append(i)
    for ctx in list(groups):  # share only where it saves positions (see the module docstring)
        rest = [len(pairs[i][1]) - 1 for i in groups[ctx]]  # continuation rows after the context
        if SHARED_COST * (len(ctx) + len(rest) * max(rest)) >= sum(len(ctx) + r for r in rest):
            flat.extend(groups.pop(ctx))

    # 1. single-token continuations: one row per distinct context, batched, longest first.
    ctxs = sorted(last, key=len, reverse=True)
    for b in range(0, len(ctxs), batch_size):
        chunk = ctxs[b : b + batch_size]
        h = meter.run(
            lm.hidden, _pad(chunk, lm.device), real=sum(map(len, chunk)), padded=len(chunk) * len(chunk[0])
        )
        idx, rows, targets = [], [], []
        for r, c in enumerate(chunk):
            for i in last[c]:
                idx.append(i)
                rows.append(h[r, len(c) - 1])
                targets.append(pairs[i][1][0])
        done(idx, meter.run(score_rows, lm, torch.stack(rows), targets, [1] * len(idx), real=0, padded=0))

    # 2. shared context through the KV cache: contexts of equal length go together; each runs once,
    #     then the rows of its continuations (minus their last token) run after it.
    by_len: dict[int, list[tuple[int, ...]]] = {}
    for ctx in groups:
        by_len.setdefault(len(ctx), []).append(ctx)
    for P in sorted(by_len, reverse=True):
        batch: list[tuple[int, ...]] = []
        rows_in_batch = 0
        longest = {c: max(len(pairs[i][1]) for i in groups[c]) for c in by_len[P]}
        ctxs_p = sorted(by_len[P], key=lambda c: longest[c], reverse=True)  # similar lengths batch together
        for j, ctx in enumerate(ctxs_p):
            if batch and longest[ctx] < 0.8 * longest[batch[0]]:  # keep padding under ~20% of the rows
                done(*_shared_batch(lm, batch, groups, pairs, meter))
                batch, rows_in_batch = [], 0
            batch.append(ctx)
            rows_in_batch += len(groups[ctx])
            if rows_in_batch >= batch_size or j == len(ctxs_p) - 1:
                done(*_shared_batch(lm, batch, groups, pairs, meter))
                batch, rows_in_batch = [], 0

    # 3. everything else, as lm-eval batches it: whole truncated rows, longest first.
    flat.sort(key=lambda i: len(pairs[i][0]) + len(pairs[i][1]), reverse=True)
    for b in range(0, len(flat), batch_size):
        idx = flat[b : b + batch_size]
        inputs = [(pairs[i][0] + pairs[i][1])[-(L + 1) :][:-1] for i in idx]
        h = meter.run(
            lm.hidden,
            _pad(inputs, lm.device),
            real=sum(map(len, inputs)),
            padded=len(inputs) * max(map(len, inputs)),
        )
        rows, targets, lengths = [], [], []
        for r, i in enumerate(idx):
            cont, n = pairs[i][1], len(inputs[r])
            rows.append(h[r, n - len(cont) : n])
            targets.extend(cont)
            lengths.append(len(cont))
        done(idx, meter.run(score_rows, lm, torch.cat(rows), targets, lengths, real=0, padded=0))
    return results  # type: ignore[return-value]


def _trie_path(lm: LM, todo: list[int], pairs, batch_size: int, meter: _Meter, done) -> None:
    """Every request as lm-eval feeds it, packed into token-trie rows (`trie_rows`), rows batched
    longest first; a batch ends at batch_size rows, or where rows get much shorter (padding)."""
    L = lm.max_length
    inputs = [(pairs[i][0] + pairs[i][1])[-(L + 1) :][:-1] for i in todo]
    rows = plan_rows(inputs, [len(pairs[i][1]) for i in todo], L)
    rows.sort(key=len, reverse=True)
    batch: list[TrieRow] = []
    for row in [*rows, None]:
        if batch and (row is None or len(batch) == batch_size or len(row) < PACK_SPLIT * len(batch[0])):
            idx, scored = _trie_batch(
                lm, batch, [todo[j] for row_ in batch for j, _ in row_.picks], pairs, meter
            )
            done(idx, scored)
            batch = []
        if row is not None:
            batch.append(row)


def _trie_batch(lm: LM, rows: list[TrieRow], idx: list[int], pairs, meter: _Meter):
    """One forward over trie rows; rows without branching are plain causal (right padding)."""
    ids, pos, keep = row_tensors(rows)
    B, T = ids.shape
    real = sum(map(len, rows))
    if all(r.is_chain() for r in rows):
        h = meter.run(lm.hidden, ids.to(lm.device), real=real, padded=B * T)
    else:
        h = meter.run(
            lm.hidden_packed,
            ids.to(lm.device),
            pos.to(lm.device),
            keep.to(lm.device),
            real=real,
            padded=B * T,
        )
    picks = [r * T + n for r, row in enumerate(rows) for _, nodes in row.picks for n in nodes]
    conts = [pairs[i][1] for i in idx]
    flat = h.reshape(B * T, h.shape[-1])[torch.tensor(picks, device=h.device)]
    scored = meter.run(
        score_rows, lm, flat, [t for c in conts for t in c], [len(c) for c in conts], real=0, padded=0
    )
    return idx, scored


def _shared_batch(
    lm: LM,
    ctxs: list[tuple[int, ...]],
    groups: dict,
    pairs,
    meter: _Meter,
) -> tuple[list[int], list[Scored]]:
    idx = [i for c in ctxs for i in groups[c]]
    owner = torch.tensor([g for g, c in enumerate(ctxs) for _ in groups[c]], device=lm.device)
    conts = [pairs[i][1] for i in idx]
    rest = [len(c) - 1 for c in conts]
    P = len(ctxs[0])
    h_last, hs = meter.run(
        lm.hidden_shared,
        _pad(ctxs, lm.device),
        _pad([c[:-1] for c in conts], lm.device),
        owner,
        real=len(ctxs) * P + sum(rest),
        padded=len(ctxs) * P + len(conts) * max(rest),
    )
    rows = [torch.cat([h_last[owner[r]][None], hs[r, : len(c) - 1]]) for r, c in enumerate(conts)]
    return idx, meter.run(
        score_rows,
        lm,
        torch.cat(rows),
        [t for c in conts for t in c],
        [len(c) for c in conts],
        real=0,
        padded=0,
    )


# ---------------------------------------------------------------- rolling windows (perplexity)


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_len: int) -> list[tuple[list[int], int]]:
    """Disjoint windows covering `tokens`, as lm-eval's get_rolling_token_windows with
    context_len=1 followed by make_disjoint_window: (model input, number of scored tokens at its end).

    Window 1 is [prefix] + tokens[:L-1] and scores all of tokens[:L]; each later window scores the
    next <= L tokens and is fed the L tokens just before its last target, so every token is
    predicted exactly once.
    """
    n, L = len(tokens), max_len
    if n == 0:
        return []
    first = min(L, n)
    out = [([prefix_token] + list(tokens[: first - 1]), first)]
    done = first
    while done < n:
        w = min(n - done, L)
        end = done + w
        out.append((list(tokens[end - L - 1 : end - 1]), w))
        done = end
    return out


@torch.inference_mode()
def loglikelihood_rolling_tokens(
    lm: LM, docs: Sequence[Sequence[int]], batch_size: int = 16, progress: Progress | None = None
) -> list[float]:
    """Total log-likelihood of each token sequence, every token scored exactly once."""
    windows = []  # (doc index, input, scored count, targets)
    for d, toks in enumerate(docs):
        for inp, k in rolling_windows(toks, lm.prefix_token_id, lm.max_length):
            windows.append((d, inp, k))
    # Targets of a window are the input shifted by one plus the next token; rebuild them per doc.
    targets = []
    for d, toks in enumerate(docs):
        done = 0
        for _inp, k in rolling_windows(toks, lm.prefix_token_id, lm.max_length):
            targets.append(list(toks[done : done + k]))
            done += k
    if hasattr(progress, "set_total"):  # e.g. runner.WindowBar: counts windows, known only now
        progress.set_total(len(windows))
    order = sorted(range(len(windows)), key=lambda j: len(windows[j][1]), reverse=True)
    totals = [0.0] * len(docs)
    for b in range(0, len(order), batch_size):
        js = order[b : b + batch_size]
        h = lm.hidden(_pad([windows[j][1] for j in js], lm.device))
        rows, tgt, lengths = [], [], []
        for r, j in enumerate(js):
            _, inp, k = windows[j]
            rows.append(h[r, len(inp) - k : len(inp)])
            tgt.extend(targets[j])
            lengths.append(k)
        for j, s in zip(js, score_rows(lm, torch.cat(rows), tgt, lengths)):
            totals[windows[j][0]] += s.ll
        if progress:
            progress(len(js))
    return totals


def loglikelihood_rolling(
    lm: LM, texts: Sequence[str], batch_size: int = 16, progress: Progress | None = None
) -> list[float]:
    """Total log-likelihood of each text, tokenised whole (no context), in rolling windows."""
    return loglikelihood_rolling_tokens(lm, [lm.encode(t) for t in texts], batch_size, progress)
