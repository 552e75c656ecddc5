"""MinHash LSH quality against exact Jaccard on planted near-duplicates; the partitioned global step."""

from __future__ import annotations

import gzip
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.curate import dedup
from lmforge.data.curate.minhash import MinHasher, band_keys, lsh_probability, simplify

WEB_SAMPLE = Path(dedup.__file__).resolve().parents[2] / "corpus" / "web_sample.jsonl.gz"  # shipped with lmforge


def shingles(text: str, n: int = 5) -> set:
    w = simplify(text).split()
    return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


RATES = [0.0, 0.003, 0.006, 0.01, 0.015]  # word substitution rates: true Jaccard to the page ~0.85-1


def planted_corpus(seed: int = 0, rates: list[float] = RATES) -> list[str]:
    """Real C4 pages (150-600 words, from the web sample shipped in lmforge/corpus/) plus 3 edited
    copies each: planted near-duplicates."""
    rng = random.Random(seed)
    with gzip.open(WEB_SAMPLE, "rt", encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    texts = [r["text"] for r in rows if r["meta"].get("origin") == "c4_en_sample_1000"]
    pages = [p for p in dict.fromkeys(texts) if 150 <= len(p.split()) <= 600][:60]  # distinct pages
    docs = []
    for p in pages:
        docs.append(p)
        words = p.split()
        for rate in rng.sample(rates, 3):
            docs.append(" ".join(w if rng.random() > rate else rng.choice(["foo", "bar", "baz", "qux"]) for w in words))
    return docs


def test_lsh_curve_matches_fineweb():
    assert abs(lsh_probability(0.8, 14, 8) - 0.924) < 0.001  # datatrove minhash.py comment
    assert (1 / 14) ** (1 / 8) == pytest.approx(0.719, abs=0.001)


def test_signature_estimates_jaccard():
    docs = planted_corpus(rates=[0.01, 0.03, 0.06, 0.1])[:40]  # a spread of Jaccard values
    sig = MinHasher(112, 5, seed=1).signatures(docs)
    err = []
    for i, j in itertools.combinations(range(len(docs)), 2):
        a, b = shingles(docs[i]), shingles(docs[j])
        err.append(abs((sig[i] == sig[j]).mean() - len(a & b) / len(a | b)))
    assert np.mean(err) < 0.02 and np.max(err) < 0.2  # std of the estimate is ~sqrt(J(1-J)/112) <= 0.047


def test_near_dup_recall_and_precision_against_exact_jaccard(tmp_path):
    docs = planted_corpus()
    sig = MinHasher(14 * 8, 5, seed=1).signatures(docs)
    keys = band_keys(sig, 14, 8)
    # run the real global step: per-shard key files, partitioned bucket jobs, union-find
    work = tmp_path / "work"
    (work / "a").mkdir(parents=True)
    halves = np.array_split(np.arange(len(docs)), 2)
    for t, idx in enumerate(halves):
        np.save(work / "a" / f"{t:05d}.bands.npy", keys[idx])
    files = [dedup.bucket_job(work, [0, 1], "bands", b, p, 3) for b in range(14) for p in range(3)]
    edges = np.concatenate([np.load(f) for f in files])
    nodes, roots = dedup._union_find(edges)
    gid_to_doc = {(t << 32) | i: int(idx[i]) for t, idx in enumerate(halves) for i in range(len(idx))}
    cluster = {gid_to_doc[int(n)]: int(r) for n, r in zip(nodes, roots)}
    sets = [shingles(d) for d in docs]
    jac = {(i, j): len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i, j in itertools.combinations(range(len(docs)), 2)}
    true_pairs = {p for p, v in jac.items() if v >= 0.8}
    # recall: pairs of true near-duplicates that end in one cluster (one of them is removed)
    clustered = {p for p in jac if p[0] in cluster and cluster.get(p[0]) == cluster.get(p[1])}
    recall = len(true_pairs & clustered) / len(true_pairs)
    # precision: the pairs the LSH step reports (its edges) that truly have Jaccard >= 0.8; pairs
    # joined only through a third document are not claims of the method (two edits of one page
    # each at 0.85 to it can be 0.75 to each other)
    reported = {tuple(sorted((gid_to_doc[int(a)], gid_to_doc[int(b)]))) for a, b in edges}
    precision = len(reported & true_pairs) / len(reported)
    assert len(true_pairs) > 100
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision


def test_union_find_roots_are_smallest_ids():
    edges = np.array([[5, 3], [9, 5], [7, 8], [2, 2]], dtype=np.uint64)
    nodes, roots = dedup._union_find(edges)
    assert dict(zip(nodes.tolist(), roots.tolist())) == {2: 2, 3: 3, 5: 3, 9: 3, 7: 7, 8: 7}
