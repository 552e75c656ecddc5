"""Near-duplicate detection of the whole curation pipeline against exact Jaccard (issue 14).

1. Quality: the distinct pages of the web sample shipped in lmforge/corpus/, each with 3 planted
   near-duplicates (0.2-1.2% of words substituted: true 5-shingle Jaccard ~0.8-0.98), plus 67 short
   documents (2-7 words), 40 junk documents (symbols, numbers, URLs, emoji, repeated words) and a
   few empty ones, shuffled; `curate()` with the quality filters off (lang_id, Gopher, C4,
   FineWeb), 2 workers, several shards. Its decisions are compared with exact Jaccard over
   simplified 5-word shingles (what MinHash estimates), computed for every pair sharing a shingle:
   components of the J >= 0.8 graph should each lose all but one member.
     recall    = sum over components of min(removed, size - 1) / sum of (size - 1)
     precision = the same numerator / all documents removed as duplicates
2. Dedup order: C4's line rules run before de-duplication (as in FineWeb), so two copies of a page
   whose line structure differs are compared after their lines were filtered differently. For the
   C4 pages, copies with navigation lines added, with every line joined into one paragraph, or
   hard-wrapped at 80 columns; the share of (page, copy) pairs, both surviving C4, that share an
   LSH bucket when signatures are taken from the cleaned text or from the normalised original.

    python bench/curate_dedup_quality.py [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from lmforge.config import from_dict
from lmforge.data.curate.c4 import c4_filter
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.minhash import MinHasher, band_keys, simplify
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.shards import read_shard, shard_files
from lmforge.data.curate.text import normalize

SAMPLE = Path(__file__).resolve().parents[1] / "lmforge" / "corpus" / "web_sample.jsonl.gz"
OFF = {
    name: {"enabled": False} for name in ("lang_id", "gopher_quality", "gopher_repetition", "c4", "fineweb")
}
FILLER = ["foo", "bar", "baz", "qux", "lorem", "ipsum", "alpha", "omega"]


def pages() -> list[dict]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(r["text"], r)
    return list(seen.values())


def shingles(text: str, n: int = 5) -> set[bytes]:
    w = simplify(text).split()
    if not w:
        return {text.encode("utf-8", "replace")}  # MinHash hashes a wordless text as itself
    return {b" ".join(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def substitute(text: str, rate: float, rng: random.Random) -> str:
    return " ".join(w if rng.random() > rate else rng.choice(FILLER) for w in text.split(" "))


def quality_corpus(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for p in pages():
        docs.append({"id": p["id"], "text": p["text"]})
        for k in range(3):
            docs.append(
                {"id": f"{p['id']}~{k}", "text": substitute(p["text"], rng.uniform(0.002, 0.012), rng)}
            )
    vocab = sorted({w for d in docs[:200] for w in d["text"].split() if w.isalpha()})
    for k in range(67):
        docs.append({"id": f"short{k}", "text": " ".join(rng.choices(vocab, k=rng.randint(2, 7)))})
    junk = [
        "!!!",
        "...",
        "12345 678",
        "http://example.com/a/b?c=1",
        "🙂🙂🙂",
        "ok ok ",
        "OK ok",
        "# # #",
        "--",
        "日本語",
        "ФФФ",
        "a",
        "1",
        "\u200b",
    ]
    for k in range(40):
        docs.append({"id": f"junk{k}", "text": junk[k % len(junk)] * rng.randint(1, 3)})
    docs += [{"id": f"empty{k}", "text": t} for k, t in enumerate(["", " ", "\n\n"])]
    rng.shuffle(docs)
    return docs


def exact_pairs(texts: dict[str, str], threshold: float) -> list[tuple[str, str, float]]:
    """Every pair with 5-shingle Jaccard >= threshold, through an inverted index of shingles."""
    sets = {i: shingles(t) for i, t in texts.items()}
    index: dict[bytes, list[str]] = defaultdict(list)
    for i, s in sets.items():
        for x in s:
            index[x].append(i)
    shared: Counter = Counter()
    for ids in index.values():
        for a, b in itertools.combinations(sorted(ids), 2):
            shared[a, b] += 1
    out = []
    for (a, b), n in shared.items():
        j = n / (len(sets[a]) + len(sets[b]) - n)
        if j >= threshold:
            out.append((a, b, j))
    return out


def components(nodes: list[str], pairs: list[tuple[str, str, float]]) -> list[list[str]]:
    parent = {i: i for i in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = defaultdict(list)
    for i in nodes:
        groups[find(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def quality(workers: int) -> None:
    docs = quality_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        cfg = from_dict(
            CurateConfig, {**OFF, "workers": workers, "shard_bytes": 2**20, "output_format": "jsonl"}
        )
        t0 = time.perf_counter()
        stats = curate(cfg, Path(tmp) / "out", [str(src)])
        seconds = time.perf_counter() - t0
        read = lambda d: [x for f in shard_files(d) for x in read_shard(f)] if d.exists() else []
        kept = {d["id"]: d["text"] for d in read(Path(tmp) / "out" / "kept")}
        removed = {d["id"]: d for d in read(Path(tmp) / "out" / "removed")}
    dup = {i for i, d in removed.items() if d["reason"] in ("exact_dedup", "minhash_dedup")}
    # Jaccard over the texts de-duplication compared (after normalisation and PII placeholders)
    compared = {**kept, **{i: removed[i]["text"] for i in dup}}
    pairs = exact_pairs(compared, 0.8)
    comps = components(list(compared), pairs)
    right = sum(min(sum(i in dup for i in c), len(c) - 1) for c in comps)
    should = sum(len(c) - 1 for c in comps)
    planted = [
        jaccard(compared[i.split("~")[0]], t)
        for i, t in compared.items()
        if "~" in i and i.split("~")[0] in compared
    ]  # each copy against its page
    best = {}
    for a, b, j in exact_pairs(compared, 0.5):
        best[a], best[b] = max(best.get(a, 0), j), max(best.get(b, 0), j)
    near_miss = sum(0.5 <= best.get(i, 0) < 0.8 for i in dup)
    print(
        f"quality: {len(docs)} documents ({stats['shards']} shards, {workers} workers, {seconds:.1f} s), "
        f"{len(compared)} reach dedup, {len(pairs)} pairs with J >= 0.8 in {len(comps)} components "
        f"(page-copy pairs: J {min(planted):.3f}-{max(planted):.3f}, median {np.median(planted):.3f})"
    )
    print(
        f"  removed as duplicates: {len(dup)} (exact {stats['dedup']['exact_removed']}, "
        f"near {stats['dedup']['near_removed']}); should remove {should}"
    )
    print(
        f"  recall {right / should:.4f}   precision {right / max(1, len(dup)):.4f}   "
        f"(removed with best J in 0.5-0.8, the LSH curve's slope: {near_miss})"
    )


def layout_variants(text: str, rng: random.Random) -> dict[str, str]:
    lines = text.split("\n")
    nav = ["Home", "About Us", "Contact", "Share this:", "Related Posts", "Leave a comment", "Categories"]
    return {
        "nav lines added": "\n".join(rng.sample(nav, 3) + lines + rng.sample(nav, 3)),
        "lines joined": " ".join(x.strip() for x in lines if x.strip()),
        "hard-wrapped at 80": "\n".join(textwrap.fill(x, 80) for x in lines if x.strip()),
    }


def dedup_order() -> None:
    cfg = CurateConfig()
    hasher = MinHasher(cfg.dedup.bands * cfg.dedup.rows, cfg.dedup.shingle_words, cfg.dedup.seed)
    rng = random.Random(1)
    found: dict[str, Counter] = defaultdict(Counter)
    for p in pages():
        if p["meta"].get("origin") != "c4_en_sample_1000":
            continue
        original = normalize(p["text"])
        rule, cleaned = c4_filter(original, cfg.c4, Counter())
        if rule:
            continue
        for name, variant in layout_variants(original, rng).items():
            v_original = normalize(variant)
            v_rule, v_cleaned = c4_filter(v_original, cfg.c4, Counter())
            found[name]["pages"] += 1
            if v_rule:
                found[name]["copy removed by C4"] += 1
                continue
            found[name]["pairs"] += 1
            for kind, (a, b) in (("cleaned", (cleaned, v_cleaned)), ("original", (original, v_original))):
                keys = band_keys(hasher.signatures([a, b]), cfg.dedup.bands, cfg.dedup.rows)
                found[name][kind] += bool((keys[0] == keys[1]).any())
                found[name][kind + " exact"] += a == b
    print("dedup order: C4 pages passing C4, one copy per variant; pairs found by LSH (identical texts)")
    print(
        f"  {'copy':22s} {'pairs':>6s} {'copy removed by C4':>19s} {'signature of cleaned':>21s} "
        f"{'signature of original':>22s}"
    )
    for name, c in found.items():
        n = max(1, c["pairs"])
        print(
            f"  {name:22s} {c['pairs']:6d} {c['copy removed by C4']:19d} "
            f"{c['cleaned'] / n:12.3f} ({c['cleaned exact']:4d}) {c['original'] / n:13.3f} "
            f"({c['original exact']:4d})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["quality", "order"])
    args = ap.parse_args()
    if args.only != "order":
        quality(args.workers)
    if args.only != "quality":
        dedup_order()


if __name__ == "__main__":
    main()
