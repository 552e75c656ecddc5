"""Reading documents: JSONL (plain, gzip, zstd), .txt, folders; clear errors; the embedded corpus."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

import pytest
from conftest import shared_data

from lmforge.data.documents import embedded_corpus, read_documents
from lmforge.errors import LmforgeError

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def test_jsonl_fields_defaults_and_extra_keys(tmp_path):
    f = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"id": "d1", "text": "one", "source": "web", "meta": {"lang": "en"}, "url": "http://x"},
            {"text": "two"},
            "",  # blank lines are skipped
            {"id": 7, "text": "three", "label": 1},
        ],
    )
    docs = list(read_documents(f))
    assert docs[0] == {"id": "d1", "text": "one", "source": "web", "meta": {"lang": "en", "url": "http://x"}}
    assert docs[1] == {"id": "a.jsonl:2", "text": "two", "source": "unknown", "meta": {}}
    assert docs[2]["id"] == "7" and docs[2]["meta"] == {"label": 1}


def test_gzip_txt_and_folders(tmp_path):
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "b" / "x.jsonl.gz", [{"id": "g", "text": "gz text"}], opener=gzip.open)
    (tmp_path / "a.txt").write_text("plain ünïcode\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("skipped", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "h.txt").write_text("skipped too", encoding="utf-8")
    docs = list(read_documents(tmp_path))
    assert [d["id"] for d in docs] == ["a.txt", "g"]  # sorted by path: a.txt < b/x.jsonl.gz
    assert docs[0]["text"] == "plain ünïcode\n" and docs[1]["text"] == "gz text"
    assert next(read_documents(tmp_path / "a.txt"))["meta"] == {"path": "a.txt"}


def test_malformed_line_names_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, '{"text": "cut off'])
    docs = read_documents(f)
    assert next(docs)["text"] == "ok"  # streaming: the good line comes first
    with pytest.raises(LmforgeError, match=r"bad\.jsonl:2: malformed JSON"):
        next(docs)


@pytest.mark.parametrize(
    "row, message",
    [({"id": "x"}, "no 'text' field"), ({"text": 3}, "'text' is int"), ([1, 2], "JSON object")],
)
def test_bad_records(tmp_path, row, message):
    f = write_jsonl(tmp_path / "r.jsonl", [row])
    with pytest.raises(LmforgeError, match=message):
        list(read_documents(f))


def test_missing_empty_and_unsupported(tmp_path):
    with pytest.raises(LmforgeError, match="no such file"):
        list(read_documents(tmp_path / "missing.jsonl"))
    with pytest.raises(LmforgeError, match="no document files"):
        list(read_documents(tmp_path))
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(LmforgeError, match="no documents"):
        list(read_documents(tmp_path / "empty.jsonl"))
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(LmforgeError, match="unsupported"):
        list(read_documents(tmp_path / "data.csv"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(LmforgeError, match="not UTF-8"):
        list(read_documents(tmp_path / "latin1.txt"))


def test_truncated_gzip(tmp_path):
    rows = [{"text": os.urandom(500).hex()} for _ in range(50)]  # incompressible: the file is ~25 KB
    f = write_jsonl(tmp_path / "t.jsonl.gz", rows, opener=gzip.open)
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(LmforgeError, match="cannot read"):
        list(read_documents(f))


def test_zstd(tmp_path):
    f = tmp_path / "z.jsonl.zst"
    if importlib.util.find_spec("zstandard") is None:
        f.write_bytes(b"not read")
        with pytest.raises(LmforgeError, match="zstandard"):
            list(read_documents(f))
        return
    import zstandard

    f.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zst"}\n'))
    assert [d["text"] for d in read_documents(f)] == ["zst"]


def test_embedded_corpus():
    docs = list(embedded_corpus())
    assert len(docs) == 357
    assert sum(len(d["text"].encode("utf-8")) for d in docs) == 3_000_676
    assert len({d["id"] for d in docs}) == len(docs)
    assert {d["source"] for d in docs} == {"books"}
    assert {d["meta"]["author"] for d in docs} >= {"Jane Austen", "Lewis Carroll", "William Shakespeare"}
    assert all(2_000 < len(d["text"]) < 25_000 for d in docs)


def test_build_script_reproduces_the_shipped_corpus(tmp_path):
    data = shared_data("corpora").parent
    spec = importlib.util.spec_from_file_location(
        "build_demo_corpus", ROOT / "scripts" / "build_demo_corpus.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write(mod.build(data), tmp_path / "demo.jsonl.gz")
    assert (tmp_path / "demo.jsonl.gz").read_bytes() == (
        ROOT / "lmforge" / "corpus" / "demo.jsonl.gz"
    ).read_bytes()
