"""Benchmark decontamination: drop (or flag) documents sharing a word 13-gram with an evaluation set.

13-grams follow GPT-3 (Brown et al. 2020, §4 and App. C) and NeMo Curator's TaskDecontamination
(max_ngram_size=13). Each benchmark item is indexed as question + correct answer (the text a
leaked copy would contain), with the same simplified words as MinHash (lower case, punctuation
dropped, digits as 0). The index is a sorted uint64 array with a benchmark id per n-gram, built
once and memory-mapped by every worker; a lookup is one `np.searchsorted` per document.
Items shorter than n words cannot be indexed and are counted as `short_items`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lmforge.benchmarks import BUNDLED
from lmforge.data.curate.minhash import ngram_hashes, word_hashes
from lmforge.errors import LmforgeError


def _files(root: Path, suffix: str) -> list[Path]:
    """Files ending in `suffix`, plain or gzipped (the subsets shipped with lmforge are .gz)."""
    return sorted([*root.rglob(f"*{suffix}"), *root.rglob(f"*{suffix}.gz")])


def _text(path: Path) -> io.StringIO:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as f:
            return io.StringIO(f.read(), newline="")
    return io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")


def _jsonl(path: Path) -> Iterator[dict]:
    for line in _text(path):
        if line.strip():
            yield json.loads(line)


def _arc(root: Path) -> Iterator[str]:
    for f in _files(root, ".jsonl"):
        for r in _jsonl(f):
            q = r["question"]
            answer = next((c["text"] for c in q["choices"] if c["label"] == r.get("answerKey")), "")
            yield f"{q['stem']} {answer}"


def _hellaswag(root: Path) -> Iterator[str]:
    for f in _files(root, ".jsonl"):
        for r in _jsonl(f):
            label = r.get("label")
            ending = r["endings"][int(label)] if label not in (None, "") else ""
            yield f"{r['ctx']} {ending}"


def _mmlu(root: Path) -> Iterator[str]:
    for f in _files(root, ".csv"):
        for row in csv.reader(_text(f)):
            if len(row) >= 6:
                answer = row[1 + "ABCD".index(row[5])] if row[5] in ("A", "B", "C", "D") else ""
                yield f"{row[0]} {answer}"


def _truthfulqa(root: Path) -> Iterator[str]:
    for f in _files(root, ".csv"):
        for row in csv.DictReader(_text(f)):
            yield f"{row.get('Question', '')} {row.get('Best Answer', '')}"


def _gsm8k(root: Path) -> Iterator[str]:
    for f in _files(root, ".jsonl"):
        for r in _jsonl(f):
            yield f"{r['question']} {r.get('answer', '')}"


def bundled_benchmarks() -> Path:
    return BUNDLED


READERS = {"arc": _arc, "hellaswag": _hellaswag, "mmlu": _mmlu, "truthfulqa": _truthfulqa, "gsm8k": _gsm8k}


def build_index(benchmarks: str | Path, n: int, out: Path) -> dict:
    """Write `out` (.npz: keys, bench, names) for every known benchmark folder; return its summary.
    `benchmarks="bundled"`: the subsets shipped with lmforge (lmforge/benchmarks/)."""
    root = bundled_benchmarks() if benchmarks == "bundled" else Path(benchmarks)
    if not root.is_dir():
        raise LmforgeError(f"decontamination.benchmarks: no such folder {root}")
    names = [name for name in READERS if (root / name).is_dir()]
    if not names:
        raise LmforgeError(f"decontamination.benchmarks: {root} has none of {', '.join(READERS)}")
    keys, bench, summary = [], [], {}
    for i, name in enumerate(names):
        try:
            items = list(READERS[name](root / name))
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise LmforgeError(f"decontamination: cannot read benchmark {name} in {root}: {e!r}") from None
        words, counts = word_hashes(items)
        grams = ngram_hashes(words, n)[n - 1] if len(words) >= n else np.zeros(0, np.uint64)
        doc = np.repeat(np.arange(len(items)), counts)
        pos = np.arange(len(grams))
        inside = doc[pos] == doc[np.minimum(pos + n - 1, len(doc) - 1)] if len(grams) else pos.astype(bool)
        g = np.sort(grams[inside])
        g = g[np.concatenate(([True], g[1:] != g[:-1]))]  # unique; np.unique hashes slowly here
        keys.append(g)
        bench.append(np.full(len(g), i, dtype=np.uint8))
        summary[name] = {"items": len(items), "short_items": int((counts < n).sum()), "ngrams": len(g)}
    k = np.concatenate(keys)
    b = np.concatenate(bench)
    order = np.argsort(k, kind="stable")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, keys=k[order], bench=b[order], names=np.array(names))
    tmp.replace(out)
    return summary


class Decontaminator:
    def __init__(self, index_path: Path, n: int):
        z = np.load(index_path)
        self.keys, self.bench, self.names, self.n = z["keys"], z["bench"], [str(x) for x in z["names"]], n

    def matches(self, text: str) -> list[str]:
        """Names of the benchmarks sharing at least one n-gram with `text`."""
        words, _ = word_hashes([text])
        if len(words) < self.n or len(self.keys) == 0:
            return []
        grams = ngram_hashes(words, self.n)[self.n - 1]
        idx = np.minimum(np.searchsorted(self.keys, grams), len(self.keys) - 1)
        hit = self.keys[idx] == grams
        if not hit.any():
            return []
        return [self.names[i] for i in sorted(set(self.bench[idx[hit]].tolist()))]
