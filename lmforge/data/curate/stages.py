"""The per-document stages, in FineWeb's order (datatrove examples/fineweb.py#L36-63):

    normalise -> length -> language id -> Gopher repetition -> Gopher quality -> C4 -> FineWeb
    -> quality classifier -> perplexity (reference LM over HTTP) -> PII redaction -> decontamination

`DocPipeline(doc, stats)` returns the reason that removed the document ("stage:rule"), or None
after rewriting the text in place (normalisation, C4 line cleaning, PII placeholders).
Heavy resources (language-id model, classifier, n-gram index) load once per worker process.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from lmforge.data.curate import langid
from lmforge.data.curate.c4 import c4_filter
from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.fineweb import fineweb_filter
from lmforge.data.curate.gopher import gopher_quality, gopher_repetition
from lmforge.data.curate.pii import Redactor
from lmforge.data.curate.stats import Stats
from lmforge.data.curate.text import Doc, normalize


class DocPipeline:
    def __init__(self, cfg: CurateConfig, work: Path):
        self.cfg = cfg
        self.normalized = ""  # the last document's text after normalisation, before line rules
        self.redact = Redactor(cfg.pii) if cfg.pii.enabled else None
        self.classifier = None
        if cfg.classifier.enabled:
            from lmforge.data.curate.classifier import QualityClassifier

            self.classifier = QualityClassifier.load(work / "classifier.npz")
        self.decont = None
        if cfg.decontamination.enabled and cfg.decontamination.benchmarks:
            from lmforge.data.curate.decontam import Decontaminator

            self.decont = Decontaminator(work / "decontam_index.npz", cfg.decontamination.ngram)
        if cfg.lang_id.enabled:
            langid.identifier(cfg.lang_id.backend)
        self.perplexity = None
        if cfg.perplexity.enabled:
            from lmforge.data.curate.perplexity import PerplexityScorer

            self.perplexity = PerplexityScorer(cfg.perplexity)

    def __call__(self, doc: dict, stats: Stats) -> str | None:
        cfg = self.cfg
        skip = cfg.skip.get(doc.get("source") or "", ())

        def on(name: str, sub) -> bool:
            return sub.enabled and name not in skip

        if on("normalize", cfg.normalize):
            n = cfg.normalize
            doc["text"] = normalize(doc["text"], nfc=n.nfc, fix_encoding=n.fix_encoding, whitespace=n.whitespace)
        text = self.normalized = doc["text"]  # before any line is dropped: dedup.signature_text=original
        if on("length", cfg.length):
            stats.stage("length")
            if len(text.strip()) < max(1, cfg.length.min_chars):
                return "length:too_short"
            if len(text) > cfg.length.max_chars:
                return "length:too_long"
        if on("lang_id", cfg.lang_id):
            stats.stage("lang_id")
            lang, score = langid.detect(text, cfg.lang_id.max_chars, cfg.lang_id.backend)
            doc["meta"]["lang"], doc["meta"]["lang_score"] = lang, round(score, 4)
            if cfg.lang_id.languages and lang not in cfg.lang_id.languages:
                return "lang_id:language"
            if score < cfg.lang_id.min_score:
                return "lang_id:low_score"
        d = Doc(text)
        for name, fn, sub in (("gopher_repetition", gopher_repetition, cfg.gopher_repetition),
                              ("gopher_quality", gopher_quality, cfg.gopher_quality)):
            if on(name, sub):
                stats.stage(name)
                rule = fn(d, sub)
                if rule:
                    return f"{name}:{rule}"
        if on("c4", cfg.c4):
            stats.stage("c4")
            dropped: Counter = Counter()
            rule, cleaned = c4_filter(d.text, cfg.c4, dropped)
            stats.counters["c4_lines_dropped"].update(dropped)
            if rule:
                return f"c4:{rule}"
            if cleaned != d.text:
                doc["text"] = cleaned
                d = Doc(cleaned)
        if on("fineweb", cfg.fineweb):
            stats.stage("fineweb")
            rule = fineweb_filter(d, cfg.fineweb)
            if rule:
                return f"fineweb:{rule}"
        if self.classifier is not None and "classifier" not in skip:
            stats.stage("classifier")
            c = cfg.classifier
            score = float(self.classifier.score([doc["text"]])[0])
            doc["meta"]["quality_score"] = round(score, 4)
            from lmforge.data.curate.classifier import keep

            if not keep(score, c.mode, c.threshold, c.pareto_alpha, _doc_rng(c.seed, doc["id"])):
                return "classifier:score"
        if self.perplexity is not None and "perplexity" not in skip:
            stats.stage("perplexity")
            ppl = self.perplexity(doc["text"])
            doc["meta"]["perplexity"] = None if ppl is None else round(ppl, 3)
            limit = cfg.perplexity.max_perplexity
            if limit and ppl is not None and ppl > limit:
                return "perplexity:too_high"
        if self.redact is not None and "pii" not in skip:
            stats.stage("pii")
            found: Counter = Counter()
            doc["text"] = self.redact(doc["text"], found)
            if found:
                stats.counters["pii"].update(found)
                stats.counters["pii"]["documents"] += 1
                doc["meta"]["pii"] = dict(found)
        if self.decont is not None and "decontamination" not in skip:
            stats.stage("decontamination")
            hits = self.decont.matches(doc["text"])
            if hits:
                stats.counters["decontamination"].update(hits)
                if cfg.decontamination.mode == "remove":
                    return f"decontamination:{hits[0]}"
                doc["meta"]["contaminated"] = hits
        return None


def _doc_rng(seed: int, doc_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the document, never on worker scheduling."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode("utf-8", "replace"), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))
