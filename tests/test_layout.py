"""The README's Layout table describes what is there: every path it names exists, and every
top-level module and package of lmforge/ has a row (issue 15: "the README's Layout section
describes what is there")."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layout_rows(readme: str) -> list[str]:
    """The table rows of the README's `## Layout` section."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def named_paths(rows: list[str]) -> set[str]:
    """Every `lmforge/...` path in the rows' first column."""
    return {p.rstrip("/") for row in rows for p in re.findall(r"`(lmforge/[^`]*)`", row.split("|")[1])}


def test_layout_parsing_finds_paths():
    rows = ["| `lmforge/a.py`, `lmforge/b/` | x, `lmforge/not_first_column.py` |", "| `other` | y |"]
    assert named_paths(rows) == {"lmforge/a.py", "lmforge/b"}


def test_readme_layout_matches_the_package():
    named = named_paths(layout_rows((REPO / "README.md").read_text(encoding="utf-8")))
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"README Layout names paths that do not exist: {missing}"
    top = {
        f"lmforge/{p.name}"
        for p in (REPO / "lmforge").iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and not p.name.startswith((".", "__")))
    }
    unlisted = sorted(top - named)
    assert not unlisted, f"README Layout has no row for: {unlisted}"
