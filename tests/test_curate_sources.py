"""Every source format, made tiny in the test; bad input becomes counted ReadErrors, never a crash."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.data.curate.config import SourceConfig
from lmforge.data.curate.sources import ReadError, detect_format, plan_tasks, read_task

TEXT = "The quick brown fox jumps over the lazy dog. " * 3


def read_all(path: Path, **kw) -> list:
    src = SourceConfig(path=str(path), **kw)
    out = []
    for task in plan_tasks([src], kw.pop("shard_bytes", 2**40) if False else 2**40):
        out += list(read_task(task, src, 1 << 20))
    return out


def docs(items: list) -> list[dict]:
    return [d for d in items if isinstance(d, dict)]


def write_jsonl(path: Path, rows: list, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def test_jsonl_plain_gz_zst(tmp_path):
    rows = [{"id": "a", "text": TEXT, "url": "http://x"}, {"text": "second", "source": "wiki"}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    write_jsonl(tmp_path / "d.jsonl.gz", rows, gzip.open)
    zstd = pytest.importorskip("zstandard")
    (tmp_path / "d.jsonl.zst").write_bytes(
        zstd.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    )
    for name in ("d.jsonl", "d.jsonl.gz", "d.jsonl.zst"):
        got = read_all(tmp_path / name)
        assert [d["text"] for d in got] == [TEXT, "second"]
        assert got[0]["id"] == "a" and got[0]["meta"]["url"] == "http://x" and got[0]["source"] == "unknown"
        assert got[1]["id"] == f"{name}:2" and got[1]["source"] == "wiki"
    assert read_all(tmp_path / "d.jsonl", domain="books")[1]["source"] == "books"  # the source's label wins


def test_jsonl_bad_records(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(
        b'{"text": "ok"}\n{not json\n{"text": 5}\n{"body": "x"}\n[1, 2]\n{"text": "caf\xe9"}\n'
        + b'{"text": "'
        + b"x" * (2 << 20)
        + b'"}\n{"text": "last"}\n'
    )
    got = read_all(f)
    reasons = [g.reason if isinstance(g, ReadError) else g["text"] for g in got]
    assert reasons == [
        "ok",
        "read:malformed_json",
        "read:text_not_string",
        "read:missing_text",
        "read:not_an_object",
        "read:invalid_utf8",
        "read:too_large",
        "last",
    ]
    assert [g.line for g in got if isinstance(g, ReadError)] == [2, 3, 4, 5, 6, 7]


def test_truncated_gzip_is_an_error_not_a_crash(tmp_path):
    rows = [{"text": f"{TEXT} {i}"} for i in range(2000)]
    full = tmp_path / "full.jsonl.gz"
    write_jsonl(full, rows, gzip.open)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    got = read_all(cut)
    assert isinstance(got[-1], ReadError) and got[-1].reason == "read:corrupt_file"
    assert 0 < len(docs(got)) < 2000


def test_large_jsonl_split_into_byte_ranges(tmp_path):
    rows = [{"text": f"document number {i} " + "x" * (i % 50)} for i in range(500)]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    src = SourceConfig(path=str(f))
    tasks = plan_tasks([src], 4096)
    assert len(tasks) > 3
    texts = [d["text"] for t in tasks for d in read_task(t, src, 1 << 20)]
    assert texts == [r["text"] for r in rows]  # every line exactly once, in order


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(
        pa.table({"content": [TEXT, "two"], "id": ["p1", "p2"], "lang": ["en", "en"]}), tmp_path / "d.parquet"
    )
    got = read_all(tmp_path / "d.parquet", text_field="content")
    assert [(d["id"], d["text"], d["meta"]["lang"]) for d in got] == [("p1", TEXT, "en"), ("p2", "two", "en")]


def test_csv_and_tsv(tmp_path):
    (tmp_path / "d.csv").write_text('id,text\n1,"a, quoted\nmultiline text"\n2,plain\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text("text\tid\nhello there\tt1\n", encoding="utf-8")
    assert [d["text"] for d in read_all(tmp_path / "d.csv")] == ["a, quoted\nmultiline text", "plain"]
    assert read_all(tmp_path / "d.tsv")[0]["id"] == "t1"


def test_text_files_and_separator(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "a.txt").write_text("Book one.", encoding="utf-8")
    (tmp_path / "books" / "b.txt").write_text("Part 1\n===\nPart 2", encoding="utf-8")
    (tmp_path / "books" / "bad.txt").write_bytes(b"ok\n\xff\xfe broken")
    (tmp_path / "books" / "skip.bin").write_bytes(b"\x00")
    got = read_all(tmp_path / "books")
    assert [d["id"] if isinstance(d, dict) else d.reason for d in got] == [
        "a.txt",
        "b.txt",
        "read:invalid_utf8",
    ]
    split = read_all(tmp_path / "books" / "b.txt", separator="\n===\n")
    assert [d["text"] for d in split] == ["Part 1", "Part 2"]


def test_html_extraction(tmp_path):
    pytest.importorskip("trafilatura")
    body = " ".join(
        f"Paragraph {i} talks about rivers, forests and the long history of the valley." for i in range(8)
    )
    (tmp_path / "page.html").write_text(
        f"<html><head><title>T</title></head><body><nav>Home | About | Contact</nav>"
        f"<article><h1>Valley</h1><p>{body}</p><p>{body}</p></article>"
        f"<footer>Copyright 2024 Example Inc.</footer></body></html>",
        encoding="utf-8",
    )
    [doc] = read_all(tmp_path / "page.html")
    assert "history of the valley" in doc["text"] and "Home | About" not in doc["text"]
    assert doc["source"] == "web"


def test_warc(tmp_path):
    pytest.importorskip("trafilatura")
    warcio = pytest.importorskip("warcio")
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    body = " ".join(f"Sentence {i} of a crawled article about mountain weather and snow." for i in range(10))
    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for url, ctype, payload in [
            (
                "http://a.example/1",
                "text/html",
                f"<html><body><article><p>{body}</p></article></body></html>",
            ),
            ("http://a.example/img.png", "image/png", "\x89PNG"),
        ]:
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            w.write_record(
                w.create_warc_record(url, "response", payload=BytesIO(payload.encode()), http_headers=http)
            )
        w.write_record(
            w.create_warc_record("http://a.example/1", "request", payload=BytesIO(b"GET / HTTP/1.1\r\n\r\n"))
        )
    assert warcio and detect_format(path) == "warc"
    got = read_all(path)
    assert len(got) == 2  # the request record is not a document
    assert "mountain weather" in got[0]["text"] and got[0]["meta"]["url"] == "http://a.example/1"
    assert isinstance(got[1], ReadError) and got[1].reason == "read:not_html"


def test_hf_dataset_saved_to_disk(tmp_path):
    pa = pytest.importorskip("pyarrow")
    root = tmp_path / "ds"
    root.mkdir()
    table = pa.table({"text": ["first doc", "second doc"], "label": [1, 0]})
    with (
        pa.OSFile(str(root / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as w,
    ):
        w.write_table(table)
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (root / "dataset_info.json").write_text("{}")
    assert detect_format(root) == "hf_disk"
    got = read_all(root)
    assert [(d["text"], d["meta"]["label"]) for d in got] == [("first doc", 1), ("second doc", 0)]


def test_hf_dataset_written_by_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a b c", "d e f"]}).save_to_disk(str(tmp_path / "real"))
    assert [d["text"] for d in read_all(tmp_path / "real")] == ["a b c", "d e f"]
