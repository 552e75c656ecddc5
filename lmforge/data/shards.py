"""Encode documents into token shards: flat little-endian uint16/uint32 files plus meta.json.

    out_dir/train_000000.bin, train_000001.bin, ..., val_000000.bin, meta.json

Every document is followed by the end-of-text token, so documents are separated by it (GPT-2 /
nanoGPT layout). Shards are filled to exactly `shard_tokens` (the last one holds the rest); a
document may continue in the next shard, and readers treat a split as one concatenated stream.

The split is by document: a seeded hash of the document id sends it to validation with
probability `val_fraction`, independent of order, worker count and batching, so the same
corpus always splits the same way. Encoding runs in worker processes over batches of documents,
results are written in input order, so the shards are byte-identical for any `workers`.

meta.json records each shard's largest token id (`max_id`); `check_vocab` compares it with the
model's vocabulary before training, and the loader checks every window it reads.

Everything is written into a fresh temporary folder beside `out_dir` and renamed into place at
the end: a failure never leaves a half-written shard folder, and never touches an existing one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lmforge.data.config import DataConfig
from lmforge.errors import LmforgeError
from lmforge.tokenizer import Tokenizer

FORMAT = "lmforge-shards-1"
SPLITS = ("train", "val")
# A batch sent to a worker: big enough that pickling is noise next to encoding (~0.1 s of work),
# small enough that the 3 MB demo corpus still spreads over a few processes.
BATCH_CHARS = 256 * 1024
BATCH_DOCS = 1024


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65,536), else uint32; always little-endian."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def is_val(doc_id: str, seed: int, val_fraction: float) -> bool:
    """The seeded hash of a document id decides its split."""
    h = hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < val_fraction


def encode_corpus(
    docs: Iterable[dict[str, Any]],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    cfg: DataConfig,
    *,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Tokenize `docs` into train/val shards in `out_dir`; returns the meta (also in meta.json).

    `out_dir` must be absent, empty, or (with overwrite=True) an earlier shard folder.
    `on_progress(documents, bytes)` is called after each batch with the running totals.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    dtype = shard_dtype(tokenizer.vocab_size)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp_{out_dir.name}_{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        writers = {s: _ShardWriter(tmp, s, dtype, cfg.shard_tokens) for s in SPLITS}
        stats = {s: {"bytes": 0, "documents": 0} for s in SPLITS}
        workers = cfg.workers or os.cpu_count() or 1
        tokenizer.save(tmp / "tokenizer.json")  # the shards carry the tokenizer that made them
        for split, tokens, n_bytes, n_docs in _encode(_batches(docs, cfg), tmp / "tokenizer.json", workers):
            writers[split].write(tokens)
            stats[split]["bytes"] += n_bytes
            stats[split]["documents"] += n_docs
            if on_progress:
                on_progress(*(sum(s[key] for s in stats.values()) for key in ("documents", "bytes")))
        splits = {}
        for s in SPLITS:
            shards = writers[s].close()
            splits[s] = {"shards": shards, "tokens": sum(x["tokens"] for x in shards), **stats[s]}
        meta = {
            "format": FORMAT,
            "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer_hash": tokenizer.hash,
            "eot_id": tokenizer.eot_id,
            "seed": cfg.seed,
            "val_fraction": cfg.val_fraction,
            "shard_tokens": cfg.shard_tokens,
            "splits": splits,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**meta, "dir": str(out_dir)}


def load_meta(shard_dir: str | Path) -> dict[str, Any]:
    """Read meta.json and check that every shard file it lists is there with the right size."""
    shard_dir = Path(shard_dir)
    path = shard_dir / "meta.json"
    if not path.is_file():
        raise LmforgeError(f"no token shards in {shard_dir} (meta.json is missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        itemsize = np.dtype(meta["dtype"]).itemsize
        shards = [(sh["file"], int(sh["tokens"])) for s in SPLITS for sh in meta["splits"][s]["shards"]]
        missing = [k for k in ("tokenizer_hash", "eot_id", "vocab_size") if k not in meta]
        if missing:
            raise KeyError(", ".join(missing))
    except (ValueError, KeyError, TypeError) as e:
        raise LmforgeError(f"{path} is not a valid shard meta file ({type(e).__name__}: {e})") from None
    for name, tokens in shards:
        f = shard_dir / name
        if not f.is_file() or f.stat().st_size != tokens * itemsize:
            size = f.stat().st_size if f.is_file() else "missing"
            raise LmforgeError(f"shard {f} should hold {tokens * itemsize} bytes, found {size}")
    return {**meta, "dir": str(shard_dir)}


def check_vocab(meta: dict[str, Any], vocab_size: int) -> None:
    """LmforgeError naming the first shard whose largest token id does not fit `vocab_size`.
    Shards from before max_id was recorded are scanned once here (memory-mapped, ~GB/s)."""
    shard_dir = Path(meta.get("dir", "."))
    dtype = np.dtype(meta["dtype"])
    for s in SPLITS:
        for sh in meta["splits"][s]["shards"]:
            if not sh["tokens"]:
                continue
            top = sh.get("max_id")
            if top is None:
                top = int(np.memmap(shard_dir / sh["file"], dtype=dtype, mode="r").max())
            if int(top) >= vocab_size:
                raise LmforgeError(
                    f"shard {shard_dir / sh['file']} holds token id {top}, outside the vocabulary "
                    f"of {vocab_size}; the shards are damaged or were encoded for another model: "
                    "re-encode them"
                )


def check_tokenizer(meta: dict[str, Any], tokenizer: Tokenizer) -> None:
    """LmforgeError unless the shards were encoded by this tokenizer."""
    if meta["tokenizer_hash"] != tokenizer.hash:
        where = meta.get("dir", "this folder")
        raise LmforgeError(
            f"shards in {where} were made by tokenizer {meta['tokenizer_hash'][:8]}, not "
            f"{tokenizer.hash[:8]}; re-encode the corpus with this tokenizer"
        )


# --- batching and the split --------------------------------------------------------------------


def _batches(docs: Iterable[dict[str, Any]], cfg: DataConfig) -> Iterator[tuple[str, list[str]]]:
    """(split, texts) batches in input order. If no document hashed into val, the last training
    document goes there instead (held back one step), so >= 2 documents always give a val split."""
    pending: dict[str, list[str]] = {s: [] for s in SPLITS}
    size = {s: 0 for s in SPLITS}
    held: str | None = None
    n = n_val = 0

    def add(split: str, text: str) -> Iterator[tuple[str, list[str]]]:
        pending[split].append(text)
        size[split] += len(text)
        if size[split] >= BATCH_CHARS or len(pending[split]) >= BATCH_DOCS:
            yield split, pending[split]
            pending[split], size[split] = [], 0

    for doc in docs:
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise LmforgeError(f"document #{n} must be a dict with a 'text' string, got {_describe(doc)}")
        doc_id = str(doc.get("id", n))
        n += 1
        if is_val(doc_id, cfg.seed, cfg.val_fraction):
            n_val += 1
            yield from add("val", doc["text"])
        else:
            if held is not None:
                yield from add("train", held)
            held = doc["text"]
    if n == 0:
        raise LmforgeError("no documents to encode")
    if held is not None:
        yield from add("val" if n_val == 0 and n >= 2 else "train", held)
    for s in SPLITS:
        if pending[s]:
            yield s, pending[s]


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        return f"keys {sorted(doc)[:5]}"
    return type(doc).__name__


# --- encoding, in worker processes -------------------------------------------------------------

_worker_tok: Tokenizer | None = None


def _init_worker(tokenizer_path: str) -> None:
    global _worker_tok
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process = one core
    _worker_tok = Tokenizer.load(tokenizer_path)


def _encode_texts(texts: list[str], tok: Tokenizer | None = None) -> tuple[np.ndarray, int]:
    """Token ids of the texts, each followed by eot, as one array; plus their UTF-8 byte count."""
    tok = tok or _worker_tok
    assert tok is not None
    flat: list[int] = []
    for ids in tok.encode_batch(texts):
        flat.extend(ids)
        flat.append(tok.eot_id)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return np.array(flat, dtype=shard_dtype(tok.vocab_size)), n_bytes


def _encode(
    batches: Iterator[tuple[str, list[str]]], tokenizer_path: Path, workers: int
) -> Iterator[tuple[str, np.ndarray, int, int]]:
    """(split, tokens, bytes, documents) per batch, in input order."""
    if workers <= 1:
        tok = Tokenizer.load(tokenizer_path)
        for split, texts in batches:
            tokens, n_bytes = _encode_texts(texts, tok)
            yield split, tokens, n_bytes, len(texts)
        return
    # spawn, not fork: the parent may already run tokenizers' (and torch's) thread pools, which
    # fork copies in a broken state; spawn also behaves the same on Linux, macOS and Windows.
    # The tokenizer goes by file name: a big pickled initarg can block the parent on a child's pipe.
    ctx = mp.get_context("spawn")
    init = (str(tokenizer_path),)
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init) as pool:
            inflight: collections.deque = collections.deque()
            for split, texts in batches:
                inflight.append((split, len(texts), pool.submit(_encode_texts, texts)))
                if len(inflight) >= 2 * workers:  # bounded memory: at most 2 batches per worker queued
                    s, n, fut = inflight.popleft()
                    yield s, *fut.result(), n
            while inflight:
                s, n, fut = inflight.popleft()
                yield s, *fut.result(), n
    except BrokenProcessPool:
        raise LmforgeError(
            "an encoding worker process died. If encode_corpus runs from a script, call it under "
            "`if __name__ == '__main__':` (worker processes import the main module); "
            "data.workers=1 encodes in this process"
        ) from None


# --- writing -----------------------------------------------------------------------------------


class _ShardWriter:
    """Appends tokens to <split>_NNNNNN.bin files of exactly `shard_tokens` tokens each."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.fh: BinaryIO | None = None

    def write(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype(self.dtype, copy=False)
        while len(tokens):
            if self.fh is None:
                name = f"{self.split}_{len(self.shards):06d}.bin"
                self.fh = open(self.folder / name, "wb")  # noqa: SIM115 (spans write calls; closed below)
                self.shards.append({"file": name, "tokens": 0})
            cur = self.shards[-1]
            take = min(len(tokens), self.shard_tokens - cur["tokens"])
            self.fh.write(tokens[:take].tobytes())
            if take:
                cur["max_id"] = max(cur.get("max_id", 0), int(tokens[:take].max()))
            cur["tokens"] += take
            tokens = tokens[take:]
            if cur["tokens"] == self.shard_tokens:
                self.fh.close()
                self.fh = None

    def close(self) -> list[dict[str, Any]]:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        return self.shards


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise LmforgeError(f"shard folder {out_dir} is a file")
    if not any(out_dir.iterdir()):
        return
    meta = out_dir / "meta.json"
    if not meta.is_file():
        raise LmforgeError(f"{out_dir} is not empty and holds no token shards; choose another folder")
    if not overwrite:
        raise LmforgeError(
            f"{out_dir} already holds token shards; load them, or pass overwrite to replace them"
        )


def _replace(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished folder into place; an old shard folder is removed only after that."""
    _check_target(out_dir, overwrite)  # again: something may have appeared while encoding
    if out_dir.exists() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = out_dir.parent / f".old_{out_dir.name}_{uuid.uuid4().hex[:8]}"
    out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
