"""Read documents, streaming: `{"id": str, "text": str, "source": str, "meta": dict}` one at a time.

Inputs: JSONL (`.jsonl`, `.jsonl.gz`, `.jsonl.zst` when the `zstandard` package is installed),
plain text (`.txt`, one document per file), or a folder of those (recursively, in sorted path
order; other files are skipped). JSONL keys other than id/text/source/meta go into `meta`, so a
C4 `url` or a Dolma `metadata` survives. Memory stays bounded: one line or one .txt at a time.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import IO, Any

from lmforge.errors import LmforgeError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
SUFFIXES = JSONL_SUFFIXES + (".txt",)
DEFAULT_SOURCE = "unknown"


def read_documents(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the documents in a file or folder; LmforgeError if there are none."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"no such file or folder: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) and not _hidden(p, path))
        if not files:
            raise LmforgeError(f"no document files ({', '.join(SUFFIXES)}) in folder {path}")
    else:
        if not _kind(path):
            raise LmforgeError(f"unsupported document file {path}: expected one of {', '.join(SUFFIXES)}")
        files = [path]
    base = path if path.is_dir() else path.parent
    n = 0
    for f in files:
        name = f.relative_to(base).as_posix()
        docs = _read_txt(f, name) if _kind(f) == "txt" else _read_jsonl(f, name)
        for doc in docs:
            n += 1
            yield doc
    if n == 0:
        raise LmforgeError(f"no documents in {path}")


def embedded_corpus() -> Iterator[dict[str, Any]]:
    """The demo corpus shipped in lmforge/corpus/ (see its README for provenance)."""
    res = resources.files("lmforge") / "corpus" / "demo.jsonl.gz"
    with resources.as_file(res) as p:
        yield from read_documents(p)


def _kind(p: Path) -> str | None:
    name = p.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "txt" if name.endswith(".txt") else None


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def _read_txt(f: Path, name: str) -> Iterator[dict[str, Any]]:
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{f}: not UTF-8 text (byte {e.start})") from None
    yield {"id": name, "text": text, "source": DEFAULT_SOURCE, "meta": {"path": name}}


def _read_jsonl(f: Path, name: str) -> Iterator[dict[str, Any]]:
    with open_binary(f) as fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield _record(line, f, lineno, name)
        except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt compressed stream
            raise LmforgeError(f"{f}: cannot read after line {lineno}: {e}") from None


def _record(line: bytes, f: Path, lineno: int, name: str) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise LmforgeError(f"{f}:{lineno}: malformed JSON line ({e})") from None
    if not isinstance(rec, dict):
        raise LmforgeError(f"{f}:{lineno}: a document must be a JSON object, got {type(rec).__name__}")
    text = rec.get("text")
    if not isinstance(text, str):
        got = "no 'text' field" if text is None else f"'text' is {type(text).__name__}"
        raise LmforgeError(f"{f}:{lineno}: a document needs a 'text' string, this record has {got}")
    meta = rec.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    for k, v in rec.items():
        if k not in ("id", "text", "source", "meta"):
            meta.setdefault(k, v)
    doc_id = rec.get("id")
    return {
        "id": str(doc_id) if doc_id is not None else f"{name}:{lineno}",
        "text": text,
        "source": str(rec.get("source") or DEFAULT_SOURCE),
        "meta": meta,
    }


@contextmanager
def open_binary(f: Path | str) -> Iterator[IO[bytes]]:
    """A document file as bytes, decompressing .gz and .zst (the latter needs `zstandard`)."""
    f = Path(f)
    name = f.name.lower()
    if name.endswith(".gz"):
        with gzip.open(f, "rb") as fh:
            yield fh
    elif name.endswith(".zst"):
        try:
            import zstandard  # optional: only .zst input needs it
        except ImportError:
            raise LmforgeError(f"reading {f} needs the 'zstandard' package: pip install zstandard") from None
        with open(f, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield io.BufferedReader(reader, 1 << 20)
    else:
        with open(f, "rb") as fh:
            yield fh
