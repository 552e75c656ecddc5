"""FineWeb's custom filters (Penedo et al. 2024, "The FineWeb Datasets", arXiv 2406.17557, §3.3.4).

Defaults from datatrove's FineWebQualityFilter (fineweb_quality_filter.py#L11-21); the rule names
match its removal reasons. The FineWeb blog gives 0.1 for the duplicated-line character share,
the code 0.01; we keep the code's value, which is what produced FineWeb.
"""

from __future__ import annotations

from lmforge.data.curate.config import FineWebConfig
from lmforge.data.curate.text import Doc, duplicate_stats

# Sentence-final punctuation across scripts (a subset of Unicode's Sentence_Terminal property).
TERMINAL = tuple(".!?…。！？‼⁇⁈⁉؟۔।॥።፧᙮᠃᠉︒﹒﹖﹗．｡")


def fineweb_filter(doc: Doc, cfg: FineWebConfig) -> str | None:
    lines = doc.nonempty_lines
    if not lines:
        return "empty"
    if sum(line.endswith(TERMINAL) for line in lines) / len(lines) < cfg.line_punct_thr:
        return "line_punct_ratio"
    if sum(len(line) <= cfg.short_line_length for line in lines) / len(lines) > cfg.short_line_thr:
        return "short_line_ratio"
    _, dup_chars = duplicate_stats(lines)
    if dup_chars / max(1, len(doc.text) - doc.text.count("\n")) > cfg.char_duplicates_ratio:
        return "char_dup_ratio"
    if doc.text.count("\n") / max(1, len(doc.tokens)) > cfg.new_line_ratio:
        return "list_ratio"
    return None
