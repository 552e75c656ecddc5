"""Word lists for C4's bad-words page filter, shipped as data files beside this module.

badwords_en.txt is LDNOOBW's English list (its header names the source, commit and licence):
one entry per line, `#` starts a comment line.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lmforge.errors import LmforgeError


@cache
def bad_words(lang: str = "en") -> tuple[str, ...]:
    """The entries of badwords_<lang>.txt, in file order."""
    path = resources.files("lmforge.data.curate") / f"badwords_{lang}.txt"
    if not path.is_file():
        raise LmforgeError(f"no bad-words list for language {lang!r} (looked for {path})")
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(w for w in lines if w and not w.startswith("#"))
