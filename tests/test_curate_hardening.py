"""Damaged input never ends a curation run, and a finished run is never reused for other inputs.

Issue 13, items 8-10: a file no reader can decode is one accounted `read:corrupt_file`; a record
with a lone surrogate escape is one `read:lone_surrogate`; a rerun over changed inputs is refused.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.config import from_dict
from lmforge.data.curate import pipeline
from lmforge.data.curate.config import CurateConfig, SourceConfig
from lmforge.data.curate.sources import ReadError, plan_tasks, read_task
from lmforge.data.curate.stats import check_invariant, totals
from lmforge.data.documents import read_documents
from lmforge.errors import LmforgeError

zstd = pytest.importorskip("zstandard")
pa = pytest.importorskip("pyarrow")

SENTENCES = [
    "The river flows past the old mill and into the quiet valley below the hills.",
    "Farmers in the region grow wheat, barley and potatoes on small family plots.",
    "A new library opened downtown last spring with a large collection of history books.",
    "Scientists measured the temperature of the lake every morning for three years.",
]


def text(i: int) -> str:
    return " ".join(SENTENCES[(i + k) % 4] for k in range(6)) + f" Record number {i}."


def read_all(path: Path) -> list:
    src = SourceConfig(path=str(path))
    return [r for task in plan_tasks([src], 2**40) for r in read_task(task, src, 1 << 20)]


def reasons(items: list) -> list[str]:
    return [r.reason if isinstance(r, ReadError) else "doc" for r in items]


def jsonl_bytes(n: int) -> bytes:
    return "".join(json.dumps({"text": text(i)}) + "\n" for i in range(n)).encode()


def damaged_hf_dataset(root: Path, how: str) -> Path:
    root.mkdir()
    if how == "dict":  # a DatasetDict whose index is not JSON
        (root / "dataset_dict.json").write_text("{not json")
    else:  # state.json fine, the Arrow stream file is garbage
        (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data.arrow"}]}))
        (root / "data.arrow").write_bytes(os.urandom(512))
    return root


@pytest.mark.parametrize(
    "name,payload",
    [
        ("not_zstd.jsonl.zst", b"this is plain text, not a zstd frame\n" * 20),
        ("not_gzip.jsonl.gz", b"this is plain text, not gzip\n" * 20),
        ("junk.parquet", b"PAR1" + bytes(range(256)) * 4 + b"PAR1"),
    ],
)
def test_a_file_no_reader_can_decode_is_one_corrupt_file(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    got = read_all(tmp_path / name)
    assert reasons(got) == ["read:corrupt_file"], got


@pytest.mark.parametrize("tail", [b"", b"\xff" * 64], ids=["cut", "cut+junk"])
def test_zstd_cut_short_keeps_the_documents_before_the_cut(tmp_path, tail):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(SENTENCES[i % 4].split()) for _ in range(80))} for i in range(3000)]
    good = zstd.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    f = tmp_path / "cut.jsonl.zst"
    f.write_bytes(good[: len(good) // 2] + tail)  # zstandard's own reader returns the half silently
    got = read_all(f)
    assert reasons(got)[-1] == "read:corrupt_file" and set(reasons(got)[:-2]) == {"doc"}
    assert 0 < len(got) - 1 < 3000


def test_zstd_every_frame_is_read(tmp_path):
    c = zstd.ZstdCompressor()
    f = tmp_path / "frames.jsonl.zst"  # as pzstd or `cat a.zst b.zst` make them
    f.write_bytes(c.compress(jsonl_bytes(5)) + c.compress(jsonl_bytes(7)))
    assert reasons(read_all(f)) == ["doc"] * 12


@pytest.mark.parametrize("how", ["dict", "arrow"])
def test_damaged_saved_dataset_is_a_corrupt_file(tmp_path, how):
    got = read_all(damaged_hf_dataset(tmp_path / "ds", how))
    assert reasons(got) == ["read:corrupt_file"], got


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=600),
    suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".csv", ".txt", ".warc.gz"]),
)
def test_any_bytes_in_any_format_never_raise(tmp_path, data, suffix):
    f = tmp_path / f"x{suffix}"
    f.write_bytes(data)
    for item in read_all(f):
        assert isinstance(item, ReadError) or isinstance(item["text"], str)
        if isinstance(item, dict):
            json.dumps(item, ensure_ascii=False).encode("utf-8")  # every document can be written


def test_lone_surrogate_escapes_are_removed_with_their_reason(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text(
        "\n".join(
            [
                '{"text": "fine"}',
                '{"text": "bad \\ud800 high half"}',
                '{"text": "bad low half \\uDC00"}',
                '{"text": "clean text", "url": "http://x/\\udfff"}',  # in a field that is written out too
                '{"text": "a real pair \\ud83d\\ude00"}',
                '{"text": "an escaped backslash \\\\ud800"}',
                "[" * 100_000,  # nested past the parser's recursion limit
                '{"text": "last"}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    got = read_all(f)
    assert reasons(got) == [
        "doc",
        "read:lone_surrogate",
        "read:lone_surrogate",
        "read:lone_surrogate",
        "doc",
        "doc",
        "read:malformed_json",
        "doc",
    ]
    assert [g.line for g in got if isinstance(g, ReadError)] == [2, 3, 4, 7]
    assert got[4]["text"] == "a real pair \U0001f600" and got[5]["text"] == "an escaped backslash \\ud800"


def test_read_documents_names_the_line_or_file_instead_of_crashing(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"text": "ok"}\n{"text": "x\\ud800"}\n', encoding="utf-8")
    with pytest.raises(LmforgeError, match=r"s.jsonl:2: lone surrogate"):
        list(read_documents(tmp_path / "s.jsonl"))
    (tmp_path / "z.jsonl.zst").write_bytes(b"not zstd at all\n" * 10)
    with pytest.raises(LmforgeError, match=r"z.jsonl.zst: cannot read .*not zstd"):
        list(read_documents(tmp_path / "z.jsonl.zst"))


def corpus(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(
        jsonl_bytes(12) + b'{"text": "lone \\ud800 surrogate, ' + text(99).encode() + b'"}\n'
    )
    (folder / "b.jsonl.zst").write_bytes(b"not a zstd frame\n" * 10)
    (folder / "c.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(30))[:200])  # truncated
    damaged_hf_dataset(folder / "d_saved", "arrow")
    return folder


def cfg(**kw) -> CurateConfig:
    return from_dict(CurateConfig, {"workers": 1, "length": {"min_chars": 1}, **kw})


def test_curation_accounts_for_damaged_files_and_records_and_finishes(tmp_path):
    pytest.importorskip(
        "fasttext", reason="needs the curate extra (fasttext-predict): lang_id runs on every text"
    )
    stats = pipeline.curate(cfg(), tmp_path / "out", [str(corpus(tmp_path / "raw"))])
    check_invariant(stats)
    tot = totals(stats)
    assert tot["removed"]["read:corrupt_file"]["docs"] == 3  # b.jsonl.zst, c.jsonl.gz, d_saved
    assert tot["removed"]["read:lone_surrogate"]["docs"] == 1
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert {(e["file"], e["reason"]) for e in errors} == {
        ("a.jsonl", "read:lone_surrogate"),
        ("b.jsonl.zst", "read:corrupt_file"),
        ("c.jsonl.gz", "read:corrupt_file"),
        ("d_saved", "read:corrupt_file"),
    }
    assert tot["input"]["docs"] == tot["kept"].get("docs", 0) + sum(
        r["docs"] for r in tot["removed"].values()
    )


def test_a_finished_or_unfinished_run_refuses_changed_inputs(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_bytes(jsonl_bytes(10))
    c, out = cfg(lang_id={"enabled": False}), tmp_path / "out"
    first = pipeline.curate(c, out, [str(raw)])
    assert pipeline.curate(c, out, [str(raw)]) == first  # unchanged: the finished run is reused
    (raw / "b.jsonl").write_bytes(jsonl_bytes(3))
    with pytest.raises(LmforgeError, match=r"inputs changed .*new: .*b\.jsonl"):
        pipeline.curate(c, out, [str(raw)])
    (raw / "b.jsonl").unlink()
    with open(raw / "a.jsonl", "ab") as f:
        f.write(jsonl_bytes(1))
    with pytest.raises(LmforgeError, match=r"inputs changed .*changed: .*a\.jsonl"):
        pipeline.curate(c, out, [str(raw)])
    assert json.loads((out / "stats.json").read_text()) == first  # nothing was overwritten

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_dedup", crash)  # leave an unfinished run, then change its input
    with pytest.raises(KeyboardInterrupt):
        pipeline.curate(c, tmp_path / "half", [str(raw)])
    monkeypatch.undo()
    (raw / "a.jsonl").write_bytes(jsonl_bytes(10))  # same byte ranges, other content and mtime
    with pytest.raises(LmforgeError, match="inputs changed"):
        pipeline.curate(c, tmp_path / "half", [str(raw)])
