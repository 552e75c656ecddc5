"""Curation sources, streamed: every reader yields documents or `ReadError`s, never a whole file.

Formats: JSONL (plain, .gz, .zst), Parquet, CSV/TSV, text files (one document per file, or split
at a separator line), HTML pages (main text by trafilatura), WARC/WET crawl files (warcio), and a
Hugging Face dataset saved with `save_to_disk` (its Arrow stream files, read with pyarrow).
Bad input (malformed JSON, invalid UTF-8, a lone surrogate escape, a missing or non-string text
field, a record over `max_record_bytes`) becomes a `ReadError` with file and line, so the pipeline
counts it under an explicit reason and goes on; a file any reader fails to decode (truncated or
damaged compression, not the format its name says) ends in one `read:corrupt_file`.

Large plain JSONL files are split into byte ranges (`shard_bytes`): a range owns every line that
starts inside it, so the tasks, and hence the output, do not depend on the number of workers.
"""

from __future__ import annotations

import csv
import json
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.curate.config import SourceConfig
from lmforge.data.documents import open_binary, unencodable
from lmforge.errors import LmforgeError

SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".jsonl.zst": "jsonl",
    ".json.zst": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "txt",
    ".md": "txt",
    ".html": "html",
    ".htm": "html",
    ".warc": "warc",
    ".warc.gz": "warc",
    ".wet": "warc",
    ".wet.gz": "warc",
    ".arc.gz": "warc",
}
WEB_FORMATS = ("html", "warc")


@dataclass(frozen=True)
class Task:
    index: int  # position in the run's task list: names the output shards
    source: int  # index into the run's sources
    path: str
    name: str  # path relative to the source root: ids and error locations
    format: str
    start: int = 0  # byte range of a split plain JSONL file
    end: int = -1


@dataclass
class ReadError:
    reason: str  # read:malformed_json, read:invalid_utf8, read:missing_text, ...
    file: str
    line: int
    detail: str
    raw: str = ""


def detect_format(path: Path) -> str | None:
    if path.is_dir():
        return "hf_disk" if (path / "state.json").exists() or (path / "dataset_dict.json").exists() else None
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def plan_tasks(sources: list[SourceConfig], shard_bytes: int) -> list[Task]:
    tasks: list[Task] = []
    for si, src in enumerate(sources):
        root = Path(src.path)
        if not root.exists():
            raise LmforgeError(f"source not found: {root}")
        files = _files(root, src.format)
        if not files:
            raise LmforgeError(
                f"no readable documents in {root} (formats: {', '.join(sorted(set(SUFFIXES.values())))}"
                ", hf_disk)"
            )
        for f, fmt in files:
            name = f.relative_to(root).as_posix() if root.is_dir() and f != root else f.name
            size = f.stat().st_size if f.is_file() else 0
            plain_jsonl = fmt == "jsonl" and f.name.lower().endswith((".jsonl", ".json", ".ndjson"))
            if plain_jsonl and size > shard_bytes:
                for start in range(0, size, shard_bytes):
                    tasks.append(
                        Task(len(tasks), si, str(f), name, fmt, start, min(size, start + shard_bytes))
                    )
            else:
                tasks.append(Task(len(tasks), si, str(f), name, fmt))
    return tasks


def fingerprint(sources: list[SourceConfig]) -> dict[str, list[int]]:
    """{file: [size, mtime_ns]} of every file the sources read (a saved dataset folder: each file in
    it). Stat calls only, no reading: a finished run is tied to exactly these inputs."""
    out: dict[str, list[int]] = {}
    for src in sources:
        root = Path(src.path)
        if not root.exists():
            raise LmforgeError(f"source not found: {root}")
        for f, fmt in _files(root, src.format):
            for p in sorted(x for x in f.rglob("*") if x.is_file()) if fmt == "hf_disk" else [f]:
                st = p.stat()
                out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


def _files(root: Path, fmt: str) -> list[tuple[Path, str]]:
    if fmt == "hf_disk" or (fmt == "auto" and detect_format(root) == "hf_disk"):
        return [(root, "hf_disk")]
    if root.is_file():
        found = detect_format(root) if fmt == "auto" else fmt
        if found is None:
            raise LmforgeError(f"cannot tell the format of {root} from its name; set the source's format")
        return [(root, found)]
    out = []
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.is_dir() and detect_format(p) == "hf_disk" and fmt in ("auto", "hf_disk"):
            out.append((p, "hf_disk"))
        elif p.is_file() and not any(p.is_relative_to(d) for d, f in out if f == "hf_disk"):
            found = detect_format(p)
            if found and (fmt == "auto" or fmt == found):
                out.append((p, found))
    return out


def read_task(task: Task, src: SourceConfig, max_record_bytes: int) -> Iterator[dict[str, Any] | ReadError]:
    """Documents {"id", "text", "source", "meta"} (source = domain label) or ReadErrors, in file order."""
    reader = {
        "jsonl": _jsonl,
        "parquet": _parquet,
        "csv": _csv,
        "txt": _txt,
        "html": _html,
        "warc": _warc,
        "hf_disk": _hf_disk,
    }[task.format]
    default = src.domain or ("web" if task.format in WEB_FORMATS else "unknown")
    n = 0
    try:
        for rec in reader(task, src, max_record_bytes):
            n += 1
            if isinstance(rec, dict):
                rec["source"] = src.domain or rec.get("source") or default
            yield rec
    except LmforgeError:
        raise  # a missing optional package: the setup is wrong, not this file
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises on a damaged file ends that file only
        yield ReadError(
            "read:corrupt_file",
            task.name,
            n + 1,
            f"cannot read past record {n}: {type(e).__name__}: {e}"[:300],
        )


def _record(obj: Any, task: Task, src: SourceConfig, line: int, locator: str) -> dict | ReadError:
    """A parsed row -> document, or the ReadError naming what is wrong with it."""
    if not isinstance(obj, dict):
        return ReadError(
            "read:not_an_object", task.name, line, f"a record must be an object, got {type(obj).__name__}"
        )
    text = obj.get(src.text_field)
    if text is None:
        return ReadError("read:missing_text", task.name, line, f"no '{src.text_field}' field", str(obj)[:200])
    if not isinstance(text, str):
        return ReadError(
            "read:text_not_string",
            task.name,
            line,
            f"'{src.text_field}' is {type(text).__name__}",
            str(obj)[:200],
        )
    meta = dict(obj["meta"]) if isinstance(obj.get("meta"), dict) else {}
    for k, v in obj.items():
        if k not in (src.text_field, src.id_field, "source", "meta"):
            meta.setdefault(k, v)
    meta.setdefault("file", task.name)
    doc_id = obj.get(src.id_field)
    return {
        "id": str(doc_id) if doc_id is not None else locator,
        "text": text,
        "source": obj.get("source"),
        "meta": meta,
    }


def _jsonl(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    with open_binary(task.path) as fh:
        offset = 0
        if task.start > 0:  # a range owns the lines that start inside it: skip the partial first line
            fh.seek(task.start - 1)
            offset = task.start - 1 + len(fh.readline())
        lineno = 0
        try:
            while task.end < 0 or offset < task.end:
                line = fh.readline(limit + 1)
                if not line:
                    break
                lineno += 1
                here, offset = offset, offset + len(line)
                where = f"{task.name}:{lineno}" if task.start == 0 else f"{task.name}@{here}"
                if len(line) > limit and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):  # skip the rest without holding it
                        line = fh.readline(1 << 20)
                        offset += len(line)
                    yield ReadError(
                        "read:too_large", task.name, lineno, f"record over {limit} bytes (at byte {here})"
                    )
                    continue
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except UnicodeDecodeError as e:
                    yield ReadError(
                        "read:invalid_utf8", task.name, lineno, str(e)[:200], line[:200].decode("latin-1")
                    )
                    continue
                except (ValueError, RecursionError) as e:  # RecursionError: nested too deep to parse
                    yield ReadError(
                        "read:malformed_json",
                        task.name,
                        lineno,
                        str(e)[:200],
                        line[:200].decode("utf-8", "replace"),
                    )
                    continue
                problem = unencodable(line, obj)
                if problem:  # fastText, tokenizers and the UTF-8 writers all reject it later
                    yield ReadError(
                        "read:lone_surrogate",
                        task.name,
                        lineno,
                        problem,
                        line[:200].decode("utf-8", "replace"),
                    )
                    continue
                yield _record(obj, task, src, lineno, where)
        except (OSError, EOFError, zlib.error, ValueError) as e:  # truncated / corrupt compressed stream
            yield ReadError(
                "read:corrupt_file", task.name, lineno + 1, f"cannot read past line {lineno}: {e}"[:300]
            )


def _parquet(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LmforgeError("reading Parquet needs pyarrow: pip install 'lmforge[curate]'") from None
    row = 0
    try:
        pf = pq.ParquetFile(task.path)
        for batch in pf.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                row += 1
                yield _record(obj, task, src, row, f"{task.name}:{row}")
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError subclasses for damaged files
        yield ReadError("read:corrupt_file", task.name, row + 1, f"{type(e).__name__}: {e}"[:300])


def _csv(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    csv.field_size_limit(min(limit, sys.maxsize))
    delimiter = "\t" if task.path.lower().endswith(".tsv") else ","
    row = 0
    with open(task.path, encoding="utf-8", errors="strict", newline="") as fh:
        try:
            for row, obj in enumerate(csv.DictReader(fh, delimiter=delimiter), 1):
                yield _record(obj, task, src, row + 1, f"{task.name}:{row + 1}")  # +1: the header line
        except UnicodeDecodeError as e:
            yield ReadError("read:invalid_utf8", task.name, row + 2, str(e)[:200])
        except csv.Error as e:
            yield ReadError("read:malformed_csv", task.name, row + 2, str(e)[:200])


def _decode(task: Task, limit: int) -> str | ReadError:
    size = Path(task.path).stat().st_size
    if size > limit:
        return ReadError("read:too_large", task.name, 0, f"file of {size} bytes is over {limit}")
    data = Path(task.path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        return ReadError("read:invalid_utf8", task.name, data[: e.start].count(b"\n") + 1, str(e)[:200])


def _txt(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    text = _decode(task, limit)
    if isinstance(text, ReadError):
        yield text
        return
    parts = text.split(src.separator) if src.separator else [text]
    for i, part in enumerate(parts):
        doc_id = f"{task.name}#{i}" if src.separator else task.name
        yield {"id": doc_id, "text": part, "source": None, "meta": {"file": task.name}}


def _trafilatura():
    try:
        import trafilatura
    except ImportError:
        raise LmforgeError("HTML and WARC sources need trafilatura: pip install 'lmforge[curate]'") from None
    return trafilatura


def extract_html(html: str | bytes) -> str | None:
    """Main text of a page; FineWeb ran trafilatura with favour_precision (datatrove examples/fineweb.py)."""
    return _trafilatura().extract(html, favor_precision=True, include_comments=False, deduplicate=False)


def _html(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    html = _decode(task, limit)
    if isinstance(html, ReadError):
        yield html
        return
    text = extract_html(html)
    yield {
        "id": task.name,
        "text": text or "",
        "source": None,
        "meta": {"file": task.name, "extracted": text is not None},
    }


def _warc(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    try:
        from warcio.archiveiterator import ArchiveIterator
    except ImportError:
        raise LmforgeError("WARC sources need warcio: pip install 'lmforge[curate]'") from None
    n = 0
    with open(task.path, "rb") as fh:
        try:
            for rec in ArchiveIterator(fh, arc2warc=True):
                if rec.rec_type not in ("response", "conversion", "resource"):
                    continue
                n += 1
                url = rec.rec_headers.get_header("WARC-Target-URI") or ""
                rid = rec.rec_headers.get_header("WARC-Record-ID") or f"{task.name}#{n}"
                meta = {"file": task.name, "url": url, "date": rec.rec_headers.get_header("WARC-Date") or ""}
                body = rec.content_stream().read(limit + 1)
                if len(body) > limit:
                    yield ReadError("read:too_large", task.name, n, f"record {rid} over {limit} bytes")
                    continue
                if rec.rec_type == "conversion":  # WET: text already extracted
                    text = body.decode("utf-8", "replace")
                else:
                    ctype = (rec.http_headers.get_header("Content-Type") if rec.http_headers else "") or ""
                    if "html" not in ctype.lower():
                        yield ReadError(
                            "read:not_html", task.name, n, f"{rid} {url}: content type {ctype or '?'}"
                        )
                        continue
                    text = extract_html(body) or ""
                yield {"id": rid, "text": text, "source": None, "meta": meta}
        except Exception as e:  # noqa: BLE001 - warcio raises ArchiveLoadFailed / zlib errors on damaged archives
            yield ReadError("read:corrupt_file", task.name, n + 1, f"{type(e).__name__}: {e}"[:300])


def _hf_disk(task: Task, src: SourceConfig, limit: int) -> Iterator[dict | ReadError]:
    """`datasets.Dataset.save_to_disk` output: state.json lists Arrow *stream* files
    (or a DatasetDict of splits)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise LmforgeError(
            "reading a saved Hugging Face dataset needs pyarrow: pip install 'lmforge[curate]'"
        ) from None
    root = Path(task.path)
    if (root / "dataset_dict.json").exists():
        splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        dirs = [(root / s, f"{s}/") for s in splits]
    else:
        dirs = [(root, "")]
    row = 0
    for d, prefix in dirs:
        try:
            files = [f["filename"] for f in json.loads((d / "state.json").read_text())["_data_files"]]
        except (OSError, ValueError, KeyError) as e:
            yield ReadError("read:corrupt_file", task.name, 0, f"{d}/state.json: {e}")
            continue
        for fname in files:
            try:
                with pa.memory_map(str(d / fname)) as mm:
                    reader = pa.ipc.open_stream(mm)
                    for batch in reader:
                        for obj in batch.to_pylist():
                            row += 1
                            yield _record(obj, task, src, row, f"{task.name}:{prefix}{row}")
            except (OSError, pa.ArrowInvalid) as e:
                yield ReadError("read:corrupt_file", task.name, row + 1, f"{fname}: {e}"[:300])
