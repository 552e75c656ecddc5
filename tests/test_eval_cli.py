"""`lmforge eval` end to end on a tiny saved run; YAML tasks and their error messages; compare."""

import json

import pytest

from lmforge.benchmarks import BUNDLED
from lmforge.errors import LmforgeError
from lmforge.eval.cli import main
from lmforge.eval.tasks import data
from lmforge.eval.tasks.custom import load_task_file
from lmforge.tiny import tiny_lmforge, tiny_tokenizer


def make_run(path, seed=0):
    from lmforge.config import RunConfig
    from lmforge.train.checkpoint import save_checkpoint

    tok = tiny_tokenizer()
    lm = tiny_lmforge(tok, block_size=64, seed=seed)
    cfg = RunConfig()
    cfg.model = lm.model.cfg
    save_checkpoint(path, 1, lm.model, {}, {"step": 1}, cfg, keep_last=1)
    tok.save(path / "tokenizer.json")
    return path


CAPITALS = [
    {"q": "France", "options": ["Paris", "Lyon", "Nice"], "answer": 0},
    {"q": "Italy", "options": ["Milan", "Rome", "Turin"], "answer": 1},
    {"q": "Spain", "options": ["Madrid", "Seville", "Bilbao"], "answer": 0},
]


def write_task(tmp_path, rows=CAPITALS, **fields):
    (tmp_path / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "task": "capitals",
        "data": "capitals.jsonl",
        "doc_to_text": "The capital of {{q}} is",
        "doc_to_choice": "options",
        "doc_to_target": "{{answer}}",
        "metrics": ["acc", "acc_norm"],
        **fields,
    }
    path = tmp_path / "capitals.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def test_eval_cli_end_to_end_and_compare(tmp_path, capsys):
    run_a, run_b = make_run(tmp_path / "a"), make_run(tmp_path / "b", seed=1)
    task = write_task(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("A short note about capitals. Paris is in France.\n" * 5)
    args = [
        "--run",
        str(run_a),
        "--tasks",
        "arc_easy,mmlu_anatomy",
        "--limit",
        "3",
        "--task-file",
        str(task),
        "--text-file",
        str(text),
        "--log-samples",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    res = json.loads((run_a / "eval" / "results.json").read_text())
    assert "capitals" in res["tasks"] and "text:notes.txt" in res["tasks"] and not res["errors"]
    assert res["tasks"]["capitals"]["n"] == 3 and set(res["tasks"]["capitals"]["metrics"]) == {
        "acc",
        "acc_norm",
    }
    assert res["tasks"]["text:notes.txt"]["metrics"]["bits_per_byte"] > 0
    assert "capitals" in out and "acc_norm" in out and "results:" in out
    md = (run_a / "eval" / "results.md").read_text()
    assert "| capitals |" in md and (run_a / "eval" / "samples_capitals.jsonl").is_file()
    assert res["groups"]["mmlu"]["n"] == 3 and res["tasks"]["arc_easy"]["chance"] == pytest.approx(0.25)
    assert main(["--run", str(run_b), "--task-file", str(task), "--text-file", str(text)]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_a), str(run_b)]) == 0
    table = capsys.readouterr().out
    assert "| capitals | acc |" in table and "bits_per_byte" in table


def test_eval_cli_user_errors(tmp_path):
    with pytest.raises(LmforgeError, match="exactly one model"):
        from lmforge.eval.cli import load_lm

        load_lm(type("A", (), {"run": None, "hf_model": None})())
    assert main(["--run", str(tmp_path / "missing"), "--tasks", "arc_easy"]) == 2
    assert main(["--run", str(tmp_path), "--tasks", "nope"]) == 2


def test_a_failing_task_keeps_the_others(tmp_path):
    from lmforge.eval import evaluate

    lm = tiny_lmforge(tiny_tokenizer(), block_size=16)
    good = load_task_file(write_task(tmp_path))
    rows = [{"q": "x", "options": ["a " * 40, "b"], "answer": 0}]  # a choice longer than the context
    (tmp_path / "long").mkdir()
    bad = load_task_file(write_task(tmp_path / "long", rows=rows))
    bad.name = "too_long"
    res = evaluate(lm, [bad, good], progress=False)
    assert "capitals" in res["tasks"] and "longer than the model's context" in res["errors"]["too_long"]


def test_yaml_task_matches_builtin_arc():
    import tempfile
    from pathlib import Path

    import yaml

    from lmforge.eval.tasks import get_tasks

    spec = {
        "task": "arc_easy_yaml",
        "data": {"test": "ARC-Easy-Test.jsonl", "validation": "ARC-Easy-Dev.jsonl"},
        "doc_to_text": "Question: {{question.stem}}\nAnswer:",
        "doc_to_choice": "{{question.choices | map(attribute='text') | list}}",
        "doc_to_target": "{{(question.choices | map(attribute='label') | list).index(answerKey)}}",
        "metrics": ["acc", "acc_norm"],
    }
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "arc.yaml"
        path.write_text(yaml.safe_dump(spec))
        for split in ("Test", "Dev"):  # the original AI2 files, as shipped (gzipped) with lmforge
            f = BUNDLED / "arc" / "ARC-Easy" / f"ARC-Easy-{split}.jsonl.gz"
            (Path(d) / f.name[:-3]).write_text(data.read_text(f), encoding="utf-8")
        mine = load_task_file(path)
        builtin = get_tasks("arc_easy")[0]
        a, b = mine.eval_docs()[:20], builtin.eval_docs()[:20]
        assert mine.build_contexts(a, 3) == builtin.build_contexts(b, 3)
        assert [mine.choices(x) for x in a] == [builtin.choices(x) for x in b]
        assert [mine.gold(x) for x in a] == [builtin.gold(x) for x in b]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"doc_to_text": "The capital of {{country}} is"}, r"capitals.jsonl:1: field doc_to_text: .*country"),
        ({"doc_to_target": "{{answer + 5}}"}, r"capitals.jsonl:1: field doc_to_target: .*out of range"),
        ({"colour": "red"}, r"capitals.yaml: unknown field 'colour'"),
        ({"type": "ranking"}, r"type 'ranking' is not one of"),
    ],
)
def test_yaml_task_errors_name_file_line_field(tmp_path, change, message):
    with pytest.raises(LmforgeError, match=message):
        load_task_file(write_task(tmp_path, **change)).eval_docs()


def test_yaml_task_missing_field_and_empty_file(tmp_path):
    path = write_task(tmp_path)
    text = path.read_text().replace("doc_to_choice: options\n", "")
    path.write_text(text)
    with pytest.raises(LmforgeError, match="missing field 'doc_to_choice'"):
        load_task_file(path)
    with pytest.raises(LmforgeError, match="capitals.jsonl: no records"):
        load_task_file(write_task(tmp_path, rows=[])).eval_docs()


def test_yaml_generation_task_csv(tmp_path):
    (tmp_path / "qa.csv").write_text("question,answer\nSay hi,hi\nSay yo,yo\n")
    import yaml

    (tmp_path / "qa.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "qa",
                "type": "generate_until",
                "data": "qa.csv",
                "doc_to_text": "{{question}}:",
                "doc_to_target": "answer",
                "metrics": ["exact_match"],
                "generation": {"until": ["\n"], "max_gen_toks": 5},
            }
        )
    )
    from lmforge.eval import evaluate

    task = load_task_file(tmp_path / "qa.yaml")
    res = evaluate(tiny_lmforge(tiny_tokenizer(), block_size=32), [task], log_samples=True, progress=False)
    r = res["tasks"]["qa"]
    assert r["n"] == 2 and 0.0 <= r["metrics"]["exact_match"] <= 1.0
    assert all("\n" not in s["completion"] for s in r["samples"])


def test_evaluate_run_stage_with_shard_perplexity(tmp_path):
    from lmforge.data.config import DataConfig
    from lmforge.data.shards import encode_corpus
    from lmforge.eval.cli import evaluate_run

    run = make_run(tmp_path / "run")
    docs = [
        {
            "id": str(i),
            "text": f"Document {i} talks about capitals and rivers. " * 3,
            "source": "t",
            "meta": {},
        }
        for i in range(12)
    ]
    encode_corpus(iter(docs), tiny_tokenizer(), tmp_path / "shards", DataConfig(workers=1, val_fraction=0.5))
    res = evaluate_run(run, tasks=("arc_easy",), limit=2, shard_dir=tmp_path / "shards")
    shard = res["tasks"]["shards:shards/val"]
    assert 0 < shard["metrics"]["bits_per_byte"] < 30 and shard["counts"]["tokens"] > 0
    assert (run / "eval" / "results.md").is_file()
    assert res["tasks"]["arc_easy"]["chance"] == pytest.approx(0.25)
    assert "subsets shipped with lmforge" in res["notes"][0]
