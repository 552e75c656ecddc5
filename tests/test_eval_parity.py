"""Parity with lm-evaluation-harness: its own task files and its `hf` model on a tiny random GPT-2
built here, against lmforge on the same model and local data; prompts, per-request
log-likelihoods and every metric must agree (metrics to 4 decimals)."""

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from conftest import shared_path

from lmforge.benchmarks import BUNDLED
from lmforge.eval import evaluate, get_tasks
from lmforge.eval.parity import run_lm_eval, write_lm_eval_tasks
from lmforge.tiny import tiny_gpt2, tiny_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data_dir = (
        shared_path("benchmarks") or BUNDLED
    )  # the full files, else the shipped subsets (first records)
    tmp = tmp_path_factory.mktemp("parity")
    lm = tiny_gpt2(tiny_tokenizer(), n_positions=64, save_to=tmp / "gpt2")  # short: exercises truncation
    names = write_lm_eval_tasks(tmp / "tasks", data_dir, ["anatomy"])
    return lm, names, tmp, data_dir


@pytest.mark.parametrize(
    "shots, tasks, limit",
    [
        (0, ["arc_easy", "hellaswag", "mmlu_anatomy", "truthfulqa_mc1", "truthfulqa_mc2"], 4),
        (3, ["arc_easy", "hellaswag", "mmlu_anatomy"], 4),
        (0, ["wikitext"], 1),  # one article, ~130 windows of 64 tokens
    ],
)
def test_same_numbers_as_lm_eval(setup, shots, tasks, limit):
    lm, names, tmp, data_dir = setup
    if "wikitext" in tasks and "wikitext" not in names:
        pytest.skip("WikiText is not shipped with lmforge: needs ../shared/data/corpora/wikitext-2")
    theirs = run_lm_eval(
        f"pretrained={tmp / 'gpt2'},dtype=float32",
        [names[t] for t in tasks],
        tmp / "tasks",
        shots,
        limit,
        batch_size=8,
    )
    ours = evaluate(
        lm,
        [t for n in tasks for t in get_tasks(n, data_dir)],
        num_fewshot=shots,
        limit=limit,
        batch_size=8,
        log_samples=True,
        progress=False,
    )
    assert not ours["errors"]
    for task in tasks:
        mine, other = ours["tasks"][task], theirs["results"][names[task]]
        for metric, value in mine["metrics"].items():
            key = f"{metric},none"
            if key in other:
                assert round(value, 4) == round(float(other[key]), 4), (task, metric)
                se = other.get(f"{metric}_stderr,none")
                if isinstance(se, float):
                    assert mine["stderr"][metric] == pytest.approx(se, abs=1e-9)
        their_samples = sorted(theirs["samples"][names[task]], key=lambda s: s["doc_id"])
        for m, t in zip(mine["samples"], their_samples):
            if "context" in m:  # multiple choice: identical request strings and log-likelihoods
                assert [(m["context"], " " + c) for c in m["choices"]] == [tuple(a) for a in t["arguments"]]
                assert m["loglikelihoods"] == pytest.approx([r[0] for r in t["filtered_resps"]], abs=1e-4)
            else:
                assert m["loglikelihood"] == pytest.approx(t["filtered_resps"][0], rel=1e-5)


def test_lm_eval_scores_a_served_model_through_local_completions(tmp_path, setup):
    """lm-eval's `local-completions` (prompt log-probabilities via echo + logprobs) against
    `lmforge serve` on loopback gives lmforge's own log-likelihoods and accuracies."""
    pytest.importorskip("tenacity", reason="lm-eval's API models need tenacity")
    pytest.importorskip("fastapi")
    from lmforge.eval import LmforgeLM
    from lmforge.export import export_run
    from lmforge.serve.engine import ServedModel
    from lmforge.serve.server import RunningServer, create_app
    from lmforge.tiny import make_tiny_run

    _, names, tmp, data_dir = setup
    run = make_tiny_run(tmp_path / "run", seed=5, block_size=256, vocab_size=400)  # no request is truncated
    export_run(run, tmp_path / "hf")  # lm-eval tokenizes with the exported tokenizer
    tasks = ["arc_easy", "hellaswag"]
    with RunningServer(create_app([ServedModel.load(f"m={run}")])) as srv:
        args = (
            f"model=m,base_url={srv.url}/v1/completions,tokenizer={tmp_path / 'hf'},"
            "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=1,max_retries=1,max_length=256"
        )
        theirs = run_lm_eval(
            args, [names[t] for t in tasks], tmp / "tasks", 0, 4, 1, model_type="local-completions"
        )
    ours = evaluate(
        LmforgeLM.from_run(run),
        [t for n in tasks for t in get_tasks(n, data_dir)],
        num_fewshot=0,
        limit=4,
        log_samples=True,
        progress=False,
    )
    for task in tasks:
        mine = ours["tasks"][task]
        for metric in ("acc", "acc_norm"):
            assert round(mine["metrics"][metric], 4) == round(
                float(theirs["results"][names[task]][f"{metric},none"]), 4
            )
        their_samples = sorted(theirs["samples"][names[task]], key=lambda s: s["doc_id"])
        for m, t in zip(mine["samples"], their_samples):
            assert m["loglikelihoods"] == pytest.approx([r[0] for r in t["filtered_resps"]], abs=1e-3)
