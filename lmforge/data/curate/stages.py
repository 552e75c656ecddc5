"""The per-document stages, in FineWeb's order (datatrove examples/fineweb.py#L36-63):

    normalise -> length -> language id -> Gopher repetition -> Gopher quality -> C4 -> FineWeb
    -> quality classifier -> perplexity (reference LM over HTTP) -> PII redaction -> decontamination

`STAGES` is the one list: the order they run in, the names `skip` accepts (config.SKIPPABLE, the
CurateConfig fields holding a StageConfig, must be these names in this order: tested) and the rows
of report.md's stage table (`run_order()`). A new filter is a Stage subclass in its own module (stage.py says
what it implements), one line in STAGES, and its options as a StageConfig field of CurateConfig.

`DocPipeline(doc, stats)` returns the reason that removed the document ("stage:rule"), or None
after the stages rewrote its text in place (normalisation, C4 line cleaning, PII placeholders).
Heavy resources (language-id model, classifier, n-gram index) load once per worker process.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from lmforge.data.curate import dedup, langid
from lmforge.data.curate.c4 import c4_filter
from lmforge.data.curate.classifier import QualityClassifier, keep
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.decontam import Decontaminator
from lmforge.data.curate.fineweb import fineweb_filter
from lmforge.data.curate.gopher import gopher_quality, gopher_repetition
from lmforge.data.curate.perplexity import PerplexityScorer
from lmforge.data.curate.pii import Redactor
from lmforge.data.curate.stage import Item, Stage
from lmforge.data.curate.stats import Stats
from lmforge.data.curate.text import normalize


class Normalize(Stage):
    name = "normalize"
    counted = False  # rewrites, never removes: no row in the stage table

    def __call__(self, item: Item, stats: Stats) -> str | None:
        o = self.opt
        item.text = item.normalized = normalize(
            item.text, nfc=o.nfc, fix_encoding=o.fix_encoding, whitespace=o.whitespace
        )
        return None


class Length(Stage):
    name = "length"

    def __call__(self, item: Item, stats: Stats) -> str | None:
        text = item.text
        if len(text.strip()) < max(1, self.opt.min_chars):
            return "too_short"
        if len(text) > self.opt.max_chars:
            return "too_long"
        return None


class LangId(Stage):
    name = "lang_id"

    def __init__(self, cfg: CurateConfig, work: Path):
        super().__init__(cfg, work)
        langid.identifier(self.opt.backend)  # load the model now, before workers fork

    def __call__(self, item: Item, stats: Stats) -> str | None:
        o = self.opt
        lang, score = langid.detect(item.text, o.max_chars, o.backend)
        item.meta["lang"], item.meta["lang_score"] = lang, round(score, 4)
        if o.languages and lang not in o.languages:
            return "language"
        if score < o.min_score:
            return "low_score"
        return None


class GopherRepetition(Stage):
    name = "gopher_repetition"

    def __call__(self, item: Item, stats: Stats) -> str | None:
        return gopher_repetition(item.view, self.opt)


class GopherQuality(Stage):
    name = "gopher_quality"

    def __call__(self, item: Item, stats: Stats) -> str | None:
        return gopher_quality(item.view, self.opt)


class C4(Stage):
    name = "c4"

    def __call__(self, item: Item, stats: Stats) -> str | None:
        dropped: Counter = Counter()
        rule, cleaned = c4_filter(item.view.text, self.opt, dropped)
        stats.counters["c4_lines_dropped"].update(dropped)
        if rule:
            return rule
        if cleaned != item.text:
            item.text = cleaned
        return None


class FineWeb(Stage):
    name = "fineweb"

    def __call__(self, item: Item, stats: Stats) -> str | None:
        return fineweb_filter(item.view, self.opt)


class Classifier(Stage):
    name = "classifier"

    def __init__(self, cfg: CurateConfig, work: Path):
        super().__init__(cfg, work)
        self.model = QualityClassifier.load(
            work / "classifier.npz"
        )  # pipeline._prepare_resources put it there

    def __call__(self, item: Item, stats: Stats) -> str | None:
        o = self.opt
        score = float(self.model.score([item.text])[0])
        item.meta["quality_score"] = round(score, 4)
        if not keep(score, o.mode, o.threshold, o.pareto_alpha, _doc_rng(o.seed, item.doc["id"])):
            return "score"
        return None


class Perplexity(Stage):
    name = "perplexity"

    def __init__(self, cfg: CurateConfig, work: Path):
        super().__init__(cfg, work)
        self.scorer = PerplexityScorer(self.opt)

    def __call__(self, item: Item, stats: Stats) -> str | None:
        ppl = self.scorer(item.text)
        item.meta["perplexity"] = None if ppl is None else round(ppl, 3)
        limit = self.opt.max_perplexity
        if limit and ppl is not None and ppl > limit:
            return "too_high"
        return None


class PII(Stage):
    name = "pii"

    def __init__(self, cfg: CurateConfig, work: Path):
        super().__init__(cfg, work)
        self.redact = Redactor(self.opt)

    def __call__(self, item: Item, stats: Stats) -> str | None:
        found: Counter = Counter()
        item.text = self.redact(item.text, found)
        if found:
            stats.counters["pii"].update(found)
            stats.counters["pii"]["documents"] += 1
            item.meta["pii"] = dict(found)
        return None


class Decontamination(Stage):
    name = "decontamination"

    @classmethod
    def wanted(cls, cfg: CurateConfig) -> bool:
        return cfg.decontamination.enabled and bool(cfg.decontamination.benchmarks)

    def __init__(self, cfg: CurateConfig, work: Path):
        super().__init__(cfg, work)
        self.index = Decontaminator(
            work / "decontam_index.npz", self.opt.ngram
        )  # built by _prepare_resources

    def __call__(self, item: Item, stats: Stats) -> str | None:
        hits = self.index.matches(item.text)
        if hits:
            stats.counters["decontamination"].update(hits)
            if self.opt.mode == "remove":
                return hits[0]
            item.meta["contaminated"] = hits
        return None


STAGES: tuple[type[Stage], ...] = (
    Normalize,
    Length,
    LangId,
    GopherRepetition,
    GopherQuality,
    C4,
    FineWeb,
    Classifier,
    Perplexity,
    PII,
    Decontamination,
)


def run_order() -> tuple[str, ...]:
    """Every stage stats.json can count, in the order a document meets them (report.md's stage table):
    reading, the per-document stages, then de-duplication and boilerplate (pipeline.write_shard)."""
    return ("read", *(s.name for s in STAGES), *dedup.REASONS.values(), "boilerplate")


class DocPipeline:
    def __init__(self, cfg: CurateConfig, work: Path):
        self.cfg = cfg
        self.stages = [cls(cfg, work) for cls in STAGES if cls.wanted(cfg)]
        self.normalized = ""  # the last kept document's text after normalisation, before line rules
        self._chains: dict[str, list[Stage]] = {}  # source -> its stages, `skip` applied

    def chain(self, source: str) -> list[Stage]:
        stages = self._chains.get(source)
        if stages is None:
            skip = set(self.cfg.skip.get(source) or ())
            stages = self._chains[source] = [s for s in self.stages if s.name not in skip]
        return stages

    def __call__(self, doc: dict, stats: Stats) -> str | None:
        item = Item(doc)
        for stage in self.chain(doc.get("source") or ""):
            if stage.counted:
                stats.stage(stage.name)
            rule = stage(item, stats)
            if rule:
                return f"{stage.name}:{rule}"
        self.normalized = item.normalized
        return None


def _doc_rng(seed: int, doc_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the document, never on worker scheduling."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode("utf-8", "replace"), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))
