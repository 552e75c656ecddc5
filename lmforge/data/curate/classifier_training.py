"""Build the quality classifier a run needs: load `classifier.model`, or train it from the recipe's sets.

Training sets are any curation sources: `positive` (reference text, label 1), `negative` (random
web, label 0), and/or `labelled` records carrying `label_field` (e.g. the DCLM human labels).
At most `MAX_EXAMPLES` documents are read per set, so memory stays bounded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmforge.data.curate.classifier import QualityClassifier, train_classifier
from lmforge.data.curate.config import CurateConfig, SourceConfig
from lmforge.data.curate.executors import log
from lmforge.data.curate.sources import plan_tasks, read_task
from lmforge.errors import LmforgeError

MAX_EXAMPLES = 50_000


def read_texts(paths: list[str], limit: int = MAX_EXAMPLES, label_field: str | None = None):
    """Texts (and labels from meta[label_field] when given) of the documents under `paths`."""
    texts, labels = [], []
    for path in paths:
        src = SourceConfig(path=path)
        for task in plan_tasks([src], 2**62):
            for rec in read_task(task, src, 64 * 2**20):
                if not isinstance(rec, dict) or not rec["text"].strip():
                    continue
                if label_field is not None:
                    label = rec["meta"].get(label_field)
                    if label is None:
                        continue
                    labels.append(int(float(label) >= 0.5))
                texts.append(rec["text"])
                if len(texts) >= limit:
                    return texts, labels
    return texts, labels


def prepare_classifier(cfg: CurateConfig, dest: Path) -> dict:
    """Put the classifier at `dest` (copy or train); return its held-out metrics."""
    c = cfg.classifier
    if dest.exists():
        return QualityClassifier.load(dest).metrics
    if c.model and Path(c.model).exists():
        shutil.copyfile(c.model, dest)
        return QualityClassifier.load(dest).metrics
    texts, labels = read_texts(c.labelled, label_field=c.label_field) if c.labelled else ([], [])
    pos, _ = read_texts(c.positive)
    neg, _ = read_texts(c.negative)
    texts += pos + neg
    labels += [1] * len(pos) + [0] * len(neg)
    if not texts:
        raise LmforgeError("classifier: no training documents found in classifier.positive/negative/labelled")
    clf = train_classifier(texts, labels, c.n_features, c.ngrams, c.holdout, c.seed)
    clf.save(dest)
    if c.model:
        clf.save(c.model)
    m = clf.metrics
    log(
        f"classifier: trained on {m['train']} docs; held-out precision {m['precision']:.3f} "
        f"recall {m['recall']:.3f} F1 {m['f1']:.3f}"
    )
    return m
