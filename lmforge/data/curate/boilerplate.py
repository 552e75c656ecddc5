"""Cross-document boilerplate: lines found in many different documents, removed from all of them.

Navigation bars, cookie banners, "Share this:", sign-up prompts and footers repeat verbatim
across the pages of a site; no per-document filter sees them, since each page holds them once.
cc_net removes paragraphs (lines) whose normalised hash it has seen in other documents
(cc_net/dedup.py: lower-cased, digits to 0, punctuation removed, 64-bit hash), and the C4 code
keeps each repeated line on one page only. Here a line is boilerplate once it occurs in at least
`dedup.boilerplate_min_docs` distinct documents, and it leaves every one of them (a page of the
site is no better place for it than another); a document left with no text is removed with
reason `boilerplate`.

Like the MinHash step it never holds all documents in one process:
1. phase 1 stores, per shard, the keys of each surviving document's distinct lines;
2. one job per key partition counts, over every shard, the documents holding each key (only
   documents de-duplication keeps, so copies of one page do not make its lines boilerplate)
   and writes the keys that reach the threshold;
3. phase 3 drops those lines from the documents it keeps.
"""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path

import numpy as np

_DIGITS = re.compile(r"\d")
_PUNCT = str.maketrans("", "", string.punctuation + "«»„“”‘’‚‹›…–—¡¿·•|")


def line_key(line: str) -> int | None:
    """64-bit key of a line after cc_net-style normalisation (case, digits, punctuation, spaces);
    None for a line with no words left ("* * *", "---"), which is layout, never boilerplate."""
    norm = " ".join(_DIGITS.sub("0", line.lower()).translate(_PUNCT).split())
    if not norm:
        return None
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8", "replace"), digest_size=8).digest(), "little")


def document_keys(text: str) -> list[int]:
    """Distinct keys of a document's lines (a line repeated inside one page counts once)."""
    return [k for k in dict.fromkeys(map(line_key, text.split("\n"))) if k is not None]


def save_keys(path: Path, per_doc: list[list[int]]) -> None:
    """Keys of one shard's surviving documents, with each key's document index."""
    keys = np.fromiter((k for ks in per_doc for k in ks), dtype=np.uint64)
    docs = np.repeat(np.arange(len(per_doc), dtype=np.int64), [len(ks) for ks in per_doc])
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=keys, doc=docs)
    tmp.replace(path)


def count_job(work: Path, tasks: list[int], part: int, parts: int, min_docs: int) -> Path:
    """Keys of partition `part` held by at least `min_docs` kept documents; written to work/b/."""
    out = work / "b" / f"boilerplate-{part}.npy"
    if out.exists():
        return out
    found = []
    for t in tasks:
        data = np.load(work / "a" / f"{t:05d}.lines.npz")
        keys, docs = data["key"], data["doc"]
        removed = np.load(work / "b" / f"remove-{t:05d}.npz")["index"]  # duplicates de-duplication removes
        sel = (keys % np.uint64(parts) == np.uint64(part)) & ~np.isin(docs, removed)
        found.append(keys[sel])
    keys = np.concatenate(found) if found else np.zeros(0, np.uint64)
    uniq, counts = np.unique(keys, return_counts=True)  # keys are distinct within a document
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, uniq[counts >= min_docs])
    tmp.replace(out)
    return out


def load_boilerplate(work: Path, parts: int) -> frozenset[int]:
    return frozenset(int(k) for p in range(parts) for k in np.load(work / "b" / f"boilerplate-{p}.npy"))


def strip_lines(text: str, boilerplate: frozenset[int]) -> tuple[str, int]:
    """(text without its boilerplate lines, number of lines removed)."""
    kept, removed = [], 0
    for line in text.split("\n"):
        if line_key(line) in boilerplate:
            removed += 1
        else:
            kept.append(line)
    if not removed:
        return text, 0
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip(), removed
