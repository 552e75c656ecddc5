"""Gopher quality and repetition rules (Rae et al. 2021, "Scaling Language Models", arXiv 2112.11446,
App. A.1).

Each function returns the name of the first rule that fires, or None to keep the document.
Thresholds are in `GopherQualityConfig` / `GopherRepetitionConfig` with their sources.

The paper gives the rules in words; implementations count differently
(docs/curation-reference.md §2.1-2.2), and `cfg.words` picks one:

- "spacy" (default): datatrove's counting, with which FineWeb was built. Tokens are spaCy's
  English tokens (`words.split_words`), punctuation marks included: the "#"/ellipsis ratios and
  the share of words with a letter are over all tokens, so a page's punctuation counts against
  it; word counts and the mean word length skip punctuation-only tokens; bullets are "•" and "-"
  over all lines; repetition fractions are over the whole text length, a top n-gram's characters
  include its joining spaces (and count even if it occurs once).
- "whitespace": whitespace tokens with surrounding punctuation stripped, as the paper words it
  and dolma splits; ratios over those words; bullets "•", "-", "*", "‣" over non-empty lines;
  repetition fractions over the characters of the words (as dolma), so whitespace and markup do
  not dilute them. About 2x faster.

Both: mean (not dolma's median) word length; "#" and ellipsis ("..." or "…") ratios checked
separately; stop words counted once each, case-sensitive (as datatrove); duplicate n-grams
counted as datatrove scans them: left to right, a repeat of an n-gram seen earlier covers its
words and the scan jumps past it.
"""

from __future__ import annotations

import numpy as np

from lmforge.data.curate.config import GopherQualityConfig, GopherRepetitionConfig
from lmforge.data.curate.text import Doc, duplicate_stats

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])  # Gopher App. A.1.1
BULLETS = ("•", "-", "*", "‣")
DATATROVE_BULLETS = ("•", "-")
ELLIPSES = ("...", "…")


def _letter_tokens(tokens: list[str]) -> int:
    """Tokens with at least one letter (most are all letters: that test is the fast one)."""
    rest = [t for t in tokens if not t.isalpha()]
    return len(tokens) - len(rest) + sum(1 for t in rest if any(c.isalpha() for c in t))


def gopher_quality(doc: Doc, cfg: GopherQualityConfig) -> str | None:
    spacy = cfg.words == "spacy"
    words = doc.spacy_words if spacy else doc.words
    n = len(words)
    if n < cfg.min_doc_words:
        return "too_few_words"
    if n > cfg.max_doc_words:
        return "too_many_words"
    mean_len = sum(map(len, words)) / n
    if not cfg.min_avg_word_length <= mean_len <= cfg.max_avg_word_length:
        return "mean_word_length"
    tokens = doc.spacy_tokens if spacy else words  # the denominator of every ratio below
    text = doc.text
    if text.count("#") / len(tokens) > cfg.max_symbol_word_ratio:
        return "hash_ratio"
    if (text.count("...") + text.count("…")) / len(tokens) > cfg.max_symbol_word_ratio:
        return "ellipsis_ratio"
    lines = [line.strip() for line in text.splitlines()] if spacy else doc.nonempty_lines
    if lines:
        bullets = DATATROVE_BULLETS if spacy else BULLETS
        if sum(line.startswith(bullets) for line in lines) / len(lines) > cfg.max_bullet_lines_ratio:
            return "bullet_lines"
        if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
            return "ellipsis_lines"
    if _letter_tokens(tokens) / len(tokens) < cfg.min_alpha_words_ratio:
        return "alpha_words"
    if len(STOP_WORDS.intersection(tokens)) < cfg.min_stop_words:
        return "stop_words"
    return None


def gopher_repetition(doc: Doc, cfg: GopherRepetitionConfig) -> str | None:
    text_len = len(doc.text)
    if text_len == 0:
        return None
    spacy = cfg.words == "spacy"
    lines = [line for line in doc.lines if line] if spacy else doc.nonempty_lines
    for unit, items, frac, char_frac in (
        ("para", doc.paragraphs, cfg.dup_para_frac, cfg.dup_para_char_frac),
        ("line", lines, cfg.dup_line_frac, cfg.dup_line_char_frac),
    ):
        if items:
            n_dup, dup_chars = duplicate_stats(items)
            if n_dup / len(items) > frac:
                return f"dup_{unit}_frac"
            if dup_chars / text_len > char_frac:
                return f"dup_{unit}_char_frac"
    if spacy:
        hashes, lengths, total = doc.spacy_token_hashes, doc.spacy_token_lengths, text_len
    else:
        hashes, lengths = doc.word_hashes, doc.word_lengths
        total = int(lengths.sum())
    if total == 0:
        return None
    grams = _ngram_hashes(hashes, 10)
    for n, thr in zip((2, 3, 4), cfg.top_ngram_char_frac):
        if len(hashes) >= n and _top_ngram_chars(grams[n], lengths, n, spacy) / total > thr:
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
            cur = cur[:-1] * _MULT + h[n - 1 :]
            out[n] = cur
    return out


def _top_ngram_chars(g: np.ndarray, lengths: np.ndarray, n: int, joined: bool) -> int:
    """Characters of all occurrences of the most frequent n-gram (the first one on ties). `joined`:
    datatrove's count, the n-gram written with its n - 1 spaces, even for a count of 1."""
    order = np.argsort(g, kind="stable")
    sg = g[order]
    start = np.flatnonzero(np.concatenate(([True], sg[1:] != sg[:-1])))
    counts = np.diff(np.append(start, len(sg)))
    top = counts.max()
    if top < 2 and not joined:
        return 0
    pos = int(order[start[counts == top]].min())  # stable sort: order[start] is each n-gram's first position
    return (int(lengths[pos : pos + n].sum()) + (n - 1 if joined else 0)) * int(top)


def _dup_ngram_chars(g: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of the n-grams that repeat an n-gram seen earlier, scanning left to right.

    The scan (datatrove's find_all_duplicate) jumps past a repeat, so repeats never overlap and the
    n-grams inside a jump are not "seen": "a b c d e a b c d e a b c d e" covers two copies. Only
    positions whose hash occurs more than once can matter, so only those are walked in Python.
    """
    order = np.argsort(g, kind="stable")
    sg = g[order]
    same = sg[1:] == sg[:-1]
    repeated = np.zeros(len(g), dtype=bool)
    repeated[order[1:][same]] = True
    repeated[order[:-1][same]] = True
    seen: set[int] = set()
    chars, jump_end = 0, -1
    for p in np.flatnonzero(repeated).tolist():
        if p < jump_end:
            continue  # inside the jump after a repeat: never visited
        h = int(g[p])
        if h in seen:
            chars += int(lengths[p : p + n].sum())
            jump_end = p + n
        else:
            seen.add(h)
    return chars
