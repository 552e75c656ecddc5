"""Perplexity: rolling-window log-likelihood of whole documents, reported tokenizer-independently.

lm-eval's definitions (`lm_eval/api/metrics.py`, docs/eval-semantics.md §1.4), summed over the corpus,
not averaged per document:  word_perplexity = exp(-sum ll / sum words),
byte_perplexity = exp(-sum ll / sum bytes), bits_per_byte = -sum ll / (sum bytes * ln 2).
token_perplexity = exp(-sum ll / sum tokens) is added for reference only (it depends on the tokenizer).
Every token is predicted exactly once, in disjoint windows of the model's context
(`loglik.rolling_windows`) -- not a strided sliding window, so the numbers are higher than
Hugging Face's "stride" recipe.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.data.documents import read_documents
from lmforge.errors import LmforgeError
from lmforge.eval.lm import LM
from lmforge.eval.loglik import loglikelihood_rolling_tokens
from lmforge.eval.metrics import bits_per_byte, count_bytes, count_words, weighted_perplexity

# WikiText detokenizer: the replacements of lm-eval's wikitext_detokenizer
# (lm_eval/tasks/wikitext/preprocess_wikitext.py), applied in the same order. ("re", pattern, repl)
# entries are regular expressions, ("str", a, b) plain replacements.
_WIKITEXT_RULES: list[tuple[str, str, str]] = [
    ("str", "s '", "s'"),  # contractions
    ("re", r"/' [0-9]/", r"/'[0-9]/"),  # (matches only a literal "/' 5/"; kept for exactness)
    ("str", " @-@ ", "-"),
    ("str", " @,@ ", ","),
    ("str", " @.@ ", "."),  # number separators
    ("str", " : ", ": "),
    ("str", " ; ", "; "),
    ("str", " . ", ". "),  # punctuation
    ("str", " ! ", "! "),
    ("str", " ? ", "? "),
    ("str", " , ", ", "),
    ("re", r"\(\s*([^\)]*?)\s*\)", r"(\1)"),  # spaces inside brackets and quotes
    ("re", r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    ("re", r"{\s*([^}]*?)\s*}", r"{\1}"),
    ("re", r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
    ("re", r"'\s*([^']*?)\s*'", r"'\1'"),
    ("str", "= = = =", "===="),
    ("str", "= = =", "==="),
    ("str", "= =", "=="),  # headings
    ("str", " \u00b0 ", "\u00b0"),  # degree sign
    ("str", " \n", "\n"),
    ("str", "\n ", "\n"),
    ("str", " N ", " 1 "),
    ("str", " 's", "'s"),
]


def wikitext_detokenizer(doc: dict) -> str:
    s = doc["page"]
    for kind, a, b in _WIKITEXT_RULES:
        s = re.sub(a, b, s) if kind == "re" else s.replace(a, b)
    return s


def summarize(lls: Sequence[float], texts_counted: Sequence[str], ntokens: Sequence[int]) -> dict[str, float]:
    words = [count_words(t) for t in texts_counted]
    nbytes = [count_bytes(t) for t in texts_counted]
    return {
        "word_perplexity": weighted_perplexity(lls, words),
        "byte_perplexity": weighted_perplexity(lls, nbytes),
        "bits_per_byte": bits_per_byte(lls, nbytes),
        "token_perplexity": float(math.exp(-sum(lls) / sum(ntokens))),
        "words": sum(words),
        "bytes": sum(nbytes),
        "tokens": sum(ntokens),
        "documents": len(lls),
    }


def perplexity_of_texts(
    lm: LM, texts: Sequence[str], counted: Sequence[str] | None = None, batch_size: int = 16, progress=None
) -> tuple[dict[str, float], list[float]]:
    """Score each text whole; counts come from `counted` (defaults to the texts themselves)."""
    if not texts:
        raise LmforgeError("no documents to score")
    toks = [lm.encode(t) for t in texts]
    lls = loglikelihood_rolling_tokens(lm, toks, batch_size, progress)
    return summarize(lls, counted if counted is not None else texts, [len(t) for t in toks]), lls


def read_text_documents(path: str | Path) -> list[str]:
    """A .txt file is one document; .jsonl/.jsonl.gz holds one {"text": ...} per line; a folder
    is every such file in it."""
    path = Path(path)
    if not path.exists():
        raise LmforgeError(f"text file not found: {path}")
    if path.is_file() and path.suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise LmforgeError(f"{path} is empty")
        return [text]
    docs = [d["text"] for d in read_documents(path)]
    if not docs:
        raise LmforgeError(f"{path} holds no documents")
    return docs


def shard_documents(
    shard_dir: str | Path, split: str = "val", max_tokens: int | None = None
) -> list[np.ndarray]:
    """Documents (token arrays, end-of-text removed) of a token-shard split written by
    `lmforge tokenizer encode` / training (meta.json beside the .bin files)."""
    shard_dir = Path(shard_dir)
    meta_path = shard_dir / "meta.json"
    if not meta_path.is_file():
        raise LmforgeError(f"no meta.json in {shard_dir}: not a token shard directory")
    meta = json.loads(meta_path.read_text())
    info = meta.get("splits", {}).get(split)
    if not info:
        raise LmforgeError(f"{shard_dir} has no {split!r} split (has {', '.join(meta.get('splits', {}))})")
    eot, docs, total = meta.get("eot_id", 0), [], 0
    for shard in info["shards"]:
        arr = np.memmap(shard_dir / shard["file"], dtype=meta["dtype"], mode="r")
        cuts = np.flatnonzero(arr == eot)
        start = 0
        for c in list(cuts) + [len(arr)]:
            if c > start:
                docs.append(np.asarray(arr[start:c], dtype=np.int64))
                total += c - start
                if max_tokens is not None and total >= max_tokens:
                    return docs
            start = c + 1
    return docs


def perplexity_of_shards(
    lm: LM,
    shard_dir: str | Path,
    token_bytes: np.ndarray,
    split: str = "val",
    max_tokens: int | None = None,
    batch_size: int = 16,
    progress=None,
) -> dict[str, float]:
    """Token perplexity and bits per byte of a shard split; bytes per token from the tokenizer's
    table (special tokens count 0 bytes, as nanochat's bits-per-byte does)."""
    docs = shard_documents(shard_dir, split, max_tokens)
    if not docs:
        raise LmforgeError(f"{shard_dir} split {split!r} holds no tokens")
    lls = loglikelihood_rolling_tokens(lm, [d.tolist() for d in docs], batch_size, progress)
    ntok = [len(d) for d in docs]
    nbytes = [int(token_bytes[d].sum()) for d in docs]
    return {
        "token_perplexity": float(math.exp(-sum(lls) / sum(ntok))),
        "bits_per_byte": bits_per_byte(lls, nbytes),
        "byte_perplexity": weighted_perplexity(lls, nbytes),
        "tokens": sum(ntok),
        "bytes": sum(nbytes),
        "documents": len(docs),
    }
