"""Document shards on disk: JSONL (plain, .gz, .zst) or Parquet, written atomically.

A shard is first written as `<name>.tmp` and renamed when closed, so a crash never leaves a file
that looks complete; a rerun rewrites only shards whose task has no completion marker.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

FIELDS = ("id", "text", "source", "meta")


class ShardWriter:
    def __init__(self, path: Path, fmt: str):
        self.path = Path(str(path) + "." + fmt)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.fmt = fmt
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict] = []
        self._pq = None
        if fmt == "jsonl":
            self._fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 (kept open across write calls; closed in close())
        elif fmt == "jsonl.gz":
            self._fh = io.TextIOWrapper(gzip.open(self.tmp, "wb", compresslevel=3), encoding="utf-8")  # noqa: SIM115 (kept open across write calls; closed in close())
        elif fmt == "jsonl.zst":
            try:
                import zstandard
            except ImportError:
                raise LmforgeError(
                    "output_format=jsonl.zst needs zstandard: pip install 'lmforge[curate]'"
                ) from None
            raw = open(self.tmp, "wb")  # noqa: SIM115 (kept open across write calls; closed in close())
            self._fh = io.TextIOWrapper(
                zstandard.ZstdCompressor(level=3).stream_writer(raw), encoding="utf-8"
            )
        elif fmt == "parquet":
            self._fh = None
        else:
            raise LmforgeError(f"unknown output format {fmt}")

    def write(self, doc: dict[str, Any]) -> None:
        self.count += 1
        if self._fh is not None:
            self._fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
            return
        row = {k: doc.get(k) for k in FIELDS}
        row["meta"] = json.dumps(doc.get("meta") or {}, ensure_ascii=False)  # free-form: JSON text column
        if "reason" in doc:
            row["reason"] = doc["reason"]
        self._rows.append(row)
        if len(self._rows) >= 4096:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        self._pq.write_table(table)
        self._rows = []

    def close(self) -> Path:
        if self._fh is not None:
            self._fh.close()
        else:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise LmforgeError(
                    "output_format=parquet needs pyarrow: pip install 'lmforge[curate]'"
                ) from None
            self._flush()
            if self._pq is None:  # an empty shard still needs a schema
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.table({k: pa.array([], pa.string()) for k in FIELDS}), self.tmp)
            else:
                self._pq.close()
        self.tmp.replace(self.path)
        return self.path


def read_shard(path: Path) -> Iterator[dict[str, Any]]:
    """The documents of a shard this module wrote, in order."""
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                row["meta"] = json.loads(row["meta"]) if row.get("meta") else {}
                yield row
        return
    if name.endswith(".gz"):
        fh = io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")  # noqa: SIM115
    elif name.endswith(".zst"):
        import zstandard

        fh = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")  # noqa: SIM115
    else:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    with fh:
        for line in fh:
            yield json.loads(line)


def shard_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*") if p.is_file() and not p.name.endswith(".tmp"))
