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
import re
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
# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF): the only way a lone surrogate, which no
# UTF-8 writer or tokenizer accepts, gets into a decoded str (strict UTF-8 decoding never makes one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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
    except OSError as e:
        raise LmforgeError(f"cannot read {f}: {e}") from None
    yield {"id": name, "text": text, "source": DEFAULT_SOURCE, "meta": {"path": name}}


def _read_jsonl(f: Path, name: str) -> Iterator[dict[str, Any]]:
    lineno = 0
    try:
        with open_binary(f) as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield _record(line, f, lineno, name)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, truncated or corrupt compressed stream
        raise LmforgeError(f"{f}: cannot read after line {lineno}: {e}") from None


def unencodable(line: bytes, obj: Any) -> str | None:
    """Why the JSON value parsed from `line` cannot be written as UTF-8 (a lone surrogate), or None.
    The full check runs only on lines that hold a surrogate escape, so clean lines cost one search."""
    if not _SURROGATE_ESCAPE.search(line):
        return None
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return (
            f"lone surrogate {e.object[e.start]!r} (an escaped half of a UTF-16 pair): not encodable as UTF-8"
        )
    return None


def _record(line: bytes, f: Path, lineno: int, name: str) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, too deeply nested
        raise LmforgeError(f"{f}:{lineno}: malformed JSON line ({str(e)[:200]})") from None
    if not isinstance(rec, dict):
        raise LmforgeError(f"{f}:{lineno}: a document must be a JSON object, got {type(rec).__name__}")
    problem = unencodable(line, rec)
    if problem:
        raise LmforgeError(f"{f}:{lineno}: {problem}")
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
        with open(f, "rb") as raw:
            yield io.BufferedReader(_ZstdStream(raw, zstandard), 1 << 20)
    else:
        with open(f, "rb") as fh:
            yield fh


class _ZstdStream(io.RawIOBase):
    """Every zstd frame of a file, one after another, as a raw byte stream that fails like gzip:
    OSError for data that is not zstd or is damaged, and for a file that ends inside a frame.
    (zstandard's stream_reader returns the partial data of a truncated file without an error,
    and stops after the first frame unless told otherwise.)"""

    FEED = 8192  # compressed bytes per step: bounds what one step can expand to (~256 MB for RLE blocks)

    def __init__(self, raw: IO[bytes], zstandard: Any) -> None:
        self._raw, self._z = raw, zstandard
        self._frame: Any = None  # the decompressobj of the frame being read
        self._carry = b""  # compressed bytes after the end of the last frame
        self._out = memoryview(b"")  # decompressed, not yet returned
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._out and not self._done:
            self._step()
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _step(self) -> None:
        chunk, self._carry = self._carry or self._raw.read(self.FEED), b""
        if not chunk:
            if self._frame is not None:
                raise OSError("truncated zstd data: the file ends inside a frame")
            self._done = True
            return
        if self._frame is None:
            self._frame = self._z.ZstdDecompressor().decompressobj()
        try:
            self._out = memoryview(self._frame.decompress(chunk))
        except self._z.ZstdError as e:
            raise OSError(f"damaged or not zstd data: {e}") from None
        if self._frame.eof:  # the frame ended inside this chunk; the next frame starts after it
            self._carry, self._frame = self._frame.unused_data, None
