"""`curate()` end to end on small real web text: accounting, dedup, decontamination, determinism, resume."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import needs_shared, shared_path

from lmforge.config import from_dict
from lmforge.data.curate import pipeline
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.shards import read_shard, shard_files
from lmforge.data.curate.stats import totals
from lmforge.errors import LmforgeError
from lmforge.eval.tasks.data import BUNDLED

pytest.importorskip("ftfy", reason="needs the curate extra: pip install 'lmforge[curate]'")
pytest.importorskip("fasttext", reason="needs the curate extra (fasttext-predict)")

WEB = shared_path("corpora/web")
needs_data = needs_shared("corpora/web")
OFF = {
    "lang_id": {"enabled": False},
    "gopher_quality": {"enabled": False},
    "gopher_repetition": {"enabled": False},
    "c4": {"enabled": False},
    "fineweb": {"enabled": False},
    "length": {"min_chars": 1},
}


def make_cfg(**kw) -> CurateConfig:
    return from_dict(CurateConfig, kw)


def read_dir(folder: Path) -> list[dict]:
    return [d for f in shard_files(folder) for d in read_shard(f)] if folder.exists() else []


def small_corpus(tmp_path: Path, n: int = 120) -> Path:
    """The first n C4 docs plus planted duplicates, a near duplicate, bad lines and a non-English page."""
    src = tmp_path / "raw"
    src.mkdir()
    lines = (WEB / "c4_en_sample_1000.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    rows = [json.loads(x) for x in lines]
    first = rows[0]["text"]
    near = first.replace("Missoula", "Helena", 1).replace("delicious", "tasty", 1)
    with open(src / "a.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[: n // 2])
        f.write("{broken json\n")
        f.write(json.dumps({"text": 42}) + "\n")
        f.write(json.dumps({"text": ""}) + "\n")
    with gzip.open(src / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        for r in rows[n // 2 :]:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"text": first}) + "\n")  # exact duplicate of a.jsonl:1
        f.write(json.dumps({"text": near}) + "\n")  # near duplicate
        f.write(json.dumps({"text": "Ceci est une page entièrement écrite en français. " * 20}) + "\n")
    return src


@needs_data
def test_accounting_outputs_and_reasons(tmp_path):
    out = tmp_path / "out"
    stats = curate(make_cfg(workers=2), out, [str(small_corpus(tmp_path))])
    t = totals(stats)
    kept, removed = read_dir(out / "kept"), read_dir(out / "removed")
    assert t["input"]["docs"] == 120 + 3 + 3 == len(kept) + len(removed)
    assert t["kept"]["docs"] == len(kept)
    assert Counter(d["reason"] for d in removed) == Counter({r: c["docs"] for r, c in t["removed"].items()})
    reasons = set(t["removed"])
    assert {
        "read:malformed_json",
        "read:text_not_string",
        "length:too_short",
        "exact_dedup",
        "minhash_dedup",
        "lang_id:language",
    } <= reasons
    assert any(r.startswith(("gopher", "c4:", "fineweb")) for r in reasons)
    errors = (out / "errors.jsonl").read_text().splitlines()
    assert [json.loads(e)["line"] for e in errors] == [61, 62]
    assert all(d["text"] and d["meta"]["lang"] == "en" for d in kept)
    saved = json.loads((out / "stats.json").read_text())
    assert saved["sources"] == stats["sources"]
    report = (out / "report.md").read_text()
    assert "exact_dedup" in report and "Removed examples" in report
    # a rerun of a finished run changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert curate(make_cfg(workers=2), out, [str(tmp_path / "raw")])["sources"] == stats["sources"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@needs_data
def test_exact_and_near_dedup_on_real_dclm_duplicates(tmp_path):
    files = [WEB / "dclm_agreement_data.jsonl", WEB / "dclm_majority_data.jsonl"]
    texts = [json.loads(x)["text"] for f in files for x in f.read_text(encoding="utf-8").splitlines()]
    expect_exact = len(texts) - len(set(texts))
    assert expect_exact >= 281
    cfg = make_cfg(**OFF, pii={"enabled": False}, workers=2)
    stats = curate(cfg, tmp_path / "out", [str(f) for f in files])
    assert stats["dedup"]["exact_removed"] == expect_exact
    kept = read_dir(tmp_path / "out" / "kept")
    assert len({d["text"] for d in kept}) == len(kept)  # no exact duplicate survives
    assert len(kept) + stats["dedup"]["exact_removed"] + stats["dedup"]["near_removed"] == len(texts)


@needs_data
def test_same_output_for_any_worker_count(tmp_path):
    src = small_corpus(tmp_path)
    outs = []
    for w in (1, 2):
        cfg = make_cfg(workers=w, shard_bytes=32 * 1024)  # several byte-range shards per file
        stats = curate(cfg, tmp_path / f"out{w}", [str(src)])
        assert stats["shards"] > 3
        outs.append(
            (
                [(d["id"], d["text"]) for d in read_dir(tmp_path / f"out{w}" / "kept")],
                sorted((d["id"], d["reason"]) for d in read_dir(tmp_path / f"out{w}" / "removed")),
                stats["sources"],
            )
        )
    assert outs[0] == outs[1]


@needs_data
def test_resume_after_a_crash(tmp_path, monkeypatch):
    src = small_corpus(tmp_path)
    cfg = make_cfg(workers=1, shard_bytes=32 * 1024)
    out = tmp_path / "out"

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_dedup", crash)  # die between phase 1 and the global dedup step
    with pytest.raises(KeyboardInterrupt):
        curate(cfg, out, [str(src)])
    assert sorted((out / "work" / "a").glob("*.done.json")) and not (out / "stats.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "removed").glob("*.filtered.*")}
    monkeypatch.undo()
    with pytest.raises(LmforgeError, match="different config"):
        curate(make_cfg(workers=1, shard_bytes=32 * 1024, c4={"min_sentences": 5}), out, [str(src)])
    stats = curate(cfg, out, [str(src)])
    fresh = curate(cfg, tmp_path / "fresh", [str(src)])
    assert stats["sources"] == fresh["sources"]
    assert read_dir(out / "kept") == read_dir(tmp_path / "fresh" / "kept")
    assert stamps and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # phase 1 was not redone


def test_decontamination_removes_and_flags(tmp_path):
    with gzip.open(BUNDLED / "arc" / "ARC-Easy" / "ARC-Easy-Test.jsonl.gz", "rt") as f:
        arc = json.loads(f.readline())
    answer = next(c["text"] for c in arc["question"]["choices"] if c["label"] == arc["answerKey"])
    leak = f"Study guide. {arc['question']['stem']} {answer} That is the end of the question."
    clean = "A completely unrelated text about gardening, soil, compost and the seasons of the year."
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": leak}) + "\n" + json.dumps({"text": clean}) + "\n")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "arc").symlink_to(BUNDLED / "arc")  # the subset shipped with lmforge; one benchmark is quick
    base = {**OFF, "dedup": {"minhash": False}}
    stats = curate(
        make_cfg(**base, decontamination={"benchmarks": str(bench)}),
        tmp_path / "o1",
        [str(tmp_path / "in.jsonl")],
    )
    assert totals(stats)["removed"]["decontamination:arc"]["docs"] == 1
    assert stats["counters"]["decontamination"] == {"arc": 1}
    assert "| arc |" in (tmp_path / "o1" / "report.md").read_text()
    curate(
        make_cfg(**base, decontamination={"benchmarks": str(bench), "mode": "flag"}),
        tmp_path / "o2",
        [str(tmp_path / "in.jsonl")],
    )
    kept = read_dir(tmp_path / "o2" / "kept")
    assert [d["meta"].get("contaminated") for d in kept] == [["arc"], None]


def test_decontamination_uses_the_shipped_subsets_by_default(tmp_path, capsys):
    """A fresh clone has no benchmark folder: the default stage indexes lmforge/benchmarks/ and says so."""
    with gzip.open(BUNDLED / "hellaswag" / "hellaswag_val.jsonl.gz", "rt") as f:
        hs = json.loads(f.readline())
    leak = f"Forum post. {hs['ctx']} {hs['endings'][int(hs['label'])]} Thanks for reading."
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"text": leak}) + "\n" + json.dumps({"text": "Nothing here."}) + "\n"
    )
    stats = curate(make_cfg(**OFF, dedup={"minhash": False}), tmp_path / "o", [str(tmp_path / "in.jsonl")])
    assert stats["counters"]["decontamination"] == {"hellaswag": 1}
    assert set(stats["resources"]["decontamination"]) == {"arc", "hellaswag", "mmlu", "truthfulqa"}
    assert "subsets shipped with lmforge" in capsys.readouterr().out
    curate(
        make_cfg(**OFF, dedup={"minhash": False}, decontamination={"benchmarks": ""}),
        tmp_path / "o2",
        [str(tmp_path / "in.jsonl")],
    )
    assert "decontamination: off" in capsys.readouterr().out


def test_mixing_hits_target_weights(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for domain, n in (("web", 300), ("books", 60)):
        with open(src / f"{domain}.jsonl", "w") as f:
            f.writelines(
                json.dumps({"text": f"{domain} document {i} " + "word " * 20, "source": domain}) + "\n"
                for i in range(n)
            )
    cfg = make_cfg(
        **OFF,
        pii={"enabled": False},
        dedup={"exact": False, "minhash": False},
        mix={"enabled": True, "weights": {"web": 0.5, "books": 0.5}, "target_tokens": 8000},
    )
    stats = curate(cfg, tmp_path / "out", [str(src)])
    mix = stats["mix"]["domains"]
    assert mix["books"]["epochs"] > 1 > mix["web"]["epochs"]  # books up-sampled, web down-sampled
    assert abs(mix["books"]["share"] - 0.5) < 0.1 and abs(mix["web"]["tokens"] - 4000) < 800
    mixed = read_dir(tmp_path / "out" / "mixed")
    assert len(mixed) == mix["books"]["docs"] + mix["web"]["docs"]
    with pytest.raises(LmforgeError, match="no kept documents"):
        curate(make_cfg(**OFF, mix={"enabled": True, "weights": {"code": 1.0}}), tmp_path / "o2", [str(src)])


def test_bad_input_and_config_errors(tmp_path):
    with pytest.raises(LmforgeError, match="not found"):
        curate(make_cfg(), tmp_path / "o", [str(tmp_path / "missing.jsonl")])
    with pytest.raises(LmforgeError, match="nothing to curate"):
        curate(make_cfg(), tmp_path / "o")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(LmforgeError, match="not a curate run"):
        curate(make_cfg(), tmp_path / "notes", [str(tmp_path / "x.jsonl")])
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"  # nothing overwritten


def test_boilerplate_lines_leave_every_document(tmp_path):
    """A line in >= min_docs distinct kept documents is removed from all of them; copies of one page
    (removed by exact dedup) do not make its lines boilerplate; a page of only boilerplate goes."""
    import random

    words = [
        "river",
        "mountain",
        "forest",
        "window",
        "garden",
        "teacher",
        "market",
        "village",
        "silver",
        "winter",
        "orange",
        "bottle",
    ]

    def body(k: int) -> str:
        r = random.Random(k)
        return "\n".join(" ".join(r.sample(words, 9)) + "." for _ in range(6))

    nav, footer = "Home | About us | Contact", "Copyright 2019 Example Corp. All rights reserved."
    docs = [f"{nav}\n{body(k)}\n{footer.replace('2019', str(2010 + k))}" for k in range(4)]  # digits differ
    docs.append(f"{nav}\n\n{footer}")  # nothing but boilerplate
    rare = "This line appears on two distinct pages only."
    docs += [f"{body(10)}\n{rare}", f"{body(11)}\n{rare}"] + [f"{body(10)}\n{rare}"] * 3  # + 3 exact copies
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    cfg = make_cfg(**OFF, dedup={"boilerplate_min_docs": 3, "minhash": False}, workers=1)
    stats = curate(cfg, tmp_path / "out", [str(src)])
    kept = {d["id"]: d["text"] for d in read_dir(tmp_path / "out" / "kept")}
    removed = {d["id"]: d["reason"] for d in read_dir(tmp_path / "out" / "removed")}
    assert removed == {"d4": "boilerplate", "d7": "exact_dedup", "d8": "exact_dedup", "d9": "exact_dedup"}
    for k in range(4):
        assert kept[f"d{k}"] == body(k)  # nav and footer gone (the footer's year is normalised away)
    assert rare in kept["d5"] and rare in kept["d6"]  # 2 distinct pages < 3, however many copies
    assert stats["counters"]["boilerplate"] == {"lines_removed": 10, "documents_changed": 5}
    assert stats["dedup"]["boilerplate_lines"] == 2
    assert "Boilerplate: 2 lines" in (tmp_path / "out" / "report.md").read_text()
    t = totals(stats)
    assert t["input"]["docs"] == t["kept"]["docs"] + sum(c["docs"] for c in t["removed"].values())
    with pytest.raises(Exception, match="boilerplate_min_docs must be 0"):
        make_cfg(dedup={"boilerplate_min_docs": 1}).validate()
