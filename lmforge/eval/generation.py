"""Open-ended generation: generate until a stop string, then score against references.

`generate_until` follows lm-eval's HFLM.generate_until (docs/eval-semantics.md §2.4): the end-of-text string
is always a stop sequence, the context is left-truncated to max_length - max_gen_toks tokens, and
the decoded text is cut before the first stop string. Greedy at temperature 0, else sampled with
a per-request seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.eval.lm import LM
from lmforge.eval.metrics import bleu, exact_match, rouge


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def generate_until(
    lm: LM,
    context: str,
    until: Sequence[str] = ("\n\n",),
    max_gen_toks: int = 256,
    temperature: float = 0.0,
    seed: int | None = 0,
) -> str:
    if max_gen_toks >= lm.max_length:
        raise LmforgeError(
            f"max_gen_toks={max_gen_toks} must be less than the model's context ({lm.max_length})"
        )
    stops = list(until) + [lm.decode([lm.eot_token_id])]
    ids = lm.encode(context)[-(lm.max_length - max_gen_toks) :] or [lm.prefix_token_id]
    out: list[int] = []
    longest = max(len(s) for s in stops)
    for tok in lm.generate_tokens(ids, max_gen_toks, temperature, seed):
        if tok == lm.eot_token_id:
            break
        out.append(tok)
        # Decode only the tail to look for a stop string (a token decodes to a few characters).
        if any(s in lm.decode(out[-(longest + 8) :]) for s in stops if s):
            break
    return cut_at_stops(lm.decode(out), stops)


def truthfulqa_gen_results(doc: dict, completion: str) -> dict[str, float]:
    """lm-eval's process_results_gen: for BLEU and ROUGE-1/2/L, the best score over the true
    references (max), its margin over the best false one (diff), and whether it wins (acc)."""
    true_refs, false_refs = doc["correct_answers"], doc["incorrect_answers"]
    if not false_refs:
        raise LmforgeError(f"TruthfulQA question without incorrect answers: {doc['question']!r}")
    refs = true_refs + false_refs
    nt = len(true_refs)
    out: dict[str, float] = {}
    b = [bleu(r, completion) for r in refs]
    r = [rouge(ref, completion) for ref in refs]
    series = {
        "bleu": b,
        "rouge1": [x["rouge1"] for x in r],
        "rouge2": [x["rouge2"] for x in r],
        "rougeL": [x["rougeLsum"] for x in r],
    }
    for name, scores in series.items():
        best_true, best_false = float(np.nanmax(scores[:nt])), float(np.nanmax(scores[nt:]))
        out[f"{name}_max"] = best_true
        out[f"{name}_diff"] = best_true - best_false
        out[f"{name}_acc"] = float(best_true > best_false)
    return out


def reference_metrics(
    reference: str | list[str], completion: str, metrics: Sequence[str]
) -> dict[str, float]:
    """exact_match / bleu / rouge1 / rouge2 / rougeL of a completion, best over the references."""
    refs = reference if isinstance(reference, list) else [reference]
    out: dict[str, float] = {}
    for m in metrics:
        if m == "exact_match":
            out[m] = max(exact_match(r, completion) for r in refs)
        elif m == "bleu":
            out[m] = max(bleu(r, completion) for r in refs)
        elif m in ("rouge1", "rouge2", "rougeL"):
            key = "rougeLsum" if m == "rougeL" else m
            out[m] = max(rouge(r, completion)[key] for r in refs)
        else:
            raise LmforgeError(f"unknown generation metric {m!r} (exact_match, bleu, rouge1, rouge2, rougeL)")
    return out
