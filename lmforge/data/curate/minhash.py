"""MinHash signatures and LSH band keys for near-duplicate detection (Broder 1997), vectorised in NumPy.

A batch of documents is hashed at once: the normalised texts are joined into one byte buffer,
every word gets a 64-bit polynomial hash from prefix sums (no Python loop per word), word hashes
combine into 5-word shingle hashes, and each of the `bands * rows` hash functions is a
multiply-shift permutation h(x) = (a*x + b) >> 32 (Dietzfelbinger et al. 1997) whose per-document
minimum is one `np.minimum.reduceat`. Everything is a function of the seed and the text, so
signatures agree across processes and machines.

Shingle text follows FineWeb (datatrove utils/text.py simplify_text): lower case, punctuation
removed, digits replaced by 0, diacritics stripped, whitespace squeezed. A document with fewer
words than a shingle is one shingle; one with no words is hashed from its raw text.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata

import numpy as np

_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_ACCENTED = re.compile(r"[\u00c0-\u024f\u0300-\u036f\u1e00-\u1eff]")
_NON_WORD = re.compile(r"[^\w\s]|_")
_DIGIT = re.compile(r"\d")
_OUTSIDE_ASCII = re.compile(r"[^\x09-\x0d\x20-\x7e]+")


def _unicode_rules(run: re.Match) -> str:
    return _DIGIT.sub("0", _NON_WORD.sub(" ", run.group()))


# bytes.translate table: ASCII punctuation -> space, ASCII digits -> "0" (str.translate is ~5x slower)
_BYTE_TABLE = bytes(32 if chr(i) in string.punctuation else 48 if chr(i).isdigit() else i for i in range(256))
_P = 0x100000001B3  # FNV-64 prime, multiplier of the byte polynomial
_P_INV = pow(_P, -1, 2**64)
_Q = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant, multiplier for combining word hashes
_U64 = np.uint64
BATCH_CHARS = 200_000  # text hashed per vectorised batch: bounds memory; never changes a signature


def simplify(text: str) -> bytes:
    """UTF-8 bytes of the shingle text: lower case, no punctuation or diacritics, digits as 0."""
    text = text.lower()
    if not text.isascii():
        if _ACCENTED.search(text):  # strip diacritics (most non-ASCII web text only has curly quotes)
            text = _COMBINING.sub("", unicodedata.normalize("NFD", text))
        # Only the runs outside printable ASCII need the Unicode-aware rules; the byte table below
        # handles ASCII punctuation and digits the same way, ~10x faster than a regex over everything.
        text = _OUTSIDE_ASCII.sub(_unicode_rules, text)
    return text.encode("utf-8", "replace").translate(_BYTE_TABLE)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole 64-bit word."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


_POW = np.ones(1, dtype=np.uint64)  # P^i and P^-i mod 2^64, grown on demand
_INV = np.ones(1, dtype=np.uint64)


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    global _POW, _INV
    while len(_POW) < size:  # doubling: [x^0..x^(k-1)] then times x^k (np.cumprod on uint64 is slow)
        k = len(_POW)
        with np.errstate(over="ignore"):
            _POW = np.concatenate((_POW, _POW * _U64(pow(_P, k, 2**64))))
            _INV = np.concatenate((_INV, _INV * _U64(pow(_P_INV, k, 2**64))))
    return _POW, _INV


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash of every simplified word of every text in order, word count per text).

    hash(word at bytes s..e) = (prefix[e] - prefix[s]) * P^-s with prefix[i] = sum_{j<i} (c_j+1) P^j
    (mod 2^64): one cumsum for the whole batch instead of a Python call per word.
    """
    parts = [b" ".join(simplify(t).split()) for t in texts]
    counts = np.array([p.count(b" ") + 1 if p else 0 for p in parts], dtype=np.int64)
    buf = np.frombuffer(b" ".join(p for p in parts if p), dtype=np.uint8)
    if len(buf) == 0:
        return np.zeros(0, dtype=np.uint64), counts
    pw, inv = _powers(len(buf) + 1)
    space = buf == 32
    with np.errstate(over="ignore"):
        prefix = np.concatenate(([_U64(0)], np.cumsum((buf.astype(np.uint64) + _U64(1)) * pw[: len(buf)])))
        starts = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))
        ends = np.flatnonzero(~space & np.concatenate((space[1:], [True]))) + 1
        h = (prefix[ends] - prefix[starts]) * inv[starts]
    return mix64(h ^ (ends - starts).astype(np.uint64)), counts


def ngram_hashes(words: np.ndarray, max_n: int) -> list[np.ndarray]:
    """grams[k-1][i] = hash of words i .. i+k-1, for k = 1 .. max_n (may cross text boundaries)."""
    grams = [words]
    with np.errstate(over="ignore"):
        for k in range(2, max_n + 1):
            prev = grams[-1]
            grams.append(prev[:-1] * _Q + words[k - 1 :] if len(prev) > 1 else prev[:0])
    return grams


class MinHasher:
    def __init__(self, num_perm: int = 112, shingle_words: int = 5, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)  # odd
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm
        self.n = shingle_words

    def signatures(self, texts: list[str], batch_chars: int | None = None) -> np.ndarray:
        """(len(texts), num_perm) uint32 MinHash signatures, computed `batch_chars` (default
        BATCH_CHARS) of text at a time; each row is a function of its text alone."""
        batch_chars = BATCH_CHARS if batch_chars is None else batch_chars
        out, start, size = [], 0, 0
        for i, t in enumerate(texts):
            size += len(t)
            if size >= batch_chars or i == len(texts) - 1:
                out.append(self._signatures(texts[start : i + 1]))
                start, size = i + 1, 0
        return np.concatenate(out) if out else np.zeros((0, self.num_perm), dtype=np.uint32)

    def _signatures(self, texts: list[str]) -> np.ndarray:
        words, counts = word_hashes(texts)
        n_docs, n = len(texts), self.n
        sig = np.full((n_docs, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        has_words = counts > 0
        if words.size:
            doc_of_word = np.repeat(np.arange(n_docs), counts)
            first = np.concatenate(([0], np.cumsum(counts)[:-1]))
            grams = ngram_hashes(words, n)
            full = grams[n - 1] if len(grams) >= n else np.zeros(0, dtype=np.uint64)
            pos = np.arange(len(full))
            ok = doc_of_word[pos] == doc_of_word[np.minimum(pos + n - 1, len(words) - 1)]
            short = np.flatnonzero(has_words & (counts < n))
            # Typed uint64 throughout: concatenating with an empty Python list promoted the batch to
            # float64, rounding every hash, so a signature depended on whether its batch held a short
            # document (issue 14).
            short_vals = np.zeros(len(short), dtype=np.uint64)
            for c in range(1, n):  # a document of c < n words is one c-word shingle
                sel = counts[short] == c
                short_vals[sel] = grams[c - 1][first[short[sel]]]
            pos = np.concatenate((pos[ok], first[short]))
            vals = np.concatenate((full[ok], short_vals))
            order = np.argsort(pos, kind="stable")
            shingles = mix64(vals[order])
            seg = np.searchsorted(doc_of_word[pos[order]], np.flatnonzero(has_words))
            rows = np.flatnonzero(has_words)
            tmp = np.empty_like(shingles)
            with np.errstate(over="ignore"):
                for p in range(self.num_perm):  # 1-D per permutation: ~15x faster than a 2-D broadcast
                    np.multiply(shingles, self.a[p], out=tmp)
                    np.add(tmp, self.b[p], out=tmp)
                    # >> 32 is monotone, so it commutes with the minimum: shift the minima only.
                    sig[rows, p] = np.minimum.reduceat(tmp, seg) >> _U64(32)
        for d in np.flatnonzero(~has_words):  # no words at all: hash the raw text as the only shingle
            x = np.array(
                [
                    int.from_bytes(
                        hashlib.blake2b(texts[d].encode("utf-8", "replace"), digest_size=8).digest(), "little"
                    )
                ],
                dtype=np.uint64,
            )
            with np.errstate(over="ignore"):
                sig[d] = ((x * self.a + self.b) >> _U64(32)).astype(np.uint32)
        return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64: one bucket key per band of `rows` signature values."""
    n_docs = sig.shape[0]
    keys = np.zeros((n_docs, bands), dtype=np.uint64)
    s = sig.astype(np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            h = np.full(n_docs, b + 1, dtype=np.uint64)
            for r in range(rows):
                h = h * _Q + s[:, b * rows + r]
            keys[:, b] = mix64(h)
    return keys


def exact_key(text: str) -> int:
    """64-bit key of the normalised text for exact de-duplication."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "little")


def lsh_probability(s: float, bands: int, rows: int) -> float:
    """P(two documents of Jaccard s share a bucket) = 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - s**rows) ** bands
