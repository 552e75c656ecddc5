"""Where benchmark data comes from (the subsets shipped with lmforge, a folder, the hub's layout),
what `lmforge eval` says and writes about it, its exit status, results kept across runs, progress."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from lmforge.benchmarks import BUNDLED
from lmforge.eval.cli import main
from lmforge.eval.tasks import data, get_tasks
from lmforge.tiny import tiny_lmforge, tiny_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"


def make_run(path: Path, seed: int = 0) -> Path:
    from lmforge.config import RunConfig
    from lmforge.train.checkpoint import save_checkpoint

    tok = tiny_tokenizer()
    lm = tiny_lmforge(tok, block_size=64, seed=seed)
    cfg = RunConfig()
    cfg.model = lm.model.cfg
    save_checkpoint(path, 1, lm.model, {}, {"step": 1}, cfg, keep_last=1)
    tok.save(path / "tokenizer.json")
    return path


def write_capitals(folder: Path, name: str = "capitals", options=("Paris", "Lyon", "Nice")) -> Path:
    rows = [
        {"country": "France", "options": list(options), "answer": 0},
        {"country": "Italy", "options": ["Milan", "Rome", "Turin"], "answer": 1},
    ]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(
        yaml.safe_dump(
            {
                "task": name,
                "data": f"{name}.jsonl",
                "doc_to_text": "The capital of {{country}} is",
                "doc_to_choice": "options",
                "doc_to_target": "{{answer}}",
                "metrics": ["acc"],
            }
        )
    )
    return folder / f"{name}.yaml"


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.delenv(data.HUB_MIRROR_VAR, raising=False)


def test_eval_scores_the_shipped_subsets_with_no_flags_and_says_so(tmp_path, capsys, no_env):
    run = make_run(tmp_path / "run")
    assert main(["--run", str(run), "--tasks", "arc_easy,mmlu_anatomy,truthfulqa_mc2", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"note: arc_easy, mmlu, truthfulqa_mc2: scored on the subsets shipped with lmforge", out)
    assert "--data-dir DIR" in out and "--hub" in out
    res = json.loads((run / "eval" / "results.json").read_text())
    assert set(res["tasks"]) == {"arc_easy", "mmlu_anatomy", "truthfulqa_mc2"} and not res["errors"]
    assert res["tasks"]["arc_easy"]["source"].startswith(str(BUNDLED))
    assert "subsets shipped with lmforge" in (run / "eval" / "results.md").read_text()


def test_a_data_dir_is_not_called_a_subset(tmp_path, capsys, no_env):
    full = tmp_path / "bench" / "arc" / "ARC-Easy"
    full.mkdir(parents=True)
    (full / "ARC-Easy-Test.jsonl").write_text(data.read_text(BUNDLED / "arc/ARC-Easy/ARC-Easy-Test.jsonl.gz"))
    run = make_run(tmp_path / "run")
    assert (
        main(
            ["--run", str(run), "--tasks", "arc_easy", "--limit", "2", "--data-dir", str(tmp_path / "bench")]
        )
        == 0
    )
    assert "note:" not in capsys.readouterr().out
    assert json.loads((run / "eval" / "results.json").read_text())["notes"] == []


def test_results_json_keeps_earlier_tasks_of_the_same_model(tmp_path, capsys, no_env):
    run = make_run(tmp_path / "run")
    assert main(["--run", str(run), "--tasks", "arc_easy", "--limit", "2"]) == 0
    assert main(["--run", str(run), "--task-file", str(write_capitals(tmp_path))]) == 0
    res = json.loads((run / "eval" / "results.json").read_text())
    assert set(res["tasks"]) == {"arc_easy", "capitals"}
    assert (
        res["tasks"]["arc_easy"]["settings"]["limit"] == 2
        and res["tasks"]["capitals"]["settings"]["limit"] is None
    )
    assert (
        main(["--run", str(run), "--tasks", "arc_easy,mmlu_anatomy", "--limit", "3"]) == 0
    )  # rerun replaces
    res = json.loads((run / "eval" / "results.json").read_text())
    assert res["tasks"]["arc_easy"]["n"] == 3 and res["tasks"]["capitals"]["n"] == 2
    assert res["groups"]["mmlu"]["n"] == 3  # groups recomputed over the merged tasks
    md = (run / "eval" / "results.md").read_text()
    assert "| capitals |" in md and "| arc_easy |" in md
    other = make_run(tmp_path / "other", seed=1)  # another model's results are not mixed in
    out = tmp_path / "shared_out"
    assert main(["--run", str(run), "--task-file", str(write_capitals(tmp_path)), "--output", str(out)]) == 0
    assert main(["--run", str(other), "--tasks", "arc_easy", "--limit", "2", "--output", str(out)]) == 0
    assert set(json.loads((out / "results.json").read_text())["tasks"]) == {"arc_easy"}
    capsys.readouterr()


def test_a_failed_task_gives_a_nonzero_exit_and_keeps_the_others(tmp_path, capsys, no_env):
    run = make_run(tmp_path / "run")
    good = write_capitals(tmp_path)
    (tmp_path / "long").mkdir()
    bad = write_capitals(tmp_path / "long", name="too_long", options=("word " * 80, "b", "c"))  # > 64 tokens
    assert main(["--run", str(run), "--task-file", str(good), "--task-file", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "1 task(s) failed: too_long" in captured.err and "results:" in captured.out
    res = json.loads((run / "eval" / "results.json").read_text())
    assert "capitals" in res["tasks"] and "too_long" in res["errors"]


def test_readme_custom_task_example_runs(tmp_path):
    """The YAML block of the README's "Custom tasks" section, as written, on a small capitals file."""
    from lmforge.eval import evaluate
    from lmforge.eval.tasks.custom import load_task_file

    section = README.read_text(encoding="utf-8").split("### Custom tasks", 1)[1]
    spec = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))
    files = spec["data"] if isinstance(spec["data"], dict) else {"test": spec["data"]}
    countries = [
        ("France", "Paris"),
        ("Italy", "Rome"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Peru", "Lima"),
    ]
    for split, rows in (("test", countries[:2]), ("train", countries[2:]), ("validation", countries[2:])):
        if split in files:
            (tmp_path / files[split]).write_text(
                "".join(
                    json.dumps({"country": c, "options": [cap, "Oslo", "Bern"], "answer": 0}) + "\n"
                    for c, cap in rows
                )
            )
    (tmp_path / "capitals.yaml").write_text(yaml.safe_dump(spec))
    task = load_task_file(tmp_path / "capitals.yaml")
    res = evaluate(tiny_lmforge(tiny_tokenizer(), block_size=128), [task], progress=False, log_samples=True)
    assert not res["errors"], res["errors"]
    r = res["tasks"][spec["task"]]
    assert r["n"] == 2 and r["num_fewshot"] == spec["num_fewshot"] == 2
    assert r["samples"][0]["context"].startswith(spec["description"] + "The capital of ")


# ---------------------------------------------------------------- --hub against a local mirror


def write_hub_repo(root: Path, repo: str, configs: dict[str, dict[str, list[dict]]]) -> None:
    """A dataset repository in the hub's layout: <config>/<split>-00000-of-00001.parquet and a
    README.md whose YAML header declares the configs (how the hub's parquet repos are laid out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = root / repo
    entries = []
    for config, splits in configs.items():
        (base / config).mkdir(parents=True, exist_ok=True)
        files = []
        for split, rows in splits.items():
            pq.write_table(pa.Table.from_pylist(rows), base / config / f"{split}-00000-of-00001.parquet")
            files.append({"split": split, "path": f"{config}/{split}-*"})
        entries.append({"config_name": config, "data_files": files})
    (base / "README.md").write_text("---\n" + yaml.safe_dump({"configs": entries}) + "---\n")


def test_hub_code_path_on_a_local_mirror_in_the_hub_layout(tmp_path, monkeypatch, no_env):
    datasets = pytest.importorskip("datasets", reason="--hub needs the eval extra (datasets)")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # nothing written to ~
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    mirror = tmp_path / "mirror"
    local = {n: get_tasks(n, BUNDLED) for n in ("arc_easy", "mmlu_anatomy", "truthfulqa_mc2", "hellaswag")}
    arc = local["arc_easy"][0]
    write_hub_repo(
        mirror,
        "allenai/ai2_arc",
        {"ARC-Easy": {"test": arc.split_docs("test")[:6], "validation": arc.split_docs("validation")[:6]}},
    )
    mm = local["mmlu_anatomy"][0]
    write_hub_repo(
        mirror, "cais/mmlu", {"anatomy": {"test": mm.split_docs("test"), "dev": mm.split_docs("dev")}}
    )
    tq = local["truthfulqa_mc2"][0]
    write_hub_repo(mirror, "truthfulqa/truthful_qa", {"multiple_choice": {"validation": tq.eval_docs()[:6]}})
    raw = [
        json.loads(x) for x in data.read_text(BUNDLED / "hellaswag/hellaswag_val.jsonl.gz").splitlines()[:6]
    ]
    write_hub_repo(mirror, "Rowan/hellaswag", {"default": {"validation": raw}})
    monkeypatch.setenv(data.HUB_MIRROR_VAR, str(mirror))
    for name, (ours,) in local.items():
        (hub,) = get_tasks(name, hub=True)
        assert hub.source.startswith("hub:")
        docs, want = hub.eval_docs(), ours.eval_docs()[: len(hub.eval_docs())]
        assert len(docs) >= 5
        assert hub.build_contexts(docs, 0) == ours.build_contexts(want, 0), name
        if name == "mmlu_anatomy":  # the same dev split: the same 5-shot prompts
            assert hub.build_contexts(docs, 5) == ours.build_contexts(want, 5)
        assert [hub.choices(d) for d in docs] == [ours.choices(d) for d in want]
        assert [hub.gold(d) for d in docs] == [ours.gold(d) for d in want]
    with pytest.raises(data.LmforgeError, match="allenai/ai2_arc is not in"):
        monkeypatch.setenv(data.HUB_MIRROR_VAR, str(tmp_path / "empty"))
        get_tasks("arc_easy", hub=True)[0].eval_docs()


# ---------------------------------------------------------------- progress


def test_perplexity_progress_counts_windows(monkeypatch):
    from lmforge.eval.perplexity import perplexity_of_texts

    class Recorder:
        def __init__(self):
            self.total, self.done = None, 0

        def set_total(self, n):
            self.total = n

        def __call__(self, n):
            self.done += n

    lm = tiny_lmforge(tiny_tokenizer(), block_size=16)
    rec = Recorder()
    perplexity_of_texts(
        lm, ["a longer text about rivers and capitals " * 6, "short one"], batch_size=2, progress=rec
    )
    assert (
        rec.total is not None and rec.total > 2 and rec.done == rec.total
    )  # several windows for the long text


def test_progress_bars_only_on_rank0_terminals(monkeypatch):
    from lmforge.eval.runner import _progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("RANK", "0")
    assert not _progress(3, "t", True).disable
    monkeypatch.setenv("RANK", "1")
    assert _progress(3, "t", True).disable
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert _progress(3, "t", True).disable
