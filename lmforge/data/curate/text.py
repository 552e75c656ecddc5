"""Text normalisation and a document view that splits the text once for every filter.

Most of a heuristic filter's time is word splitting (datatrove re-tokenises with spaCy in each
filter, ~0.08 MB/s/core for its full stack); `Doc` splits lines, paragraphs and words once, with
plain `str` methods, and every filter reads the cached result.
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import cached_property

import numpy as np

from lmforge.data.curate.words import split_words
from lmforge.errors import LmforgeError

# C0/C1 control characters except tab and newline, plus zero-width/BOM characters that scrapers leave.
_CONTROL = dict.fromkeys(
    [c for c in range(0x20) if c not in (9, 10)]
    + list(range(0x7F, 0xA0))
    + [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD]
)
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
PUNCT = frozenset(string.punctuation) | frozenset("«»„“”‘’‚‹›…–—¡¿·•")
_STRIP = "".join(sorted(PUNCT))
# The characters datatrove treats as symbols when it drops punctuation tokens before counting words
# (datatrove/utils/text.py PUNCTUATION): ASCII punctuation, typographic quotes and dashes, common
# full-width forms and the C0/C1 control characters. "‘" and "•" are not in it, "１" is.
SYMBOLS = (
    frozenset(string.punctuation)
    | frozenset("—–”“„’´«»…►━∶％１〈〉《》「」【】、，；．（）？！：～。")
    | frozenset(map(chr, [*range(9), *range(11, 32), *range(127, 160)]))
)


def normalize(text: str, nfc: bool = True, fix_encoding: bool = True, whitespace: bool = True) -> str:
    """NFC, ftfy's mojibake repair, control characters out, spaces squeezed, at most one blank line."""
    if fix_encoding and _needs_ftfy(text):
        text = _ftfy().fix_text(text, normalization="NFC" if nfc else None)
    elif nfc and not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROL)
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_LINES.sub("\n\n", text).strip()
    return text


def _needs_ftfy(text: str) -> bool:
    """ftfy is slow (~1 MB/s); skip it where it has nothing to fix: plain ASCII without HTML
    entities, or text its own mojibake detector (`badness.is_bad`) finds clean."""
    if "&" in text:
        return True
    if text.isascii():
        return False
    return bool(_ftfy().badness.is_bad(text))


def _ftfy():
    try:
        import ftfy
    except ImportError:
        raise LmforgeError(
            "normalize.fix_encoding needs ftfy: pip install 'lmforge[curate]' "
            "(or set normalize.fix_encoding=false)"
        ) from None
    return ftfy


class Doc:
    """One document's text with lazily computed, cached splits shared by all filters."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def nonempty_lines(self) -> list[str]:
        return [line.strip() for line in self.lines if line.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p for p in re.split(r"\n{2,}", self.text.strip()) if p.strip()]

    @cached_property
    def tokens(self) -> list[str]:
        """Whitespace-separated tokens, punctuation still attached ("word.")."""
        return self.text.split()

    @cached_property
    def words(self) -> list[str]:
        """Tokens with leading/trailing punctuation stripped; pure punctuation is not a word.

        spaCy (datatrove) splits punctuation off as its own tokens and then ignores them; stripping
        does the same for the common cases at str.split speed.
        """
        out = []
        for t in self.tokens:
            w = t.strip(_STRIP)
            if w:
                out.append(w)
        return out

    @cached_property
    def word_hashes(self) -> np.ndarray:
        """int64 hash per word (process-local `hash`: only compared within this document)."""
        return _hashes(self.words)

    @cached_property
    def word_lengths(self) -> np.ndarray:
        return _lengths(self.words)

    @cached_property
    def spacy_tokens(self) -> list[str]:
        """spaCy-style English tokens: punctuation marks are tokens of their own ("do", "n't", ".")."""
        return split_words(self.text)

    @cached_property
    def spacy_words(self) -> list[str]:
        """The spaCy tokens that are not only punctuation (datatrove's "non-symbol words")."""
        return [t for t in self.spacy_tokens if t.isalpha() or not SYMBOLS.issuperset(t)]

    @cached_property
    def spacy_token_hashes(self) -> np.ndarray:
        return _hashes(self.spacy_tokens)

    @cached_property
    def spacy_token_lengths(self) -> np.ndarray:
        return _lengths(self.spacy_tokens)


def _hashes(items: list[str]) -> np.ndarray:
    return np.array(list(map(hash, items)), dtype=np.int64)


def _lengths(items: list[str]) -> np.ndarray:
    return np.array(list(map(len, items)), dtype=np.int64)


def duplicate_stats(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier item, characters in those repeats)."""
    seen: set[str] = set()
    n = chars = 0
    for it in items:
        if it in seen:
            n += 1
            chars += len(it)
        else:
            seen.add(it)
    return n, chars
