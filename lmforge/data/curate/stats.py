"""Counters for one task, merged over tasks into stats.json: every input document is accounted for.

Invariant (checked by `check_invariant` before stats.json is written):
    input docs = kept docs + sum over reasons of removed docs, per source and in total.
"Words" are whitespace-separated tokens, a tokenizer-free stand-in for tokens.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


def _blank_source() -> dict:
    return {"input": Counter(), "kept": Counter(), "removed": defaultdict(Counter)}


class Stats:
    def __init__(self, examples_per_reason: int = 3, label_field: str = ""):
        self.sources: dict[str, dict] = defaultdict(_blank_source)
        self.stages: dict[str, Counter] = defaultdict(Counter)  # stage -> {in, removed}
        self.counters: dict[str, Counter] = defaultdict(Counter)  # pii, lines_dropped, decontamination, ...
        self.examples: dict[str, list] = defaultdict(list)
        self.labels: dict[str, Counter] = defaultdict(Counter)  # "kept" / reason -> {label: docs}
        self.k = examples_per_reason
        self.label_field = label_field

    @staticmethod
    def _size(text: str) -> Counter:
        return Counter(docs=1, bytes=len(text.encode("utf-8", "replace")), words=len(text.split()))

    def input(self, source: str, text: str) -> None:
        self.sources[source]["input"].update(self._size(text))

    def stage(self, name: str) -> None:
        self.stages[name]["in"] += 1

    def removed(self, source: str, reason: str, doc: dict) -> None:
        self.sources[source]["removed"][reason].update(self._size(doc.get("text") or ""))
        self.stages[reason.split(":")[0]]["removed"] += 1
        if len(self.examples[reason]) < self.k:
            self.examples[reason].append({"id": doc.get("id"), "text": (doc.get("text") or "")[:600]})
        self._label(reason, doc)

    def kept(self, source: str, doc: dict) -> None:
        self.sources[source]["kept"].update(self._size(doc["text"]))
        self._label("kept", doc)

    def _label(self, key: str, doc: dict) -> None:
        if self.label_field:
            label = (doc.get("meta") or {}).get(self.label_field)
            if label is not None:
                self.labels[key][str(label)] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": {
                s: {
                    "input": dict(v["input"]),
                    "kept": dict(v["kept"]),
                    "removed": {r: dict(c) for r, c in v["removed"].items()},
                }
                for s, v in self.sources.items()
            },
            "stages": {s: dict(c) for s, c in self.stages.items()},
            "counters": {k: dict(c) for k, c in self.counters.items()},
            "examples": dict(self.examples),
            "labels": {k: dict(c) for k, c in self.labels.items()},
        }


def merge(parts: list[dict[str, Any]], examples_per_reason: int = 3) -> dict[str, Any]:
    """Sum task stats in task order (so examples are the same whatever the worker count)."""
    out: dict[str, Any] = {"sources": {}, "stages": {}, "counters": {}, "examples": {}, "labels": {}}

    def add(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict):
                add(dst.setdefault(k, {}), v)
            else:
                dst[k] = dst.get(k, 0) + v

    for p in parts:
        for key in ("sources", "stages", "counters", "labels"):
            add(out[key], p.get(key, {}))
        for reason, exs in p.get("examples", {}).items():
            have = out["examples"].setdefault(reason, [])
            have.extend(exs[: max(0, examples_per_reason - len(have))])
    return out


def totals(stats: dict[str, Any]) -> dict[str, Any]:
    """Whole-run totals: input/kept docs, bytes, words and removed per reason."""
    tot = {"input": Counter(), "kept": Counter(), "removed": defaultdict(Counter)}
    for s in stats["sources"].values():
        tot["input"].update(s["input"])
        tot["kept"].update(s["kept"])
        for r, c in s["removed"].items():
            tot["removed"][r].update(c)
    return {
        "input": dict(tot["input"]),
        "kept": dict(tot["kept"]),
        "removed": {r: dict(c) for r, c in sorted(tot["removed"].items(), key=lambda kv: -kv[1]["docs"])},
    }


def check_invariant(stats: dict[str, Any]) -> None:
    """input = kept + sum(removed by reason), per source; AssertionError names the source if not."""
    for name, s in stats["sources"].items():
        removed = sum(c.get("docs", 0) for c in s["removed"].values())
        if s["input"].get("docs", 0) != s["kept"].get("docs", 0) + removed:
            raise AssertionError(
                f"accounting broken for source {name}: input {s['input'].get('docs', 0)} != "
                f"kept {s['kept'].get('docs', 0)} + removed {removed}"
            )
