"""Rebuild lmforge/corpus/demo.jsonl.gz, the demo corpus shipped inside the package.

    python scripts/build_demo_corpus.py [--data ../shared/data] [--out lmforge/corpus/demo.jsonl.gz]

Public-domain works from shared/data/corpora (see lmforge/corpus/README.md): TinyShakespeare and
five Project Gutenberg books. Each work is cut into documents of about DOC_CHARS characters at
paragraph boundaries, so a held-out split of documents comes from the same distribution as the
training split. The output is byte-for-byte reproducible (sorted inputs, gzip mtime 0).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (file under corpora/, id prefix, title, author, Gutenberg ebook number or None)
WORKS = [
    (
        "tinyshakespeare.txt",
        "tinyshakespeare",
        "Tiny Shakespeare (selected plays)",
        "William Shakespeare",
        None,
    ),
    ("gutenberg/pg1342_austen_pride_and_prejudice.txt", "pg1342", "Pride and Prejudice", "Jane Austen", 1342),
    (
        "gutenberg/pg11_carroll_alices_adventures_in_wonderland.txt",
        "pg11",
        "Alice's Adventures in Wonderland",
        "Lewis Carroll",
        11,
    ),
    (
        "gutenberg/pg1661_doyle_adventures_of_sherlock_holmes.txt",
        "pg1661",
        "The Adventures of Sherlock Holmes",
        "Arthur Conan Doyle",
        1661,
    ),
    ("gutenberg/pg84_shelley_frankenstein.txt", "pg84", "Frankenstein", "Mary Wollstonecraft Shelley", 84),
]

# A document closes at the first paragraph end after this many characters: ~8 KB documents give
# a few hundred documents in 3 MB, enough for a 2% validation split of several documents.
DOC_CHARS = 8000

_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Drop the Project Gutenberg header and the footer with the license, where the markers exist."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n")


def paragraphs(text: str) -> list[str]:
    return [p.rstrip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def split_documents(text: str, target: int = DOC_CHARS) -> list[str]:
    docs: list[list[str]] = [[]]
    size = 0
    for para in paragraphs(text):
        docs[-1].append(para.strip("\n"))
        size += len(para) + 2
        if size >= target:
            docs.append([])
            size = 0
    if not docs[-1]:
        docs.pop()
    if len(docs) > 1 and sum(len(p) for p in docs[-1]) < target // 4:  # no tiny tail document
        docs[-2].extend(docs.pop())
    return ["\n\n".join(d) + "\n" for d in docs]


def build(data: Path) -> list[dict]:
    rows = []
    for rel, prefix, title, author, ebook in WORKS:
        path = data / "corpora" / rel
        text = strip_gutenberg(path.read_text(encoding="utf-8"))
        parts = split_documents(text)
        for i, doc in enumerate(parts):
            meta = {
                "title": title,
                "author": author,
                "part": i,
                "parts": len(parts),
                "file": f"corpora/{rel}",
            }
            if ebook is not None:
                meta["gutenberg_ebook"] = ebook
            rows.append({"id": f"{prefix}-{i:04d}", "text": doc, "source": "books", "meta": meta})
    return rows


def write(rows: list[dict], out: Path) -> bytes:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: the same input gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(body)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "lmforge" / "corpus" / "demo.jsonl.gz")
    args = ap.parse_args()
    rows = build(args.data)
    body = write(rows, args.out)
    n_chars = sum(len(r["text"]) for r in rows)
    n_bytes = sum(len(r["text"].encode("utf-8")) for r in rows)
    print(f"{len(rows)} documents, {n_chars:,} characters, {n_bytes:,} UTF-8 bytes of text")
    print(
        f"wrote {args.out} ({args.out.stat().st_size:,} bytes, sha256 of the JSONL "
        f"{hashlib.sha256(body).hexdigest()[:16]})"
    )


if __name__ == "__main__":
    main()
