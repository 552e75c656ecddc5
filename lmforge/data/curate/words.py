"""English word tokens as spaCy's rule-based tokenizer makes them, at regex speed.

datatrove's Gopher and C4 filters count words and sentences over `spacy.blank("en")` tokens, and
FineWeb was built with them. To make the same keep/remove decisions without spaCy (a heavy
dependency, ~0.1 MB/s inside datatrove) this module reproduces that tokenizer's behaviour:

1. split on whitespace;
2. per chunk, peel prefixes (opening punctuation, quotes, currency, symbols) and suffixes (closing
   punctuation, "'s", a period after a lower-case letter or digit or two capitals, units after a
   number) one at a time, stopping at a special case or a URL;
3. split what is left at infixes (an ellipsis, a hyphen or comma between letters, "/" or ":"
   before a letter, a period between a lower- and an upper-case letter, an operator between
   digits);
4. special cases: contractions ("don't" -> "do", "n't"; "I'm" -> "I", "'m", also without the
   apostrophe: "dont", "Im"), abbreviations that keep their period ("Dr.", "U.S.", "e.g."),
   "10am", "cannot", emoticons.

The rule classes follow spaCy's English punctuation rules (spacy/lang/punctuation.py and
lang/en/punctuation.py, MIT); the special-case lists here are shorter than spaCy's. On the 1,800
Common Crawl pages of shared/data/corpora/web, 1,788 pages get token lists identical to spaCy
3.8's and the token counts differ by 0.003% (bench/curate_filters.py compares them).
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache


def _category_class(categories: tuple[str, ...], stop: int) -> str:
    """A regex character-class body with every non-ASCII code point below `stop` in `categories`."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x80, stop):
        if unicodedata.category(chr(cp)) in categories:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )


_SYMBOL = f"[{_category_class(('So',), 0x20000)}]"  # emoji, dingbats, ®: split off like punctuation
_LOWER = "a-z" + _category_class(("Ll",), 0x10000)
_UPPER = "A-Z" + _category_class(("Lu",), 0x10000)
_ALPHA = "a-zA-Z" + _category_class(("Ll", "Lu", "Lt", "Lm", "Lo"), 0x10000)
_PUNCT = r"…|……|,|:|;|!|\?|¿|؟|¡|\(|\)|\[|\]|\{|\}|<|>|_|#|\*|&|。|？|！|，|、|；|：|～|·|।|،|۔|؛|٪"
_QUOTE_CHARS = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_QUOTES = "|".join(re.escape(c) for c in _QUOTE_CHARS)
_CURRENCY = r"US\$|C\$|A\$|\$|£|€|¥|฿|₽|﷼|[₠-₿]"
_UNITS = (
    "km²|km³|km/h|km|kmh|m/s|m²|m³|mm²|mm³|mm|dm²|dm³|dm|cm²|cm³|cm|µm|nm|ha|yd|in|ft|kg|mg|µg|g|t|lb|oz|"
    "mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%|m"
)
_ELLIPSIS = r"\.\.+|…"
_HYPHENS = "---|--|——|-|–|—|~"

_PREFIX = re.compile(
    "|".join(
        f"^(?:{p})"
        for p in ("§", "%", "=", "—", "–", r"\+(?![0-9])", _PUNCT, _ELLIPSIS, _QUOTES, _CURRENCY, _SYMBOL)
    )
)
_SUFFIX = re.compile(
    "|".join(
        f"(?:{p})$"
        for p in (
            _PUNCT,
            _ELLIPSIS,
            _QUOTES,
            _SYMBOL,
            "'s",
            "'S",
            "’s",
            "’S",
            "—",
            "–",
            r"(?<=[0-9])\+",
            r"(?<=°[FfCcKk])\.",
            rf"(?<=[0-9])(?:{_CURRENCY})",
            rf"(?<=[0-9])(?:{_UNITS})",
            rf"(?<=[0-9{_LOWER}%²\-+…,:;!?¿¡()\[\]{{}}<>_#*&{re.escape(_QUOTE_CHARS)}])\.",
            rf"(?<=[{_UPPER}][{_UPPER}])\.",
        )
    )
)
_INFIX = re.compile(
    "|".join(
        f"(?:{p})"
        for p in (
            _ELLIPSIS,
            _SYMBOL,
            r"(?<=[0-9])[+\-*^](?=[0-9-])",
            rf"(?<=[{_LOWER}{re.escape(_QUOTE_CHARS)}])\.(?=[{_UPPER}{re.escape(_QUOTE_CHARS)}])",
            rf"(?<=[{_ALPHA}]),(?=[{_ALPHA}])",
            rf"(?<=[{_ALPHA}0-9])(?:{_HYPHENS})(?=[{_ALPHA}])",
            rf"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])",
        )
    )
)
# A URL, e-mail or bare domain stays one token (spaCy's URL_MATCH); trailing punctuation is peeled first.
_URL_END = r"[^\s.,;:!?)\]'\"]"
_URL = re.compile(
    rf"^(?i:(?:https?|ftp)://|www\.|mailto:)\S*{_URL_END}$|^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$"
    rf"|^(?i:[a-z0-9\u00a1-\uffff-]+\.)+[{_LOWER}]{{2,63}}(?:/\S*{_URL_END})?$"
)

_PRONOUNS = (
    "i",
    "you",
    "he",
    "she",
    "it",
    "we",
    "they",
    "who",
    "what",
    "where",
    "when",
    "why",
    "how",
    "there",
    "that",
    "this",
)
_NT_VERBS = (
    "do",
    "does",
    "did",
    "ca",
    "could",
    "should",
    "would",
    "might",
    "must",
    "need",
    "is",
    "are",
    "was",
    "were",
    "has",
    "have",
    "had",
    "wo",
    "ai",
    "sha",
)  # "can't" -> "ca", "n't"; "won't" -> "wo", "n't"
_MODALS = ("could", "should", "would", "might", "must")  # "would've" -> "would", "'ve"
# Contractions written without the apostrophe ("Im", "youre", "dont"); real words are left alone.
_BARE_TAILS = {
    "i": ("m", "ll", "d", "ve"),
    "you": ("re", "ve", "ll", "d"),
    "he": ("s", "ll", "d"),
    "she": ("s", "ll", "d"),
    "it": ("s", "ll", "d"),
    "we": ("re", "ve", "ll", "d"),
    "they": ("re", "ve", "ll", "d"),
    **{
        w: ("s", "ll", "d", "re", "ve")
        for w in ("who", "what", "where", "when", "why", "how", "there", "that")
    },
}
_BARE_WORDS = frozenset(("ill", "its", "hell", "shell", "shed", "were", "well", "whore"))
_ABBREVIATIONS = [  # keep their period: titles, months, places
    "Dr.",
    "Mr.",
    "Mrs.",
    "Ms.",
    "Mt.",
    "St.",
    "Jr.",
    "Inc.",
    "Ltd.",
    "Co.",
    "Corp.",
    "vs.",
    "e.g.",
    "i.e.",
    "a.m.",
    "p.m.",
    "Prof.",
    "Gen.",
    "Gov.",
    "Sen.",
    "Rep.",
    "Rev.",
    "Sgt.",
    "Lt.",
    "Ave.",
    "Bros.",
    "Ph.D.",
    "mr.",
    "dr.",
    "ms.",
    "Messrs.",
    "Geo.",
    "Jan.",
    "Feb.",
    "Mar.",
    "Apr.",
    "Jun.",
    "Jul.",
    "Aug.",
    "Sep.",
    "Sept.",
    "Oct.",
    "Nov.",
    "Dec.",
    "U.S.",
    "U.K.",
    "N.Y.",
    "D.C.",
    "Mass.",
    "Calif.",
    "Fla.",
    "Ga.",
    "Ill.",
    "Va.",
    "Wash.",
    "Pa.",
    "Ala.",
    "Ariz.",
    "Ark.",
    "Colo.",
    "Conn.",
    "Del.",
    "Ind.",
    "Kan.",
    "Ky.",
    "La.",
    "Md.",
    "Mich.",
    "Minn.",
    "Miss.",
    "Mo.",
    "Neb.",
    "Nev.",
    "Okla.",
    "Ore.",
    "Tenn.",
    "Wis.",
    "Wyo.",
]
_OTHER_SPECIALS = [  # one token whatever the affix rules say
    "and/or",
    "w/o",
    "''",
    "’’",
    "'s",
    "‘s",
    "’s",
    "ma'am",
    "Ma'am",
    "'em",
    "’em",
    "ol'",
    "ol’",
    "'nuff",
    "’nuff",
]
_EMOTICONS = [
    ":)",
    ":-)",
    ":))",
    ":-))",
    ":)))",
    ":(",
    ":-(",
    ":((",
    ";)",
    ";-)",
    "(:",
    "):",
    "=)",
    "(=",
    ":]",
    ":-]",
    "[:",
    "]:",
    ":o",
    ":O",
    ":p",
    ":P",
    ":-P",
    ":-p",
    ":D",
    ":-D",
    "=D",
    "xD",
    "XD",
    "8)",
    "8-)",
    ":0",
    ":/",
    ":-/",
    "=/",
    ":|",
    ":-|",
    "=|",
    ":*",
    ":-*",
    "<3",
    "</3",
    "<33",
    "^_^",
    "^__^",
    "o.O",
    "O.o",
    "0.0",
    "-_-",
    "-__-",
    ">.<",
    ">:(",
    ">:o",
    ":>",
    ":->",
    ":'(",
    ":')",
    ":'-)",
    ":'-(",
    "o_o",
    "O_O",
    "o_O",
    "O_o",
]
_KEEP = frozenset(_ABBREVIATIONS + _OTHER_SPECIALS + _EMOTICONS + [c + "." for c in string.ascii_letters])
_CONTRACTION = re.compile(r"([A-Za-z]+)(['’](?:m|re|ve|ll|d|s|S)|n['’]t)")
_BARE = re.compile(r"([A-Za-z]+?)(m|re|ve|ll|d|s|nt)")
_HOUR = re.compile(r"(1[0-2]|[1-9])([ap]m|[ap]\.m\.)")
_SPLIT_AFTER_3 = frozenset(("cannot", "Cannot", "gonna", "Gonna", "gotta", "Gotta"))


def _special(s: str) -> tuple[str, ...] | None:
    """The tokens of a special case, or None if `s` is not one. Cheap tests guard each regex."""
    if s in _KEEP:
        return (s,)
    if "'" in s or "’" in s:
        m = _CONTRACTION.fullmatch(s)
        if m:
            base, tail = m.groups()
            low = base.lower()
            if (
                (tail[0] == "n" and low in _NT_VERBS)
                or low in _PRONOUNS
                or (tail[1:] == "ve" and low in _MODALS)
            ):
                return base, tail
        return None
    if s[:1].isdigit():
        m = _HOUR.fullmatch(s)
        return (m.group(1), m.group(2)) if m else None
    if len(s) <= 9 and s.isalpha():
        if s in _SPLIT_AFTER_3:
            return s[:3], s[3:]
        m = _BARE.fullmatch(s)
        if m and s.lower() not in _BARE_WORDS and (s[1:].islower() or len(s) <= 2):
            base, tail = m.groups()
            if (tail == "nt" and base.lower() in _NT_VERBS) or tail in _BARE_TAILS.get(base.lower(), ()):
                return base, tail
    return None


def _word(s: str) -> tuple[str, ...]:
    """Tokens of a chunk of letters: itself, unless it is a special case ("dont" -> "do", "nt")."""
    return _special(s) or (s,)


MAX_CHUNK = 1000  # longer chunks (base64, minified code) stay one token: affix peeling is O(n^2) on them
CACHED_CHUNK = 64  # only short chunks go in the cache, so its memory stays bounded (~130k x 64 chars)


@lru_cache(maxsize=1 << 17)  # chunks repeat (Zipf): most lookups hit
def _cached(s: str) -> tuple[str, ...]:
    return split_chunk(s)


def split_chunk(s: str) -> tuple[str, ...]:
    """Tokens of one whitespace-free chunk."""
    if len(s) > MAX_CHUNK:
        return (s,)
    # Fast paths for the common shapes, "word" and "word," / "word.", with the affix rules' result.
    if s.isalpha():
        return _word(s)
    head, last = s[:-1], s[-1]
    if head.isalpha():
        if last in ",;:!?":
            return (*_word(head), last)
        if last == "." and head[-1].islower() and s not in _KEEP:
            return (*_word(head), last)
    special = _special(s)
    if special:
        return special
    return _merge_specials(_peel(s, _special))


def _no_special(s: str) -> None:
    return None


def _peel(s: str, special) -> list[str]:
    """spaCy's affix loop: peel a prefix and a suffix at a time until a special case or a URL is
    left, then split the rest at infixes. `special(s)` gives a special case's tokens or None."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    size = -1
    while s and len(s) != size and not _URL.match(s) and not special(s):
        size = len(s)
        m = _PREFIX.search(s)
        pre = m.end() if m else 0
        if pre and special(s[pre:]):
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        rest = s[pre:]  # a slice, not search(s, pre): the suffix lookbehinds must not see the prefix
        m = _SUFFIX.search(rest) if rest else None
        suf = len(rest) - m.start() if m else 0
        if suf and special(s[:-suf]):
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
    tokens = prefixes
    if s:
        found = special(s)
        if found:
            tokens.extend(found)
        elif _URL.match(s):
            tokens.append(s)
        else:
            start = 0
            for m in _INFIX.finditer(s):
                a, b = m.span()
                if a != start:
                    tokens.append(s[start:a])
                if a != b:
                    tokens.append(s[a:b])
                start = b
            if start < len(s):
                tokens.append(s[start:])
    tokens.extend(reversed(suffixes))
    return tokens


# Special cases the affix rules would split (":)", "Dr.", "e.g."): spaCy re-joins them wherever the
# pieces meet; "F." or "U.S." survive the rules whole, so "400°F." stays "400 ° F ." as in spaCy.
_REJOIN = frozenset(k for k in _KEEP if len(_peel(k, _no_special)) > 1)


def _merge_specials(tokens: list[str]) -> tuple[str, ...]:
    """Re-join neighbours that form a special case split by the affix rules (")" + ":" -> "):")."""
    out: list[str] = []
    for t in tokens:
        if out and out[-1] + t in _REJOIN:
            out[-1] += t
        else:
            out.append(t)
    return tuple(out)


def split_words(text: str) -> list[str]:
    """spaCy-style English tokens of `text`: words, numbers and punctuation marks, no whitespace."""
    out: list[str] = []
    for chunk in text.split():
        out += _cached(chunk) if len(chunk) <= CACHED_CHUNK else split_chunk(chunk)
    return out


# spaCy's Sentencizer ends a sentence after these characters (its default list, abridged to the
# common scripts), once a token that is not punctuation follows.
SENTENCE_ENDS = frozenset("!.?։؟۔܀܁܂।॥၊။።፧፨‼‽⁇⁈⁉。꓿﹒﹖﹗！．？｡")


def is_punct(token: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in token)


def count_sentences(tokens: list[str]) -> int:
    """Sentences as spaCy's rule-based Sentencizer splits a token list (datatrove's C4 counter)."""
    if not tokens:
        return 0
    n, seen_end = 1, False
    for t in tokens:
        if t in SENTENCE_ENDS:
            seen_end = True
        elif seen_end and not is_punct(t):
            n += 1
            seen_end = False
    return n
