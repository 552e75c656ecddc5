"""Metrics and their aggregations, as lm-evaluation-harness computes them.

Sources (lm-eval 0.4.13): `lm_eval/api/task.py: ConfigurableTask.process_results` (acc, acc_norm,
acc_bytes, exact_match), `lm_eval/tasks/truthfulqa/utils.py` (mc2, BLEU, ROUGE),
`lm_eval/api/metrics.py` (mean_stderr, pooled_sample_stderr, weighted_perplexity, bits_per_byte);
see docs/eval-semantics.md §1.3, §1.4, §2.4.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from lmforge.errors import LmforgeError

# ---------------------------------------------------------------- per-document metrics


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties (numpy's argmax, which lm-eval uses)."""
    return int(np.argmax(np.asarray(values, dtype=np.float64)))


def multiple_choice(
    lls: Sequence[float], greedy: Sequence[bool], choices: Sequence[str], gold: int, metrics: Sequence[str]
) -> dict[str, float]:
    """acc, acc_norm (by characters of the choice, no leading space), acc_bytes (UTF-8 bytes),
    exact_match (the gold continuation is the greedy one) for one document."""
    if not 0 <= gold < len(choices):
        raise LmforgeError(f"gold index {gold} is out of range for {len(choices)} choices")
    out: dict[str, float] = {}
    ll = np.asarray(lls, dtype=np.float64)
    for m in metrics:
        if m == "acc":
            out[m] = float(argmax_first(ll) == gold)
        elif m == "acc_norm":  # characters, as lm-eval's code does (its issue #3278)
            out[m] = float(argmax_first(ll / np.array([float(len(c)) for c in choices])) == gold)
        elif m == "acc_bytes":
            out[m] = float(
                argmax_first(ll / np.array([float(len(c.encode("utf-8"))) for c in choices])) == gold
            )
        elif m == "exact_match":
            out[m] = float(bool(greedy[gold]))
        elif m == "mc2":
            raise LmforgeError("mc2 needs the true/false labels: use truthfulqa_mc2")
        else:
            raise LmforgeError(
                f"unknown multiple-choice metric {m!r} (acc, acc_norm, acc_bytes, exact_match)"
            )
    return out


def mc2(lls: Sequence[float], labels: Sequence[int]) -> float:
    """TruthfulQA MC2: probability mass of the true answers, from raw summed log-likelihoods
    (no length normalisation): sum_{label=1} exp(ll) / sum_all exp(ll)."""
    p = np.exp(np.asarray(lls, dtype=np.float64))
    p = p / p.sum()
    return float(p[np.asarray(labels) == 1].sum())


def count_words(text: str) -> int:
    """lm-eval's word count: len(re.split(r"\\s+", text)); leading/trailing whitespace adds an
    empty piece, a quirk kept on purpose so word perplexity matches."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------- aggregations


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else float("nan")


def mean_stderr(xs: Sequence[float]) -> float:
    """Sample standard deviation / sqrt(n): lm-eval's stderr of a mean metric."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """Stderr of a size-weighted group mean from its parts (lm-eval's pooled_sample_stderr)."""
    var = sum((n - 1) * s**2 * n for s, n in zip(stderrs, sizes)) / (sum(sizes) - len(sizes))
    return float(math.sqrt(var / sum(sizes)))


def unweighted_stderr(stderrs: Sequence[float]) -> float:
    """Stderr of a plain mean of k independent means: sqrt(sum se_i^2) / k."""
    return float(math.sqrt(sum(s**2 for s in stderrs)) / len(stderrs))


def weighted_perplexity(lls: Sequence[float], counts: Sequence[int]) -> float:
    """exp(-sum ll / sum count): word or byte perplexity over a whole corpus."""
    return float(math.exp(-sum(lls) / sum(counts)))


def bits_per_byte(lls: Sequence[float], nbytes: Sequence[int]) -> float:
    return float(-sum(lls) / sum(nbytes) / math.log(2))


# ---------------------------------------------------------------- text overlap (generation)


def bleu(reference: str, prediction: str) -> float:
    """BLEU of one prediction against one reference, with the arguments of lm-eval's TruthfulQA
    (`corpus_bleu`, exp smoothing with value 0, intl tokenisation, no effective order)."""
    sacrebleu = _require("sacrebleu")
    return float(
        sacrebleu.corpus_bleu(
            [prediction],
            [[reference]],
            smooth_method="exp",
            smooth_value=0.0,
            force=False,
            lowercase=False,
            tokenize="intl",
            use_effective_order=False,
        ).score
    )


_ROUGE = None


def rouge(reference: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/Lsum F-measure x 100 (rouge-score), sentences split at " . " as lm-eval does
    before rougeLsum; one pair through BootstrapAggregator's mid, like lm-eval."""
    global _ROUGE
    mod = _require("rouge_score", "rouge-score")
    from rouge_score import rouge_scorer, scoring

    types = ["rouge1", "rouge2", "rougeLsum"]
    if _ROUGE is None:
        _ROUGE = rouge_scorer.RougeScorer(types)
    agg = scoring.BootstrapAggregator()
    agg.add_scores(_ROUGE.score(reference.replace(" . ", ".\n"), prediction.replace(" . ", ".\n")))
    res = agg.aggregate()
    del mod
    return {t: float(res[t].mid.fmeasure * 100) for t in types}


def exact_match(reference: str, prediction: str, ignore_case: bool = False, strip: bool = True) -> float:
    a, b = (reference.strip(), prediction.strip()) if strip else (reference, prediction)
    if ignore_case:
        a, b = a.lower(), b.lower()
    return float(a == b)


def _require(module: str, package: str | None = None):
    try:
        return __import__(module)
    except ImportError:
        raise LmforgeError(f"this metric needs {package or module}: pip install 'lmforge[eval]'") from None
