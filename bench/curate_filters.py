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
C4_DT = C4Config(min_words_per_line=3, min_sentences=5, terminal_punct=True, bad_words=False)  # datatrove defaults


def ours(texts):
    gr, gq, fw = GopherRepetitionConfig(), GopherQualityConfig(), FineWebConfig()
    out = {}
    for name, fn in [
        ("gopher_repetition", lambda t: gopher_repetition(Doc(t), gr)),
        ("gopher_quality", lambda t: gopher_quality(Doc(t), gq)),
        ("c4", lambda t: c4_filter(t, C4_DT, Counter())[0]),
        ("fineweb", lambda t: fineweb_filter(Doc(t), fw)),
    ]:
        t0 = time.perf_counter()
        out[name] = ([fn(t) is None for t in texts], time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t in texts:  # the full stack, one Doc shared by every filter
        d = Doc(t)
        gopher_repetition(d, gr) or gopher_quality(d, gq) or c4_filter(t, C4_DT, Counter())[0] or fineweb_filter(d, fw)
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
    except ImportError:
        return None
    out = {}
    for name, f in [("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter()),
                    ("c4", C4QualityFilter()), ("fineweb", FineWebQualityFilter())]:
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        t0 = time.perf_counter()
        keep = []
        for d in docs:
            r = f.filter(d)
            keep.append(r is True or (isinstance(r, tuple) and r[0]))
        out[name] = (keep, time.perf_counter() - t0)
    return out


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
    print(f"{'filter':20s} {'lmforge MB/s':>13s} {'docs/s':>9s} {'datatrove MB/s':>15s} {'ratio':>7s} {'agree':>7s}")
    for name, (keep, s) in best.items():
        line = f"{name:20s} {mb / s:13.2f} {len(texts) / s:9.0f}"
        if dt and name in dt:
            k2, s2 = dt[name]
            agree = sum(a == b for a, b in zip(keep, k2)) / len(texts)
            line += f" {mb / s2:15.2f} {s2 / s:7.1f} {agree:7.1%}"
        print(line)
    if dt is None:
        print("(datatrove not installed: pip install datatrove to measure it side by side)")


if __name__ == "__main__":
    main()
