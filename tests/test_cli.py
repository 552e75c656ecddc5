"""The CLI end to end, as a user runs it: a real subprocess per command, tiny shapes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=64",
    "tokenizer.vocab_size=300",
    "train.max_steps=12",
    "train.batch_size=4",
    "train.warmup_steps=2",
    "train.eval_every=6",
    "train.eval_tokens=512",
    "train.ckpt_every=6",
    "train.log_every=3",
    "data.workers=1",
    "sample.max_new_tokens=16",
    "data.val_fraction=0.1",
    "eval.tasks=[arc_easy]",
    "eval.limit=5",
]


def lmforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lmforge: error:") and fragment in last, proc.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """~120 KB of Shakespeare (from the corpus shipped in lmforge/corpus/) as 60 JSONL documents."""
    from lmforge.data.documents import embedded_corpus

    plays = [d["text"] for d in embedded_corpus() if d["meta"]["author"] == "William Shakespeare"]
    text = "\n\n".join(plays)[:120_000]
    chunks = [text[i : i + 2000] for i in range(0, len(text), 2000)]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i, c in enumerate(chunks):
            f.write(json.dumps({"id": f"d{i}", "text": c, "source": "books", "meta": {}}) + "\n")
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("work")
    proc = lmforge("run", *TINY, f"data.corpus={corpus}", "out_dir=runs", "name=t", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "runs" / "t", proc


def test_run_writes_every_artifact_and_reports_bits_per_byte(finished_run):
    run, proc = finished_run
    for name in ("config.yaml", "tokenizer.json", "metrics.jsonl", "report.md", "data/meta.json"):
        assert (run / name).is_file(), name
    assert "bits per byte:" in proc.stdout and "perplexity:" in proc.stdout
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert steps[-1] == "step_000012"
    assert "runs/t/report.md" in proc.stdout
    inside = (run / "report.md").read_text().split("## Inside the model")[1]  # lmforge/inspect/report.py
    assert "(inside/attention/heads.png)" in inside and (run / "inside/attention/heads.json").is_file()


def test_rerun_resumes_instead_of_retraining(finished_run, corpus):
    run, _ = finished_run
    before = (run / "metrics.jsonl").read_text()
    proc = lmforge("run", *TINY, f"data.corpus={corpus}", "out_dir=runs", "name=t", cwd=run.parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert "reusing" in proc.stdout
    train_lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in train_lines) == 12
    assert len((run / "metrics.jsonl").read_text()) >= len(before)


def test_generate_greedy_is_repeatable(finished_run):
    run, _ = finished_run
    a = lmforge("generate", "--run", str(run), "--prompt", "ROMEO:", "sample.temperature=0", cwd=run)
    b = lmforge(
        "generate",
        "--run",
        str(run / "checkpoints" / "step_000012"),
        "--prompt",
        "ROMEO:",
        "sample.temperature=0",
        cwd=run,
    )
    assert a.returncode == 0, a.stderr
    assert a.stdout.startswith("ROMEO:") and a.stdout == b.stdout


def test_generate_rejects_prompt_longer_than_context(finished_run):
    run, _ = finished_run
    proc = lmforge("generate", "--run", str(run), "--prompt", "to be or not " * 200, cwd=run)
    assert_clean_error(proc, "context")


def test_corrupt_checkpoint_is_a_clear_error_and_untouched(finished_run, tmp_path):
    run, _ = finished_run
    ckpt = tmp_path / "step_000012"
    shutil.copytree(run / "checkpoints" / "step_000012", ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = sorted((p.name, p.stat().st_size) for p in ckpt.iterdir())
    proc = lmforge("generate", "--run", str(ckpt), cwd=tmp_path)
    assert_clean_error(proc, "model.safetensors")
    assert sorted((p.name, p.stat().st_size) for p in ckpt.iterdir()) == before


def test_shards_from_another_tokenizer_are_refused(finished_run, corpus, tmp_path):
    run, _ = finished_run
    proc = lmforge(
        "run",
        *TINY,
        "tokenizer.vocab_size=280",
        f"data.corpus={corpus}",
        f"data.shards={run / 'data'}",
        "out_dir=runs",
        "name=other",
        cwd=tmp_path,
    )
    assert_clean_error(proc, "tokenizer")


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lrr=1", "did you mean 'train.lr'"),
        ("model.n_head=3", "does not divide"),
        ("data.corpus=/no/such/corpus.jsonl", "/no/such/corpus.jsonl"),
        ("train.seq_len=128", "block_size"),
    ],
)
def test_bad_input_stops_with_one_line_and_writes_nothing(override, fragment, tmp_path, corpus):
    args = [*TINY, f"data.corpus={corpus}", "out_dir=runs", "name=bad", override]
    proc = lmforge("run", *args, cwd=tmp_path)
    assert_clean_error(proc, fragment)
    assert not (tmp_path / "runs" / "bad" / "checkpoints").exists()


def test_empty_corpus_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = lmforge("run", *TINY, f"data.corpus={empty}", "out_dir=runs", "name=e", cwd=tmp_path)
    assert_clean_error(proc, "empty.jsonl")


def test_tokenizer_subcommands_and_existing_output_is_kept(tmp_path, corpus):
    proc = lmforge(
        "tokenizer",
        "train",
        "--input",
        str(corpus),
        "--output",
        "tok.json",
        "tokenizer.vocab_size=300",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    original = (tmp_path / "tok.json").read_bytes()
    again = lmforge("tokenizer", "train", "--input", str(corpus), "--output", "tok.json", cwd=tmp_path)
    assert_clean_error(again, "already exists")
    assert (tmp_path / "tok.json").read_bytes() == original
    enc = lmforge(
        "tokenizer",
        "encode",
        "--tokenizer",
        "tok.json",
        "--input",
        str(corpus),
        "--output",
        "shards",
        "data.workers=2",
        cwd=tmp_path,
    )
    assert enc.returncode == 0, enc.stderr
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 300


def test_recipes_and_help(tmp_path):
    proc = lmforge("recipes", cwd=tmp_path)
    assert proc.returncode == 0 and "tiny" in proc.stdout.split()
    assert lmforge("--help", cwd=tmp_path).returncode == 0
