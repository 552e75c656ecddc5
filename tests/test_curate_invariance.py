"""Curation results do not depend on how the work was cut (issue 14).

One small generated corpus (empty, whitespace-only, 1-4-word, non-Latin and emoji documents, exact
and near duplicates across files, boilerplate lines, benchmark leaks) is curated under every
combination of worker count, shard count and MinHash batch size, and with its input reordered.
Every run must give the outcome the documented rules predict, computed here without running
anything: filter reasons per document; of each duplicate cluster the first document in input
order is kept, a later exact copy of an earlier document is `exact_dedup`, any other later member
`minhash_dedup`; a line in >= 3 kept documents leaves all of them.
"""

from __future__ import annotations

import itertools
import json
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmforge.config import from_dict
from lmforge.data.curate import minhash
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.shards import read_shard, shard_files

pytest.importorskip("ftfy", reason="needs the curate extra: pip install 'lmforge[curate]'")

# Quality filters off (the short documents must reach de-duplication, as in the corpus);
# normalisation, length, PII, decontamination, both dedup kinds and boilerplate on.
OFF = {
    name: {"enabled": False} for name in ("lang_id", "gopher_quality", "gopher_repetition", "c4", "fineweb")
}
NAV = "Home | About us | Contact | Shop"
LEAK = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? 72"
)


@dataclass
class Corpus:
    docs: list[dict]  # {"id", "text"} in input order
    reason: dict[str, str] = field(default_factory=dict)  # id -> filter reason, decided per document
    exact: dict[str, str] = field(default_factory=dict)  # id -> exact group (same text after normalising)
    cluster: dict[str, str] = field(default_factory=dict)  # id -> near-duplicate cluster (exact copies too)
    only_boilerplate: set[str] = field(default_factory=set)


def words(rng: random.Random, n: int) -> str:
    syll = ["ka", "to", "ri", "mu", "sen", "la", "vo", "pe", "dan", "il", "or", "bu"]
    return " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(n))


def body(seed: int, n_words: int = 150) -> str:
    """Six lines of made-up words: distinct bodies share (almost) no 5-word shingle."""
    rng = random.Random(seed)
    return "\n".join(words(rng, n_words // 6).capitalize() + "." for _ in range(6))


def edit(text: str, seed: int) -> str:
    """One word changed in ~150: Jaccard ~0.93 to the original, found by LSH with P > 0.9999."""
    parts = text.split(" ")
    parts[random.Random(seed).randrange(5, len(parts) - 5)] = "zzedited"
    return " ".join(parts)


def build() -> Corpus:
    c = Corpus(docs=[])

    def add(i: str, text: str, reason: str = "", exact: str = "", cluster: str = "") -> None:
        c.docs.append({"id": i, "text": text})
        if reason:
            c.reason[i] = reason
        c.exact[i] = exact or i
        c.cluster[i] = cluster or exact or i

    for k in range(14):  # singletons; a third carry the navigation line
        add(f"s{k}", (NAV + "\n" if k % 3 == 0 else "") + body(k))
    add("e", "")
    add("ws", "  \n\t \n ")
    for k, t in enumerate(
        ["ok", "yes no", "one two three", "a b c d", "日本語 テキスト", "🙂 🎉", "Съешь ещё"]
    ):
        add(f"short{k}", t)
    add("ok1", "ok ok ", cluster="okc")  # simplify to the same one shingle: a near duplicate pair
    add("ok2", "OK, ok!", cluster="okc")
    add("yes1", "yes", exact="yes")
    add("yes2", "yes", exact="yes")
    add("cyr", "\n".join("Это строка номер " + str(i) + " на русском языке для проверки." for i in range(20)))
    add("mixed", body(70) + "\nПривет мир 🙂 👍🏽 " + body(71, 30))
    for g in range(4):  # near-duplicate clusters of 3, one member an exact copy (spaces normalised away)
        base = body(100 + g)
        add(f"n{g}a", base, exact=f"x{g}", cluster=f"n{g}")
        add(f"n{g}b", edit(base, g), cluster=f"n{g}")
        add(f"n{g}c", base.replace(" ", "   ", 2) + " ", exact=f"x{g}", cluster=f"n{g}")
    for g in range(2):  # exact copies carrying the navigation line: one kept document each
        text = NAV + "\n" + body(200 + g)
        add(f"b{g}a", text, exact=f"b{g}")
        add(f"b{g}b", text, exact=f"b{g}")
    add("navonly", NAV + "\n\n" + NAV.upper())  # nothing but boilerplate
    c.only_boilerplate.add("navonly")
    add("leak1", body(300) + "\n" + LEAK, reason="decontamination:gsm8k")
    add("leak2", LEAK.lower() + "\n" + body(301), reason="decontamination:gsm8k")
    c.reason["e"] = c.reason["ws"] = "length:too_short"
    rng = random.Random(5)
    rng.shuffle(c.docs)  # duplicates spread over files and shards
    return c


def expected(c: Corpus, order: list[str]) -> dict[str, str]:
    """id -> reason ("" = kept) by the documented rules, walking the input in order."""
    out, seen_exact, seen_cluster = {}, set(), set()
    for i in order:
        if i in c.reason:
            out[i] = c.reason[i]
        elif c.exact[i] in seen_exact:
            out[i] = "exact_dedup"
        elif c.cluster[i] in seen_cluster:
            out[i] = "minhash_dedup"
        else:
            out[i] = "boilerplate" if i in c.only_boilerplate else ""
        if i not in c.reason:
            seen_exact.add(c.exact[i])
            seen_cluster.add(c.cluster[i])
    return out


def write_inputs(folder: Path, docs: list[dict]) -> Path:
    """Two JSONL files (a third of the documents, then the rest) and a benchmark folder."""
    raw = folder / "raw"
    raw.mkdir()
    cut = len(docs) // 3
    for name, part in (("a.jsonl", docs[:cut]), ("b.jsonl", docs[cut:])):
        (raw / name).write_text(
            "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in part), encoding="utf-8"
        )
    bench = folder / "bench" / "gsm8k"
    bench.mkdir(parents=True)
    q, a = LEAK.rsplit("? ", 1)
    (bench / "test.jsonl").write_text(json.dumps({"question": q + "?", "answer": a}) + "\n")
    return folder


def run(folder: Path, name: str, **kw) -> tuple[dict[str, str], dict[str, str], dict]:
    """(kept id -> text, removed id -> reason, stats) of one curate run."""
    cfg = from_dict(
        CurateConfig,
        {
            **OFF,
            "decontamination": {"benchmarks": str(folder / "bench")},
            "dedup": {"boilerplate_min_docs": 3},
            "output_format": "jsonl",
        }
        | kw,
    )
    out = folder / name
    stats = curate(cfg, out, [str(folder / "raw")])
    read = lambda d: [x for f in shard_files(d) for x in read_shard(f)] if d.exists() else []
    kept = {d["id"]: d["text"] for d in read(out / "kept")}
    removed = {d["id"]: d["reason"] for d in read(out / "removed")}
    assert set(kept).isdisjoint(removed)
    return kept, removed, stats


def check(c: Corpus, order: list[str], kept: dict[str, str], removed: dict[str, str]) -> None:
    want = expected(c, order)
    assert len(kept) + len(removed) == len(order)  # every document accounted for, once
    assert removed == {i: r for i, r in want.items() if r}
    assert set(kept) == {i for i, r in want.items() if not r}
    assert all(NAV not in t and NAV.upper() not in t for t in kept.values())  # boilerplate left every page


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build()


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """One shard per file, one worker, the default MinHash batch: the layout others must match."""
    folder = write_inputs(tmp_path_factory.mktemp("ref"), corpus.docs)
    kept, removed, stats = run(folder, "out", workers=1)
    check(corpus, [d["id"] for d in corpus.docs], kept, removed)
    assert stats["shards"] == 2
    return kept, removed


# workers x shard bytes (~8 shards of ~4 kB) x MinHash batch chars, less the reference layout
# itself; and one run with the global dedup step in a single partition instead of 4
LAYOUTS = [(*x, 4) for x in itertools.product([1, 2], [None, 4096], [None, 1])][1:] + [(2, 4096, None, 1)]


@pytest.mark.parametrize("workers,shard_bytes,batch_chars,partitions", LAYOUTS)
def test_same_result_for_any_layout(
    corpus, reference, tmp_path, monkeypatch, workers, shard_bytes, batch_chars, partitions
):
    if batch_chars is not None:  # 1: every document hashed alone; forked workers inherit the setting
        monkeypatch.setattr(minhash, "BATCH_CHARS", batch_chars)
    folder = write_inputs(tmp_path, corpus.docs)
    kw = {"workers": workers, "dedup": {"boilerplate_min_docs": 3, "partitions": partitions}}
    kept, removed, stats = run(folder, "out", **kw | ({"shard_bytes": shard_bytes} if shard_bytes else {}))
    assert stats["shards"] > 4 if shard_bytes else stats["shards"] == 2
    assert (kept, removed) == reference


@pytest.mark.parametrize("how", ["reversed", "shuffled"])
def test_reordered_input_keeps_the_first_of_each_cluster(corpus, reference, tmp_path, how):
    docs = corpus.docs[::-1] if how == "reversed" else random.Random(11).sample(corpus.docs, len(corpus.docs))
    folder = write_inputs(tmp_path, docs)
    kept, removed, _ = run(folder, "out", workers=2, shard_bytes=4096)
    order = [d["id"] for d in docs]
    check(corpus, order, kept, removed)
    assert expected(corpus, order) != expected(corpus, [d["id"] for d in corpus.docs])  # the order mattered
    # a document's text does not depend on which member of its cluster was kept
    ref_kept, _ = reference
    for i, text in kept.items():
        same = [j for j in ref_kept if corpus.exact[j] == corpus.exact[i]]
        if same:
            assert text == ref_kept[same[0]]


@pytest.mark.slow
def test_ray_executor_gives_the_same_result(corpus, reference, tmp_path):
    ray = pytest.importorskip("ray")
    folder = write_inputs(tmp_path, corpus.docs)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        kept, removed, _ = run(folder, "out", executor="ray", shard_bytes=4096)
    finally:
        ray.shutdown()
    assert (kept, removed) == reference


def test_signature_text_original_matches_copies_whose_line_rules_differ(tmp_path):
    """C4's line rules run before dedup (FineWeb's order): a hard-wrapped copy of a page loses most
    of its lines to them, so by default the two cleaned texts no longer look alike; with
    dedup.signature_text=original they are compared as read (normalised) and the copy goes."""
    rng = random.Random(3)
    sentences = [words(rng, 6).capitalize() + "." for _ in range(4)] + [
        words(rng, 24).capitalize() + "." for _ in range(6)
    ]
    page = "\n".join(sentences)
    wrapped = "\n".join(textwrap.fill(s, 50) for s in sentences)
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": "page", "text": page}) + "\n" + json.dumps({"id": "copy", "text": wrapped}) + "\n"
    )
    results = {}
    for how in ("cleaned", "original"):
        cfg = from_dict(
            CurateConfig,
            {
                **OFF,
                "c4": {"enabled": True},
                "decontamination": {"benchmarks": ""},
                "dedup": {"signature_text": how},
                "output_format": "jsonl",
                "workers": 1,
            },
        )
        curate(cfg, tmp_path / how, [str(tmp_path / "in.jsonl")])
        kept = {d["id"]: d["text"] for f in shard_files(tmp_path / how / "kept") for d in read_shard(f)}
        removed = {
            d["id"]: d["reason"] for f in shard_files(tmp_path / how / "removed") for d in read_shard(f)
        }
        results[how] = kept, removed
    kept, removed = results["cleaned"]
    assert set(kept) == {"page", "copy"} and len(kept["copy"]) < len(kept["page"]) / 2  # the copy lost lines
    kept, removed = results["original"]
    assert removed == {"copy": "minhash_dedup"} and kept["page"] == results["cleaned"][0]["page"]
