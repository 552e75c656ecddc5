"""spaCy-compatible English tokens and sentence counts (what datatrove's Gopher and C4 filters count).

Every expected list below is what `spacy.blank("en")` 3.8 produces for the same input (checked
by hand against spaCy when the cases were written; bench/curate_filters.py compares whole pages).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmforge.data.curate.words import count_sentences, split_words

CASES = [
    ("Hello, world.", ["Hello", ",", "world", "."]),
    ("I don't know, can't say.", ["I", "do", "n't", "know", ",", "ca", "n't", "say", "."]),
    ("dont Im well its is here youre", ["do", "nt", "I", "m", "well", "its", "is", "here", "you", "re"]),
    ("U.S. etc. Mr. e.g. No.", ["U.S.", "etc", ".", "Mr.", "e.g.", "No", "."]),
    (
        "e-mail 5-star 1-2 3.14 1,000 and/or a/b",
        ["e", "-", "mail", "5", "-", "star", "1", "-", "2", "3.14", "1,000", "and/or", "a", "/", "b"],
    ),
    (
        "https://example.com/a. www.x.org, news.Bitcoin.com him.Character",
        ["https://example.com/a", ".", "www.x.org", ",", "news.Bitcoin.com", "him", ".", "Character"],
    ),
    ('(hello) "Quote."', ["(", "hello", ")", '"', "Quote", ".", '"']),
    ("$50 50% 10km 10am 9p.m.", ["$", "50", "50", "%", "10", "km", "10", "am", "9", "p.m."]),
    (
        ":) Hello...world it's It’s they've would've",
        [":)", "Hello", "...", "world", "it", "'s", "It", "’s", "they", "'ve", "would", "'ve"],
    ),
    ("cannot gonna Wed", ["can", "not", "gon", "na", "We", "d"]),
]


@pytest.mark.parametrize(("text", "tokens"), CASES)
def test_tokens_match_spacy(text, tokens):
    assert split_words(text) == tokens


@given(st.text(max_size=200))
def test_tokens_cover_the_text(text):
    """Tokens are the text's non-space characters, in order, nothing lost or added."""
    assert "".join(split_words(text)) == "".join(text.split())
    assert all(t and not any(c.isspace() for c in t) for t in split_words(text))


def test_sentence_counts_match_spacy_sentencizer():
    count = lambda text: count_sentences(split_words(text))
    assert count("Hello world. This is it") == 2
    assert count("Hello... world") == 1  # an ellipsis token does not end a sentence
    assert count("Dr. Smith is here. Yes!") == 2  # "Dr." is one token, not a sentence end
    assert count('He said "the end." Next one') == 2  # closing quote stays with the sentence
    assert count("Wow!! Really?! Yes.") == 3
    assert count("") == 0


def test_huge_chunks_stay_whole_and_fast():
    """A 200k-character run without spaces (base64, minified code) is one token: peeling its
    affixes one at a time would be quadratic."""
    blob = ")" * 200_000
    assert split_words(f"see {blob} here.") == ["see", blob, "here", "."]
    assert count_sentences(split_words("a " * 50_000)) == 1
