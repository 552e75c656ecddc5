"""Gopher quality and repetition rules (Rae et al. 2021, "Scaling Language Models", arXiv 2112.11446, App. A.1).

Each function returns the name of the first rule that fires, or None to keep the document.
Thresholds are in `GopherQualityConfig` / `GopherRepetitionConfig` with their sources.

Choices where implementations differ (shared/notes/curation-reference.md §2.1-2.2):
- words are whitespace tokens with surrounding punctuation stripped (datatrove uses spaCy tokens
  minus punctuation; dolma uses whitespace tokens);
- mean (not dolma's median) word length; "#" and ellipsis ("..." or "…") ratios checked separately;
- bullets are "•", "-", "*" and "‣"; stop words are counted once each (distinct, as datatrove);
- repetition character fractions use the characters of the document's words (numerator and
  denominator alike, as dolma), so whitespace and markup do not dilute them;
- duplicate n-grams are counted without overlap: once an n-gram repeats, its words are covered.
"""

from __future__ import annotations

import re

import numpy as np

from lmforge.data.curate.config import GopherQualityConfig, GopherRepetitionConfig
from lmforge.data.curate.text import Doc, duplicate_stats

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])  # Gopher App. A.1.1
BULLETS = ("•", "-", "*", "‣")
ELLIPSES = ("...", "…")
_HAS_ALPHA = re.compile(r"[^\W\d_]")  # a letter: a word character that is not a digit or underscore


def gopher_quality(doc: Doc, cfg: GopherQualityConfig) -> str | None:
    words = doc.words
    n = len(words)
    if n < cfg.min_doc_words:
        return "too_few_words"
    if n > cfg.max_doc_words:
        return "too_many_words"
    mean_len = float(doc.word_lengths.mean())
    if not cfg.min_avg_word_length <= mean_len <= cfg.max_avg_word_length:
        return "mean_word_length"
    text = doc.text
    if text.count("#") / n > cfg.max_symbol_word_ratio:
        return "hash_ratio"
    if (text.count("...") + text.count("…")) / n > cfg.max_symbol_word_ratio:
        return "ellipsis_ratio"
    lines = doc.nonempty_lines
    if lines:
        if sum(line.startswith(BULLETS) for line in lines) / len(lines) > cfg.max_bullet_lines_ratio:
            return "bullet_lines"
        if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
            return "ellipsis_lines"
    alpha = sum(1 for w in words if w.isalpha() or _HAS_ALPHA.search(w))
    if alpha / n < cfg.min_alpha_words_ratio:
        return "alpha_words"
    if len(STOP_WORDS.intersection(words)) < cfg.min_stop_words:
        return "stop_words"
    return None


def gopher_repetition(doc: Doc, cfg: GopherRepetitionConfig) -> str | None:
    text_len = len(doc.text)
    if text_len == 0:
        return None
    paras = doc.paragraphs
    if paras:
        n_dup, dup_chars = duplicate_stats(paras)
        if n_dup / len(paras) > cfg.dup_para_frac:
            return "dup_para_frac"
        if dup_chars / text_len > cfg.dup_para_char_frac:
            return "dup_para_char_frac"
    lines = doc.nonempty_lines
    if lines:
        n_dup, dup_chars = duplicate_stats(lines)
        if n_dup / len(lines) > cfg.dup_line_frac:
            return "dup_line_frac"
        if dup_chars / text_len > cfg.dup_line_char_frac:
            return "dup_line_char_frac"
    hashes, lengths = doc.word_hashes, doc.word_lengths
    total = int(lengths.sum())
    if total == 0:
        return None
    grams = _ngram_hashes(hashes, 10)
    for n, thr in zip((2, 3, 4), cfg.top_ngram_char_frac):
        if len(hashes) >= n and _top_ngram_chars(grams[n], lengths, n) / total > thr:
            return f"top_{n}gram_char_frac"
    for n, thr in zip(range(5, 11), cfg.dup_ngram_char_frac):
        if len(hashes) >= n and _dup_ngram_chars(grams[n], lengths, n) / total > thr:
            return f"dup_{n}gram_char_frac"
    return None


_MULT = np.int64(0x100000001B3)  # FNV-64 prime: combine word hashes into n-gram hashes (wraps mod 2^64)


def _ngram_hashes(h: np.ndarray, max_n: int) -> dict[int, np.ndarray]:
    """n -> int64 hash of the n-gram starting at each position (n = 1 .. max_n)."""
    out = {1: h}
    cur = h
    with np.errstate(over="ignore"):
        for n in range(2, min(max_n, len(h)) + 1):
            cur = cur[:-1] * _MULT + h[n - 1:]
            out[n] = cur
    return out


def _top_ngram_chars(g: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters covered by all occurrences of the most frequent n-gram (first one on ties)."""
    order = np.argsort(g, kind="stable")
    sg = g[order]
    start = np.flatnonzero(np.concatenate(([True], sg[1:] != sg[:-1])))
    counts = np.diff(np.append(start, len(sg)))
    top = counts.max()
    if top < 2:
        return 0
    pos = int(order[start[counts == top]].min())  # stable sort: order[start] is each n-gram's first position
    return int(lengths[pos:pos + n].sum()) * int(top)


def _dup_ngram_chars(g: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of the words covered by n-grams that repeat an earlier n-gram, scanning left to right.

    An occurrence that overlaps the previous counted duplicate is skipped (Gopher counts
    non-overlapping repeats), so "a b c d e a b c d e a b c d e" covers two copies, not more.
    """
    order = np.argsort(g, kind="stable")
    sg = g[order]
    repeat = np.empty(len(g), dtype=bool)
    repeat[order] = np.concatenate(([False], sg[1:] == sg[:-1]))
    positions = np.flatnonzero(repeat)
    if len(positions) == 0:
        return 0
    covered = np.zeros(len(lengths) + 1, dtype=np.int64)
    last_end = -1
    for p in positions.tolist():  # only duplicates loop in Python; clean text has few
        if p >= last_end:
            covered[p] += 1
            covered[p + n] -= 1
            last_end = p + n
    mask = np.cumsum(covered[:-1]) > 0
    return int(lengths[mask].sum())
