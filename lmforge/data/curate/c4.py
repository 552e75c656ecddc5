"""The C4 cleaning rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", §2.2).

Written from the paper and the TFDS code that built C4 (tensorflow_datasets/text/c4_utils.py:
_MIN_WORDS_PER_LINE = 5, _MIN_NUM_SENTENCES = 3, _MAX_WORD_LENGTH = 1000, the end marks, the
policy substrings, the citation regex and the LDNOOBW bad-words regex), checked in that code's
order, so "lorem ipsum" and "{" remove a page only on a line that survived the line rules
before them (docs/curation-reference.md §2.3). Line rules drop lines and leave the page;
page rules drop the page and name the rule. Sentences are counted as spaCy's Sentencizer splits
the line's tokens (datatrove's counter; TFDS used NLTK punkt, which needs a model download);
`lines_dropped` counts every line rule for stats.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from lmforge.data.curate.badwords import bad_words
from lmforge.data.curate.config import C4Config
from lmforge.data.curate.words import count_sentences, split_words

POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")


def c4_filter(text: str, cfg: C4Config, lines_dropped: Counter) -> tuple[str | None, str]:
    """(rule that drops the page or None, the cleaned text)."""
    kept: list[str] = []
    sentences = 0
    end_marks = tuple(cfg.end_marks)
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        words = line.split()
        if max(map(len, words)) > cfg.max_word_length:
            lines_dropped["long_word"] += 1
            continue
        if cfg.remove_citations and "[" in line:
            words = _CITATION.sub("", line).split()  # TFDS counts words after the citations go
            line = " ".join(words)
        if cfg.terminal_punct and (not line.endswith(end_marks) or line.endswith("...")):
            lines_dropped["no_terminal_punct"] += 1
            continue
        if len(words) < cfg.min_words_per_line:
            lines_dropped["too_few_words"] += 1
            continue
        low = line.lower()
        if cfg.drop_lorem_ipsum and "lorem ipsum" in low:
            return "lorem_ipsum", text
        if cfg.drop_javascript_lines and "javascript" in low:
            lines_dropped["javascript"] += 1
            continue
        if cfg.drop_curly_brace and "{" in line:
            return "curly_bracket", text
        if cfg.drop_policy_lines and any(p in low for p in POLICY):
            lines_dropped["policy"] += 1
            continue
        sentences += count_sentences(split_words(line))
        kept.append(line)
    if sentences < cfg.min_sentences:
        return "too_few_sentences", text
    cleaned = "\n".join(kept)
    if cfg.bad_words and has_bad_word(cleaned.lower()):
        return "bad_words", text
    return None, cleaned


_LETTERS = re.compile(r"[a-z]+")


def has_bad_word(low: str) -> bool:
    """C4's regex `[^a-z](w1|w2|...)[^a-z]` on the lower-cased page: a listed word that is not part of
    a longer run of letters. For all-letter entries that means a maximal letter run equals the
    word, a set lookup; the few entries with spaces or digits go through a regex."""
    words, pattern = _bad_words()
    return not words.isdisjoint(_LETTERS.findall(low)) or (
        pattern is not None and pattern.search(low) is not None
    )


@lru_cache(maxsize=1)
def _bad_words() -> tuple[frozenset, re.Pattern | None]:
    words = [w.lower() for w in bad_words("en")]
    simple = frozenset(w for w in words if w.isalpha() and w.isascii())
    rest = sorted((w for w in words if w not in simple), key=len, reverse=True)
    alts = "|".join(re.escape(w) for w in rest)
    return simple, (re.compile(rf"(?<![a-z])(?:{alts})(?![a-z])") if rest else None)
