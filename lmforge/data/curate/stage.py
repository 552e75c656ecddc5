"""The interface of a per-document curation stage, and the document it works on (`Item`).

A stage is a class with a `name` (also the CurateConfig field holding its options, a StageConfig),
an `__init__(cfg, work)` that loads what it needs once per worker process, and a `__call__(item,
stats)` that returns the rule removing the document (its reason becomes "name:rule") or None to
keep it, after rewriting `item.text` or `item.meta` if it wants. stages.STAGES lists them in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.stats import Stats
from lmforge.data.curate.text import Doc


class Item:
    """One document on its way through the stages: the record and a split-once view of its text
    (`view`, shared by the filters that count lines and words; rebuilt only when the text changes)."""

    __slots__ = ("_view", "doc", "normalized")

    def __init__(self, doc: dict[str, Any]):
        self.doc = doc
        self.normalized = doc["text"]  # the text before any line is dropped (dedup.signature_text=original)
        self._view: Doc | None = None

    @property
    def text(self) -> str:
        return self.doc["text"]

    @text.setter
    def text(self, value: str) -> None:
        self.doc["text"] = value
        self._view = None

    @property
    def meta(self) -> dict[str, Any]:
        return self.doc["meta"]

    @property
    def view(self) -> Doc:
        if self._view is None:
            self._view = Doc(self.doc["text"])
        return self._view


class Stage:
    name: ClassVar[str]
    counted: ClassVar[bool] = True  # stats.json's stages[name]["in"] counts the documents it sees

    def __init__(self, cfg: CurateConfig, work: Path):
        self.opt = getattr(cfg, self.name)

    @classmethod
    def wanted(cls, cfg: CurateConfig) -> bool:
        """Whether a run with this config uses the stage at all (domains may still skip it)."""
        return getattr(cfg, cls.name).enabled

    def __call__(self, item: Item, stats: Stats) -> str | None:
        raise NotImplementedError(f"stage {self.name} has no __call__")
