"""Metric definitions on hand-computed examples (lm-eval's process_results / api/metrics.py)."""

import math

import pytest

from lmforge.errors import LmforgeError
from lmforge.eval import metrics as M
from lmforge.eval.runner import aggregate_groups


def test_acc_acc_norm_chars_vs_bytes():
    # ll per choice; choices have different lengths in characters and in UTF-8 bytes.
    choices = ["ab", "ééé", "abcdefgh"]  # 2 chars/2 bytes, 3 chars/6 bytes, 8 chars/8 bytes
    lls = [-4.0, -5.0, -9.0]
    # acc: argmax ll = 0. acc_norm: -4/2=-2, -5/3=-1.67, -9/8=-1.125 -> 2. acc_bytes: -2, -0.83, -1.125 -> 1
    m = M.multiple_choice(
        lls, [False, False, True], choices, gold=1, metrics=("acc", "acc_norm", "acc_bytes", "exact_match")
    )
    assert m == {"acc": 0.0, "acc_norm": 0.0, "acc_bytes": 1.0, "exact_match": 0.0}
    assert M.multiple_choice(lls, [False] * 3, choices, 2, ("acc_norm",)) == {"acc_norm": 1.0}
    # ties go to the first index, like numpy.argmax
    assert M.multiple_choice([-1.0, -1.0], [False, False], ["a", "b"], 0, ("acc",)) == {"acc": 1.0}
    with pytest.raises(LmforgeError, match="out of range"):
        M.multiple_choice(lls, [False] * 3, choices, 3, ("acc",))


def test_mc2_is_true_probability_mass_of_raw_lls():
    lls = [math.log(0.2), math.log(0.1), math.log(0.3)]  # unnormalised probs 0.2, 0.1, 0.3
    assert M.mc2(lls, [1, 0, 1]) == pytest.approx(0.5 / 0.6)
    assert M.mc2([-2.0, -3.0, -2.0], [0, 1, 0]) == pytest.approx(
        math.exp(-3) / (2 * math.exp(-2) + math.exp(-3))
    )


def test_stderr_and_pooled_group_stderr():
    xs = [1.0, 0.0, 1.0, 1.0]
    assert M.mean_stderr(xs) == pytest.approx(math.sqrt(0.25) / 2)  # sample var 0.25, n=4
    a, b = [1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0, 1.0]
    pooled = M.pooled_stderr([M.mean_stderr(a), M.mean_stderr(b)], [3, 5])
    n = 8
    var = ((3 - 1) * M.mean_stderr(a) ** 2 * 3 + (5 - 1) * M.mean_stderr(b) ** 2 * 5) / (n - 2)
    assert pooled == pytest.approx(math.sqrt(var / n))
    assert math.isnan(M.mean_stderr([1.0]))


def test_group_aggregation_weights_by_documents_and_reports_subject_mean():
    tasks = {
        "s1": {
            "metrics": {"acc": 1.0},
            "stderr": {"acc": 0.0},
            "n": 10,
            "group": ["g", "g_a"],
            "chance": 0.25,
        },
        "s2": {
            "metrics": {"acc": 0.0},
            "stderr": {"acc": 0.0},
            "n": 30,
            "group": ["g", "g_a"],
            "chance": 0.25,
        },
        "s3": {
            "metrics": {"acc": 0.5},
            "stderr": {"acc": 0.1},
            "n": 60,
            "group": ["g", "g_b"],
            "chance": 0.25,
        },
    }
    g = aggregate_groups(tasks)
    assert g["g_a"]["metrics"]["acc"] == pytest.approx(0.25) and g["g_a"]["n"] == 40
    assert g["g"]["metrics"]["acc"] == pytest.approx((10 + 30) / 100)
    assert g["g"]["subject_mean"]["acc"] == pytest.approx(0.5)  # Open LLM Leaderboard v1 style
    assert g["g"]["members"] == ["g_a", "g_b"] and g["g"]["chance"] == pytest.approx(0.25)


def test_perplexity_aggregates_and_word_count_quirk():
    lls, words, nbytes = [-10.0, -20.0], [5, 10], [20, 40]
    assert M.weighted_perplexity(lls, words) == pytest.approx(math.exp(30 / 15))
    assert M.bits_per_byte(lls, nbytes) == pytest.approx(30 / 60 / math.log(2))
    assert M.count_words("a b  c") == 3
    assert M.count_words(" a b\n") == 4  # re.split counts empty pieces at the ends (lm-eval's quirk)
    assert M.count_bytes("é") == 2


def test_bleu_rouge_match_lm_eval_arguments():
    pytest.importorskip("sacrebleu")
    pytest.importorskip("rouge_score")
    assert M.bleu("The cat sat on the mat.", "The cat sat on the mat.") == pytest.approx(100.0)
    assert M.bleu("The cat sat on the mat.", "cat") == 0.0  # corpus BLEU, no effective order
    r = M.rouge("The cat sat on the mat.", "The cat sat.")
    # rouge1: overlap {the, cat, sat} = 3; P = 3/3, R = 3/6 -> F = 2/3
    assert r["rouge1"] == pytest.approx(200 / 3)
    assert M.exact_match(" Paris ", "Paris") == 1.0


def test_truthfulqa_gen_max_diff_acc():
    pytest.importorskip("sacrebleu")
    pytest.importorskip("rouge_score")
    from lmforge.eval.generation import cut_at_stops, truthfulqa_gen_results

    true = "Nothing happens to you if you eat watermelon seeds."
    doc = {
        "question": "q",
        "correct_answers": [true, "I have no comment."],
        "incorrect_answers": ["You grow watermelons in your stomach."],
    }
    m = truthfulqa_gen_results(doc, true)
    assert m["bleu_max"] == pytest.approx(100.0) and m["bleu_acc"] == 1.0 and m["bleu_diff"] > 0
    assert m["rouge1_acc"] == 1.0 and m["rougeL_max"] == pytest.approx(100.0)
    m = truthfulqa_gen_results(doc, "You grow watermelons in your stomach.")
    assert m["rouge1_acc"] == 0.0 and m["rouge1_diff"] < 0
    assert cut_at_stops("A: yes\n\nQ: next", ["\n\n"]) == "A: yes"
