"""The documents of an lm-eval task file: `dataset_path` / `dataset_name` / `dataset_kwargs` (local
json, csv or parquet `data_files`, or a hub dataset through `datasets`, with lmforge's offline
mirror), its splits loaded once, and `process_docs` applied to each split on first use."""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.eval.tasks.data import HUB_MIRROR_VAR, read_jsonl
from lmforge.eval.tasks.lmeval_fields import FunctionRef, Resolver

DATASET_KWARGS = {"data_files", "column_names", "field", "trust_remote_code"}
LOCAL_BUILDERS = {"json", "csv", "parquet"}


def _data_file(f: str, base: Path) -> Path:
    p = Path(os.path.expanduser(f))
    if not p.is_absolute():  # datasets reads from the working directory; beside the YAML is also tried
        p = p if p.exists() else base / p
    if not p.is_file():
        raise LmforgeError(f"data file not found: {f}")
    return p


def _read_local(builder: str, files: list[Path], kwargs: dict) -> list[dict]:
    docs: list[dict] = []
    for f in files:
        if builder == "json":
            import json

            text = f.read_text(encoding="utf-8")
            try:
                data = json.loads(text)  # one JSON document (a list, or a mapping with `field`)
                rows = data[kwargs["field"]] if "field" in kwargs else data
                rows = rows if isinstance(rows, list) else [rows]
            except json.JSONDecodeError:
                rows = read_jsonl(f)
        elif builder == "csv":
            try:
                import pandas as pd  # datasets' csv builder is pandas: same column types
            except ImportError:
                raise LmforgeError("csv task data needs pandas: pip install pandas") from None
            names = kwargs.get("column_names")
            frame = pd.read_csv(f, names=names, header=None if names else "infer", keep_default_na=True)
            rows = frame.to_dict("records")
        else:
            import pyarrow.parquet as pq

            rows = pq.read_table(f).to_pylist()
        docs.extend(rows)
    return docs


class Documents:
    """The splits of one task's dataset, loaded once, after `process_docs`."""

    def __init__(self, cfg: dict, where: Path, resolver: Resolver):
        self.cfg, self.where, self.resolver = cfg, where, resolver
        self.splits: dict[str, list[dict]] | None = None
        kwargs = dict(cfg.get("dataset_kwargs") or {})
        bad = sorted(set(kwargs) - DATASET_KWARGS)
        if bad:
            raise LmforgeError(
                f"{where}: dataset_kwargs key {bad[0]!r} is not supported by lmforge "
                f"(supported: {', '.join(sorted(DATASET_KWARGS))})"
            )
        self.kwargs = kwargs
        self.process = cfg.get("process_docs")
        if self.process is not None:
            if not isinstance(self.process, FunctionRef):
                raise LmforgeError(f"{where}: process_docs must be a !function")
            self.process = resolver.function(self.process, where)

    def _load_all(self) -> dict[str, list[dict]]:
        path, name = self.cfg.get("dataset_path"), self.cfg.get("dataset_name")
        if not path:
            raise LmforgeError(f"{self.where}: no dataset_path")
        kw = {k: v for k, v in self.kwargs.items() if k != "trust_remote_code"}
        if path in LOCAL_BUILDERS:
            files = kw.get("data_files")
            if files is None:
                raise LmforgeError(f"{self.where}: dataset_path {path} needs dataset_kwargs.data_files")
            if not isinstance(files, dict):  # one file or a list: the `train` split, as in datasets
                files = {"train": files}
            base = self.where.parent
            return {
                s: _read_local(path, [_data_file(f, base) for f in ([fs] if isinstance(fs, str) else fs)], kw)
                for s, fs in files.items()
            }
        return self._hub(path, name, kw)

    def _hub(self, path: str, name: str | None, kw: dict) -> dict[str, list[dict]]:
        try:
            import datasets
        except ImportError:
            raise LmforgeError(
                f"{self.where}: dataset_path {path} is a hub dataset: it needs `datasets` "
                "(or point dataset_path at json/csv/parquet with data_files)"
            ) from None
        where = path
        mirror = os.environ.get(HUB_MIRROR_VAR)
        if mirror and (Path(mirror) / path).is_dir():
            where = str(Path(mirror) / path)
        try:
            ds = datasets.load_dataset(where, name, **kw)
        except Exception as e:  # noqa: BLE001 -- network, auth, missing dataset: one line for the user
            raise LmforgeError(
                f"{self.where}: cannot load dataset {path}{'/' + name if name else ''}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        return {s: [dict(r) for r in ds[s]] for s in ds}

    def split(self, name: str) -> list[dict] | None:
        if self.splits is None:
            self.splits = self._load_all()
        if name not in self.splits:
            return None
        docs = self.splits[name]
        if self.process is not None and not getattr(self, f"_done_{name}", False):
            docs = self.splits[name] = self._processed(docs)
            setattr(self, f"_done_{name}", True)
        return docs

    def _processed(self, docs: list[dict]) -> list[dict]:
        try:
            import datasets
        except ImportError:
            raise LmforgeError(
                f"{self.where}: process_docs works on a datasets.Dataset: pip install datasets"
            ) from None
        try:
            out = self.process(datasets.Dataset.from_list(docs))
        except Exception as e:  # noqa: BLE001 -- the user's function: say which and why
            raise LmforgeError(f"{self.where}: process_docs failed: {type(e).__name__}: {e}") from None
        return [dict(d) for d in out]
