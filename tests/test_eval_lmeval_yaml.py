"""lm-eval's own task files (copied from the installed package, pointed at small local data made
here) run through `lmforge eval --include-path` and give lm-eval's per-document results on the same
tiny model: one task of each output type, a partially scored task (WinoGrande), process_docs and
`!function`, few-shot, groups and tags; and lmforge's own YAML format scores WinoGrande the same."""

import json
import random
import shutil
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.eval import evaluate
from lmforge.eval.tasks.lmeval_yaml import TaskFolder, exact_match_hf

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "ran",
    "to",
    "house",
    "tree",
    "red",
    "blue",
    "big",
    "small",
    "it",
    "was",
    "there",
    "when",
    "you",
    "see",
    "water",
    "fire",
    "stone",
    "who",
    "what",
    "why",
]


def _sentence(rnd, n):
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def make_data(root: Path) -> dict[str, dict[str, Path]]:
    """Small documents in each dataset's hub layout, as JSON lines; {task: {split: file}}."""
    rnd = random.Random(7)
    gen = {
        "boolq": lambda: {
            "passage": _sentence(rnd, 12),
            "question": _sentence(rnd, 5),
            "label": rnd.randint(0, 1),
        },
        "piqa": lambda: {
            "goal": _sentence(rnd, 6),
            "sol1": _sentence(rnd, rnd.randint(2, 9)),
            "sol2": _sentence(rnd, rnd.randint(2, 9)),
            "label": rnd.randint(0, 1),
        },
        "hellaswag": lambda: {
            "activity_label": _sentence(rnd, 2),
            "ctx_a": _sentence(rnd, 6) + " [title]",
            "ctx_b": _sentence(rnd, 3),
            "endings": [_sentence(rnd, rnd.randint(2, 6)) for _ in range(4)],
            "label": str(rnd.randint(0, 3)),
        },
        "winogrande": lambda: {
            "sentence": _sentence(rnd, 5) + " _ " + _sentence(rnd, rnd.randint(2, 6)),
            "option1": _sentence(rnd, 1),
            "option2": _sentence(rnd, 2),
            "answer": rnd.choice(["1", "2"]),
        },
        "lambada_openai": lambda: {"text": _sentence(rnd, rnd.randint(6, 14))},
        "pile_arxiv": lambda: {"text": _sentence(rnd, rnd.randint(20, 60))},
        "babi": lambda: {
            "passage": _sentence(rnd, 8) + "\n",
            "question": _sentence(rnd, 4),
            "answer": rnd.choice(WORDS),
        },
    }
    splits = {
        "boolq": ("train", "validation"),
        "piqa": ("train", "validation"),
        "hellaswag": ("train", "validation"),
        "winogrande": ("train", "validation"),
        "lambada_openai": ("test",),
        "pile_arxiv": ("train",),
        "babi": ("train", "valid", "test"),
    }
    out: dict[str, dict[str, Path]] = {}
    for task, make in gen.items():
        out[task] = {}
        for split in splits[task]:
            f = root / "data" / f"{task}_{split}.jsonl"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("".join(json.dumps(make()) + "\n" for _ in range(6)))
            out[task][split] = f
    return out


SHIPPED = {  # lmforge name -> (lm-eval task file, files beside it)
    "boolq": ("super_glue/boolq/default.yaml", ()),
    "piqa": ("piqa/piqa.yaml", ()),
    "hellaswag": ("hellaswag/hellaswag.yaml", ("utils.py",)),
    "winogrande": ("winogrande/default.yaml", ("preprocess_winogrande.py",)),
    "lambada_openai": ("lambada/lambada_openai.yaml", ()),
    "pile_arxiv": ("pile/pile_arxiv.yaml", ()),
    "babi": ("babi/babi.yaml", ()),
}


def copy_shipped(tasks_dir: Path, data: dict) -> None:
    """Each task file as it ships, with only its dataset lines pointed at the local files."""
    from lmforge.eval.parity import lm_eval_dir

    for task, (rel, extras) in SHIPPED.items():
        src = lm_eval_dir() / rel
        dst = tasks_dir / task
        dst.mkdir(parents=True)
        lines = [
            ln
            for ln in src.read_text().splitlines()
            if not ln.startswith(("dataset_path:", "dataset_name:", "dataset_kwargs:"))
        ]
        files = "".join(f"    {s}: {f}\n" for s, f in data[task].items())
        (dst / src.name).write_text(
            "\n".join(lines) + f"\ndataset_path: json\ndataset_kwargs:\n  data_files:\n{files}"
        )
        for e in extras:
            shutil.copy(src.parent / e, dst / e)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("lm_eval")
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    from lmforge.tiny import tiny_gpt2, tiny_tokenizer

    tmp = tmp_path_factory.mktemp("lmeval_yaml")
    lm = tiny_gpt2(tiny_tokenizer(), n_positions=512, save_to=tmp / "gpt2")
    copy_shipped(tmp / "tasks", make_data(tmp))
    (tmp / "tasks" / "mine.yaml").write_text(
        "group: mine\ntask: [boolq, piqa]\naggregate_metric_list:\n"
        "  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 1\n"
    )
    return lm, tmp


def _theirs(tmp, tasks, shots):
    from lmforge.eval.parity import run_lm_eval

    return run_lm_eval(
        f"pretrained={tmp / 'gpt2'},dtype=float32", tasks, tmp / "tasks", shots, None, batch_size=4
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "shots, names",
    [
        (None, ["boolq", "piqa", "hellaswag", "winogrande", "lambada_openai", "pile_arxiv", "babi"]),
        (2, ["boolq", "hellaswag", "winogrande", "lambada_openai", "babi"]),
    ],
)
def test_shipped_task_files_give_lm_eval_results_per_document(setup, shots, names):
    lm, tmp = setup
    folder = TaskFolder([tmp / "tasks"])
    ours = evaluate(
        lm,
        [t for n in names for t in folder.get(n)],
        num_fewshot=shots,
        batch_size=4,
        log_samples=True,
        progress=False,
    )
    assert not ours["errors"], ours["errors"]
    theirs = _theirs(tmp, names, shots)
    for name in names:
        mine, other = ours["tasks"][name], theirs["results"][name]
        for metric, value in mine["metrics"].items():
            if metric == "token_perplexity":
                continue
            assert value == pytest.approx(float(other[f"{metric},none"]), rel=1e-4, abs=1e-6), (name, metric)
        their_samples = sorted(theirs["samples"][name], key=lambda s: s["doc_id"])
        assert len(mine["samples"]) == len(their_samples) == mine["n"]
        for m, t in zip(mine["samples"], their_samples):
            kind = mine["output_type"]
            if kind == "multiple_choice":
                assert m["loglikelihoods"] == pytest.approx([r[0] for r in t["filtered_resps"]], abs=1e-4), (
                    name
                )
                assert {k: m[k] for k in mine["metrics"]} == {k: t[k] for k in mine["metrics"]}, name
            elif kind == "loglikelihood":
                assert (m["context"], m["continuation"]) == tuple(t["arguments"][0])
                assert m["loglikelihood"] == pytest.approx(t["filtered_resps"][0][0], abs=1e-4)
                assert m["acc"] == t["acc"]
            elif kind == "loglikelihood_rolling":
                assert m["loglikelihood"] == pytest.approx(t["filtered_resps"][0], rel=1e-5)
            else:
                assert m["context"] == t["arguments"][0][0]
                # lm-eval decodes with skip_special_tokens; HFCausalLM.decode keeps them (lm.py, reported)
                assert _drop_special(lm, m["completion"]) == t["filtered_resps"][0]
                assert m["exact_match"] == t["exact_match"]


def _drop_special(lm, text: str) -> str:
    for tok in lm.tok.all_special_tokens + [str(t) for t in lm.tok.added_tokens_decoder.values()]:
        text = text.replace(tok, "")
    return text


@pytest.mark.slow
def test_group_and_tag(setup):
    lm, tmp = setup
    folder = TaskFolder([tmp / "tasks"])
    tasks = folder.get("mine")
    assert [(t.name, t.group) for t in tasks] == [("boolq", ("mine",)), ("piqa", ("mine",))]
    ours = evaluate(lm, tasks, batch_size=4, progress=False)
    theirs = _theirs(tmp, ["mine"], None)
    assert ours["groups"]["mine"]["metrics"]["acc"] == pytest.approx(
        theirs["results"]["mine"]["acc,none"], abs=1e-9
    )
    assert [t.name for t in folder.get("lambada")] == ["lambada_openai"]  # lambada_openai.yaml's tag


def test_custom_format_partial_scoring_matches_the_lm_eval_route(setup, tmp_path):
    """WinoGrande in lmforge's own format: doc_to_text renders the gold option's index, so each
    option's context is scored by the shared ending, as lm-eval's preprocess_winogrande."""
    from lmforge.eval.tasks.custom import load_task_file

    lm, tmp = setup
    data = tmp / "data" / "winogrande_validation.jsonl"
    spec = tmp_path / "wino.yaml"
    spec.write_text(
        f"task: wino\ntype: multiple_choice\ndata: {data}\n"
        'doc_to_text: "{{answer|int - 1}}"\n'
        "doc_to_choice: \"{{[sentence[:sentence.index('_')] + option1, "
        "sentence[:sentence.index('_')] + option2]}}\"\n"
        "doc_to_target: \"{{sentence[sentence.index('_') + 1:].strip()}}\"\nmetrics: [acc, acc_norm]\n"
    )
    task = load_task_file(spec)
    ours = evaluate(
        lm,
        [task, *TaskFolder([tmp / "tasks"]).get("winogrande")],
        batch_size=4,
        log_samples=True,
        progress=False,
    )
    a, b = ours["tasks"]["wino"], ours["tasks"]["winogrande"]
    assert task.partial is True
    assert [s["loglikelihoods"] for s in a["samples"]] == [s["loglikelihoods"] for s in b["samples"]]
    assert [s["acc"] for s in a["samples"]] == [s["acc"] for s in b["samples"]]


def test_unsupported_keys_are_one_clear_error(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "task: t\ndataset_path: json\noutput_type: multiple_choice\nfilter_list:\n  - name: x\n"
    )
    with pytest.raises(LmforgeError, match="key 'filter_list' is not supported"):
        TaskFolder([tmp_path]).get("t")
    (tmp_path / "t.yaml").write_text(
        "task: t\ndataset_path: json\noutput_type: multiple_choice\nmetric_list:\n  - metric: f1\n"
    )
    with pytest.raises(LmforgeError, match="metric 'f1' is not one lmforge computes"):
        TaskFolder([tmp_path]).get("t")


def test_function_only_from_the_given_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("def text(doc):\n    return 'x'\n")
    (outside / "base.yaml").write_text("doc_to_text: !function evil.text\n")
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "t.yaml").write_text(
        f"include: {outside / 'base.yaml'}\ntask: t\ndataset_path: json\n"
        "dataset_kwargs:\n  data_files: {test: d.jsonl}\ndoc_to_target: a\n"
    )
    with pytest.raises(LmforgeError, match="outside .*only runs Python from the folder"):
        TaskFolder([inside]).get("t")


def test_exact_match_as_lm_eval():
    em = pytest.importorskip("lm_eval.api.metrics").exact_match_hf_evaluate
    cases = [
        (" Paris", "Paris", {}),
        ("Paris.", "paris", {"ignore_case": True, "ignore_punctuation": True}),
        ("a1", "a", {"ignore_numbers": True}),
        ("The end", "end", {"regexes_to_ignore": ["The "]}),
    ]
    for ref, pred, kw in cases:
        assert exact_match_hf(ref, pred, **kw) == em([pred], [ref], **kw)["exact_match"]


@pytest.mark.slow
def test_cli_include_path(setup, tmp_path):
    from lmforge.eval.cli import main

    _, tmp = setup
    rc = main(
        [
            "--hf-model",
            str(tmp / "gpt2"),
            "--include-path",
            str(tmp / "tasks"),
            "--tasks",
            "winogrande,mine",
            "--output",
            str(tmp_path),
            "--no-cache",
            "--batch-size",
            "4",
        ]
    )
    res = json.loads((tmp_path / "results.json").read_text())
    assert rc == 0
    assert {"winogrande", "boolq", "piqa"} <= set(res["tasks"]) and "mine" in res["groups"]
    assert (
        main(
            [
                "--hf-model",
                str(tmp / "gpt2"),
                "--include-path",
                str(tmp / "tasks"),
                "--tasks",
                "nope",
                "--output",
                str(tmp_path),
            ]
        )
        == 2
    )  # unknown name: the built-in registry's clear error


def test_a_template_failing_on_a_document_is_one_clear_error(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "a", "label": 0}\n')
    (tmp_path / "t.yaml").write_text(
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: d.jsonl}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: label\ndoc_to_choice: ['x', 'y']\n"
    )
    task = TaskFolder([tmp_path]).get("t")[0]
    with pytest.raises(
        LmforgeError, match=r"task t: doc_to_text failed .*'question' is undefined \(columns: q, label\)"
    ):
        task.build_contexts(task.eval_docs())
