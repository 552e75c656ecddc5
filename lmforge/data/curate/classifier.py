"""A fastText-style quality classifier: hashed word 1..n-grams and logistic regression (scikit-learn).

As GPT-3 (Brown et al. 2020, App. A) and DCLM (Li et al. 2024, fastText OH-2.5+ELI5 vs RW) do:
learn "reference-like" (positive: books, Wikipedia, curated text) against random web text
(negative), score every document with P(positive), then keep by a threshold or by GPT-3's
score-weighted sampling `np.random.pareto(alpha) > 1 - score` (alpha = 9). The hashing trick
(Weinberger et al. 2009) keeps the model a fixed-size weight vector saved as one .npz.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise LmforgeError(
            "the quality classifier needs scikit-learn: pip install 'lmforge[curate]'"
        ) from None


class QualityClassifier:
    def __init__(
        self, coef: np.ndarray, intercept: float, n_features: int, ngrams: int, metrics: dict | None = None
    ):
        _sklearn()
        from sklearn.feature_extraction.text import HashingVectorizer

        self.coef = coef.astype(np.float32)
        self.intercept = float(intercept)
        self.n_features, self.ngrams = n_features, ngrams
        self.metrics = metrics or {}
        self.vectorizer = HashingVectorizer(
            n_features=n_features, ngram_range=(1, ngrams), alternate_sign=False, norm="l2", lowercase=True
        )

    def score(self, texts: list[str]) -> np.ndarray:
        """P(high quality) for each text."""
        x = self.vectorizer.transform(texts)
        z = x @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            coef=self.coef,
            intercept=self.intercept,
            config=json.dumps(
                {"n_features": self.n_features, "ngrams": self.ngrams, "metrics": self.metrics}
            ),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> QualityClassifier:
        try:
            z = np.load(path)
            cfg = json.loads(str(z["config"]))
            return cls(z["coef"], float(z["intercept"]), cfg["n_features"], cfg["ngrams"], cfg.get("metrics"))
        except (OSError, KeyError, ValueError) as e:
            raise LmforgeError(f"cannot load quality classifier {path}: {e}") from None


def train_classifier(
    texts: list[str],
    labels: Iterable[int],
    n_features: int = 2**20,
    ngrams: int = 2,
    holdout: float = 0.2,
    seed: int = 0,
) -> QualityClassifier:
    """Fit on (1 - holdout) of the examples, report precision/recall/F1/accuracy on the rest, refit on all."""
    _sklearn()
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(list(labels), dtype=np.int64)
    if len(texts) != len(y) or len(set(y.tolist())) < 2:
        raise LmforgeError(
            f"the quality classifier needs positive and negative examples, got {np.bincount(y)}"
        )
    clf = QualityClassifier(np.zeros(n_features), 0.0, n_features, ngrams)
    x = clf.vectorizer.transform(texts)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = max(1, int(len(y) * holdout))
    test, train = perm[:n_test], perm[n_test:]

    def fit(idx):
        model = LogisticRegression(
            C=4.0, solver="liblinear", class_weight="balanced"
        )  # fast on sparse n-grams
        return model.fit(x[idx], y[idx])

    model = fit(train)
    pred = model.predict(x[test])
    truth = y[test]
    tp = int(((pred == 1) & (truth == 1)).sum())
    fp = int(((pred == 1) & (truth == 0)).sum())
    fn = int(((pred == 0) & (truth == 1)).sum())
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    metrics = {
        "train": len(train),
        "heldout": len(test),
        "positives": int(y.sum()),
        "negatives": int((y == 0).sum()),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / max(1e-9, precision + recall), 4),
        "accuracy": round(float((pred == truth).mean()), 4),
    }
    model = fit(np.arange(len(y)))
    return QualityClassifier(model.coef_[0], float(model.intercept_[0]), n_features, ngrams, metrics)


def keep(score: float, mode: str, threshold: float, alpha: float, rng: np.random.Generator) -> bool:
    if mode == "pareto":  # GPT-3 App. A: keep if np.random.pareto(alpha) > 1 - document_score
        return bool(rng.pareto(alpha) > 1.0 - score)
    return score >= threshold
