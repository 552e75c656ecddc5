"""Each heuristic rule at its published threshold, on crafted text; normalisation; PII patterns."""

from __future__ import annotations

from collections import Counter

import pytest

from lmforge.data.curate.c4 import c4_filter, has_bad_word
from lmforge.data.curate.config import (
    C4Config,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    PIIConfig,
)
from lmforge.data.curate.fineweb import fineweb_filter
from lmforge.data.curate.gopher import gopher_quality, gopher_repetition
from lmforge.data.curate.pii import Redactor, luhn_ok
from lmforge.data.curate.text import Doc, normalize

SENT = "The cat sat on the mat with a hat and that was fine."  # 13 words, stop words, mean length ~3.1
VOCAB = [
    "river",
    "mountain",
    "forest",
    "window",
    "garden",
    "teacher",
    "market",
    "village",
    "silver",
    "winter",
    "orange",
    "bottle",
    "candle",
    "basket",
    "hammer",
    "ladder",
    "pepper",
    "rabbit",
    "saddle",
    "thunder",
    "meadow",
    "lantern",
    "pocket",
    "harbor",
]


def prose(n_sentences: int, seed: int = 0) -> str:
    """Varied English-looking sentences: no repeated n-grams to speak of."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n_sentences):
        words = rng.sample(VOCAB, 6)
        out.append(
            f"The {words[0]} and the {words[1]} have {words[2]} with {words[3]} of {words[4]} {words[5]}."
        )
    return " ".join(out)


def gq(text: str, **kw) -> str | None:
    return gopher_quality(Doc(text), GopherQualityConfig(**kw))


def test_gopher_quality_published_defaults():
    cfg = GopherQualityConfig()
    assert (cfg.min_doc_words, cfg.max_doc_words, cfg.min_avg_word_length, cfg.max_avg_word_length) == (
        50,
        100_000,
        3,
        10,
    )
    assert (cfg.max_symbol_word_ratio, cfg.max_bullet_lines_ratio, cfg.max_ellipsis_lines_ratio) == (
        0.1,
        0.9,
        0.3,
    )
    assert (cfg.min_alpha_words_ratio, cfg.min_stop_words) == (0.8, 2)


@pytest.mark.parametrize("mode", ["spacy", "whitespace"])
def test_gopher_quality_rules(mode):
    q = lambda text, **kw: gq(text, words=mode, **kw)
    good = prose(10)
    assert q(good) is None
    assert q(" ".join(good.split()[:49])) == "too_few_words"  # 49 < 50
    assert q(" ".join(good.split()[:50])) is None
    assert q(good, max_doc_words=60) == "too_many_words"
    assert q(" ".join(["ab"] * 30 + ["the", "and"] * 10)) == "mean_word_length"  # mean 2.0 < 3
    assert q(" ".join(["extraordinarily"] * 60 + ["the", "and"])) == "mean_word_length"  # > 10
    # The symbol ratios' denominator: spaCy tokens (the 10 periods and the added marks count),
    # or the words of the page. k marks fire once k / denominator > 0.1.
    words = len(good.split())
    k_fire = 15 if mode == "spacy" else words // 10 + 1  # 15 / (130 + 15) = 0.103; 13 / 120 = 0.108
    assert (len(Doc(good).spacy_tokens), words) == (130, 120)
    assert q(good + " #" * k_fire) == "hash_ratio"
    assert q(good + " #" * (k_fire - 1)) is None
    assert q("... " * k_fire + good) == "ellipsis_ratio"
    assert q("... " * (k_fire - 1) + good) is None
    lines = [f"- {prose(1, i)}" for i in range(10)]
    assert q("\n".join(lines)) == "bullet_lines"  # 100% > 90%
    assert q("\n".join(lines[:9] + [prose(1, 99)])) is None  # exactly 90% is allowed
    ell = [prose(1, i)[:-1] + "…" for i in range(4)] + [prose(1, 10 + i) for i in range(6)]
    assert q("\n".join(ell)) == "ellipsis_lines"  # 40% > 30%
    assert q("\n".join(ell[1:] + [prose(1, 50)])) is None  # 30% is allowed
    digits = " ".join(good.split()[:50] + ["1234"] * 14)  # 14/64 = 22% without letters
    assert q(digits) == "alpha_words"
    no_stop = " ".join(w for w in good.split() if w.lower() not in {"the", "and", "have", "with", "of"})
    assert q(no_stop + " " + no_stop, min_doc_words=10) == "stop_words"


def test_gopher_quality_counts_punctuation_like_datatrove():
    """datatrove's alpha-word share counts punctuation tokens: a page of short clauses full of
    commas and periods falls under 0.8 there (and with words="spacy"), not with whitespace words."""
    clause = "the river and the forest, with ten (old) boats; then, at noon, they left."
    page = " ".join([clause] * 8)
    doc = Doc(page)
    share = sum(any(c.isalpha() for c in t) for t in doc.spacy_tokens) / len(doc.spacy_tokens)
    assert share < 0.8
    assert gq(page, words="spacy") == "alpha_words"
    assert gq(page, words="whitespace") is None
    # contractions are two tokens, abbreviations one, as spaCy splits them
    assert Doc("I don't know Dr. Who's (U.S.) e-mail.").spacy_tokens == [
        "I",
        "do",
        "n't",
        "know",
        "Dr.",
        "Who",
        "'s",
        "(",
        "U.S.",
        ")",
        "e",
        "-",
        "mail",
        ".",
    ]


def test_gopher_repetition_rules():
    cfg = GopherRepetitionConfig()
    assert cfg.dup_line_char_frac == 0.2 and cfg.top_ngram_char_frac == [0.2, 0.18, 0.16]
    assert cfg.dup_ngram_char_frac == [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]
    rep = lambda t: gopher_repetition(Doc(t), cfg)
    assert rep(prose(20)) is None
    paras = [prose(3, i) for i in range(6)]
    assert rep("\n\n".join(paras + paras[:3])) == "dup_para_frac"  # 3/9 = 0.33 > 0.3
    lines = [prose(1, i) for i in range(10)]
    assert rep("\n".join(lines + lines[:5])) == "dup_line_frac"  # 5/15 > 0.3
    long_line = prose(8, 77)
    assert (
        rep("\n".join(lines + [long_line, long_line])) == "dup_line_char_frac"
    )  # 1 of 12 lines, > 20% chars
    assert rep(prose(30) + " " + "river mountain " * 40) == "top_2gram_char_frac"
    chunk = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    text = prose(30) + " " + " ".join([chunk] * 12)  # 11 repeats: ~17% of the characters
    assert rep(text).startswith(("dup_", "top_"))


@pytest.mark.parametrize("mode", ["spacy", "whitespace"])
def test_gopher_repetition_ngram_thresholds(mode):
    """The duplicated 5-gram share fires just above 15% and not below. The share is of the text's
    characters (spacy, as datatrove) or of its words' characters (whitespace)."""
    cfg = GopherRepetitionConfig(
        words=mode,
        top_ngram_char_frac=[1.0, 1.0, 1.0],
        dup_para_frac=1,
        dup_para_char_frac=1,
        dup_line_frac=1,
        dup_line_char_frac=1,
        dup_ngram_char_frac=[0.15, 1, 1, 1, 1, 1],
    )
    base = [f"{VOCAB[i % 24]}{VOCAB[i // 24]}" for i in range(150)]  # distinct words: no repeats
    chunk = ["zebra", "quokka", "narwhal", "axolotl", "pangolin"]  # 5 words, 33 letters
    fired = []
    for k in range(2, 40):
        text = " ".join(base + chunk * k)
        total = len(text) if mode == "spacy" else sum(map(len, base + chunk * k))
        frac = 33 * (k - 1) / total  # the 2nd..kth copies are duplicates
        got = gopher_repetition(Doc(text), cfg)
        assert got == ("dup_5gram_char_frac" if frac > 0.15 else None), (k, frac, got)
        fired.append(got is not None)
    assert not fired[0] and fired[-1]  # the threshold was crossed inside the range


def _reference_dup_chars(tokens: list[str], n: int) -> int:
    """datatrove's find_all_duplicate, written plainly: scan, jump past each repeat."""
    seen, chars, i = set(), 0, 0
    while i < len(tokens) - n + 1:
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def test_ngram_counts_match_a_plain_scan():
    import random

    from lmforge.data.curate.gopher import _dup_ngram_chars, _ngram_hashes, _top_ngram_chars

    rng = random.Random(0)
    for trial in range(200):
        tokens = [rng.choice(VOCAB[: rng.randint(2, 8)]) for _ in range(rng.randint(5, 60))]
        doc = Doc(" ".join(tokens))
        grams = _ngram_hashes(doc.spacy_token_hashes, 10)
        for n in range(2, 11):
            if len(tokens) < n:
                continue
            assert _dup_ngram_chars(grams[n], doc.spacy_token_lengths, n) == _reference_dup_chars(
                tokens, n
            ), trial
            top, count = Counter(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)).most_common(
                1
            )[0]
            assert _top_ngram_chars(grams[n], doc.spacy_token_lengths, n, joined=True) == len(top) * count


def test_c4_rules():
    cfg = C4Config()
    assert (cfg.min_words_per_line, cfg.min_sentences, cfg.max_word_length) == (5, 3, 1000)  # TFDS c4_utils
    dropped: Counter = Counter()
    page = "\n".join(  # noqa: FLY002
        [
            "A short line.",  # < 5 words
            "This line has no terminal punctuation at all",
            "Please enable JavaScript in your browser to see this page.",
            "Read our privacy policy before you go any further.",
            "The first real sentence is here. And a second one follows it.",
            "Another proper line with enough words to keep it!",
            "Wikipedia style citation sits here [12] in this sentence.",
        ]
    )
    rule, cleaned = c4_filter(page, cfg, dropped)
    assert rule is None
    assert cleaned.splitlines() == [
        "The first real sentence is here. And a second one follows it.",
        "Another proper line with enough words to keep it!",
        "Wikipedia style citation sits here in this sentence.",
    ]
    assert dropped == Counter(too_few_words=1, no_terminal_punct=1, javascript=1, policy=1)
    assert (
        c4_filter("One sentence only here, friend.\nAnd another good line of text.", cfg, Counter())[0]
        == "too_few_sentences"
    )
    assert c4_filter(page + "\nLorem ipsum dolor sit amet, consectetur.", cfg, Counter())[0] == "lorem_ipsum"
    assert (
        c4_filter(page + "\nfunction f() { return 1; } is code here.", cfg, Counter())[0] == "curly_bracket"
    )
    ds = C4Config(min_words_per_line=3, min_sentences=5)  # datatrove's swapped values
    assert c4_filter("Three words here.\nAnd three more.\nYes it is. Fine. Good.", ds, Counter())[0] is None


def test_c4_bad_words():
    assert has_bad_word("what the fuck is this")
    assert not has_bad_word("scunthorpe and cockburn are towns")  # inside a longer word: kept, as C4's regex
    assert has_bad_word("he said 2 girls 1 cup.")  # a multi-word entry
    page = "\n".join([prose(1, i) for i in range(5)])
    assert (
        c4_filter(page + "\nThis sentence says shit and more words.", C4Config(), Counter())[0] == "bad_words"
    )


def test_fineweb_rules():
    cfg = FineWebConfig()
    assert (
        cfg.line_punct_thr,
        cfg.short_line_thr,
        cfg.short_line_length,
        cfg.char_duplicates_ratio,
        cfg.new_line_ratio,
    ) == (0.12, 0.67, 30, 0.01, 0.3)
    fw = lambda t: fineweb_filter(Doc(t), cfg)
    assert fw(prose(10)) is None
    no_punct = "\n".join(prose(1, i)[:-1] + " and more words here" for i in range(10))
    assert fw(no_punct) == "line_punct_ratio"  # 0% < 12%
    short = "\n".join(["Buy now!"] * 0 + [f"Item {i}." for i in range(8)] + [prose(2, 1), prose(2, 2)])
    assert fw(short) == "short_line_ratio"  # 8/10 > 67%
    lines = [prose(2, i) for i in range(30)]
    assert fw("\n".join(lines + [lines[0]])) == "char_dup_ratio"  # one repeated line > 1% of chars
    listy = "\n".join(f"{w} {w} {w}." for w in VOCAB[:20])  # 19 newlines / 60 words = 0.32 > 0.3
    assert fineweb_filter(Doc(listy), FineWebConfig(short_line_thr=1.0)) == "list_ratio"


def test_normalize():
    assert (
        normalize("Cafe\u0301  au   lait\r\n\r\n\r\n\r\nnext\x07 line\u200b ") == "Café au lait\n\nnext line"
    )
    assert normalize("The Mona Lisa doesnâ€™t have eyebrows.") == "The Mona Lisa doesn't have eyebrows."
    assert normalize("fish &amp; chips") == "fish & chips"
    assert normalize("plain ascii text\nstays") == "plain ascii text\nstays"


def test_pii_patterns():
    counts: Counter = Counter()
    red = Redactor(PIIConfig(allow=["help@lmforge.dev"]))
    text = (
        "Mail jane.doe+x@mail.co.uk or help@lmforge.dev or test@example.com. Server 8.8.8.8 and "
        "192.168.1.10; v6 2001:4860:4860::8888 and ::1. Call +1 415-555-0132 or (212) 555-0187. "
        "Card 4111 1111 1111 1111, not 4111 1111 1111 1112. Year 2019, order 1234567890, time 10:30:00."
    )
    out = red(text, counts)
    assert "jane.doe" not in out and "<EMAIL_ADDRESS>" in out
    assert "help@lmforge.dev" in out and "test@example.com" in out  # allow-list and allowed domain
    assert "8.8.8.8" not in out and "192.168.1.10" in out  # only global addresses
    assert "2001:4860:4860::8888" not in out and "::1" in out
    assert "415-555-0132" not in out and "555-0187" not in out
    assert "4111 1111 1111 1111" not in out and "4111 1111 1111 1112" in out  # Luhn
    assert "2019" in out and "1234567890" in out and "10:30:00" in out
    assert counts == Counter(email=1, ip=2, phone=2, credit_card=1)
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")


@pytest.mark.parametrize("flag", ["email", "ip", "phone", "credit_card"])
def test_pii_types_can_be_switched_off(flag):
    samples = {
        "email": "a.b@corp.io",
        "ip": "8.8.4.4",
        "phone": "+44 20 7946 0958",
        "credit_card": "5555555555554444",
    }
    red = Redactor(PIIConfig(**{flag: False}))
    assert samples[flag] in red(f"x {samples[flag]} y", Counter())
    assert samples[flag] not in Redactor(PIIConfig())(f"x {samples[flag]} y", Counter())
