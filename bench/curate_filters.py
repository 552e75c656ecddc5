"""Heuristic filter throughput per core: lmforge's Gopher + C4 + FineWeb stack on the shared web sample.

Prints MB/s and docs/s for each filter and the full stack on one core, and, when datatrove is
installed (`pip install datatrove`), datatrove's filters with the same thresholds on the same
documents in the same process, the ratio, and the keep/remove agreement.
    python bench/curate_filters.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from lmforge.data.curate.c4 import c4_filter
from lmforge.data.curate.config import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from lmforge.data.curate.fineweb import fineweb_filter
from lmforge.data.curate.gopher import gopher_quality, gopher_repetition
from lmforge.data.curate.text import Doc

WEB = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora" / "web"
C4_DT = C4Config(
    min_words_per_line=3, min_sentences=5, bad_words=False, end_marks=[".", "?", "!", '"', "'"]
)  # datatrove's defaults


def ours(texts):
    from lmforge.data.curate.words import _cached as chunk_cache

    gr, gq, fw = GopherRepetitionConfig(), GopherQualityConfig(), FineWebConfig()
    out = {}
    for name, fn in [
        ("gopher_repetition", lambda t: gopher_repetition(Doc(t), gr)),
        ("gopher_quality", lambda t: gopher_quality(Doc(t), gq)),
        ("c4", lambda t: c4_filter(t, C4_DT, Counter())[0]),
        ("fineweb", lambda t: fineweb_filter(Doc(t), fw)),
    ]:
        chunk_cache.cache_clear()  # every timing starts from a cold tokenizer cache
        t0 = time.perf_counter()
        out[name] = ([fn(t) is None for t in texts], time.perf_counter() - t0)
    chunk_cache.cache_clear()
    t0 = time.perf_counter()
    for t in texts:  # the full stack as a pipeline runs it: one Doc shared, C4's cleaned text goes on
        d = Doc(t)
        if gopher_repetition(d, gr) or gopher_quality(d, gq):
            continue
        rule, cleaned = c4_filter(t, C4_DT, Counter())
        if rule is None:
            fineweb_filter(Doc(cleaned), fw)
    out["stack"] = (None, time.perf_counter() - t0)
    return out


def theirs(texts):
    try:
        from datatrove.data import Document
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )
        from datatrove.utils.text import split_into_parts
    except ImportError:
        return None
    filters = [
        ("gopher_repetition", GopherRepetitionFilter()),
        ("gopher_quality", GopherQualityFilter()),
        ("c4", C4QualityFilter()),
        ("fineweb", FineWebQualityFilter()),
    ]
    kept = lambda r: r is True or (isinstance(r, tuple) and r[0])
    out = {}
    # The stack first, while spaCy's own token cache is cold: each document goes through the four
    # filters in order until one removes it, sharing datatrove's word-split cache, as its pipeline does.
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    for d in docs:
        all(kept(f.filter(d)) for _, f in filters)
    out["stack"] = (None, time.perf_counter() - t0)
    for name, f in filters:
        split_into_parts.cache_clear()
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        t0 = time.perf_counter()
        keep = [kept(f.filter(d)) for d in docs]
        out[name] = (keep, time.perf_counter() - t0)
    return out


def token_agreement(texts) -> str | None:
    """How many pages get the same token list from lmforge's split_words and datatrove's spaCy."""
    try:
        from datatrove.utils.text import split_into_words
    except ImportError:
        return None
    from lmforge.data.curate.words import split_words

    ours = [split_words(t) for t in texts]
    theirs = [list(split_into_words(t)) for t in texts]
    same = sum(a == b for a, b in zip(ours, theirs))
    return (
        f"word tokens: {same}/{len(texts)} pages identical to spaCy's; "
        f"{sum(map(len, ours)):,} tokens vs {sum(map(len, theirs)):,}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    texts = [json.loads(x)["text"] for f in sorted(WEB.glob("*.jsonl")) for x in f.read_text().splitlines()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} documents, {mb:.2f} MB (shared/data/corpora/web), best of {args.repeat}, one core")
    best = None
    for _ in range(args.repeat):
        r = ours(texts)
        best = r if best is None else {k: min(best[k], r[k], key=lambda x: x[1]) for k in r}
    dt = theirs(texts)
    disagreements: dict[str, list[int]] = {}
    print(
        f"{'filter':20s} {'lmforge MB/s':>13s} {'docs/s':>9s} {'datatrove MB/s':>15s} {'ratio':>7s} "
        f"{'agree':>7s}"
    )
    for name, (keep, s) in best.items():
        line = f"{name:20s} {mb / s:13.2f} {len(texts) / s:9.0f}"
        if dt and name in dt:
            k2, s2 = dt[name]
            line += f" {mb / s2:15.2f} {s2 / s:7.1f}"
            if keep is not None:
                agree = sum(a == b for a, b in zip(keep, k2))
                line += f" {agree / len(texts):7.1%}"
                disagreements[name] = [i for i, (a, b) in enumerate(zip(keep, k2)) if a != b]
        print(line)
    agreement = token_agreement(texts) if dt else None
    if agreement:
        print(agreement)
    for name, idx in disagreements.items():
        if idx:
            print(f"{name}: {len(idx)} disagreements, documents {idx[:20]}")
    if dt is None:
        print("(datatrove not installed: pip install datatrove to measure it side by side)")


if __name__ == "__main__":
    main()
