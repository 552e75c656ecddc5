"""`lmforge` as a user meets it: --version, a closed pipe, `lmforge train`'s report card, a run
directory that refuses another corpus or tokenizer, and the warnings of a too-small corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
import yaml

from lmforge import __version__
from lmforge.config import load_config
from lmforge.data.documents import embedded_corpus
from lmforge.errors import ConfigError
from lmforge.train.parallel.dist import Layout
from lmforge.train.parallel.parallelize import check_layout

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=32",
    "tokenizer.vocab_size=300",
    "train.max_steps=4",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.eval_tokens=256",
    "train.log_every=2",
    "train.tensorboard=false",
    "train.threads=1",
    "data.workers=1",
    "data.val_fraction=0.1",
]


def lmforge(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def write_docs(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs), encoding="utf-8")
    return path


def test_version(tmp_path):
    proc = lmforge("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"lmforge {__version__}"


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`lmforge recipes | head -0`: the reader is gone before the first write."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", "recipes"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_train_writes_the_report_and_refuses_other_data_for_the_run(tmp_path):
    docs = list(islice(embedded_corpus(), 50))
    write_docs(tmp_path / "a.jsonl", docs[:40])
    write_docs(tmp_path / "b.jsonl", docs[10:])
    run = tmp_path / "runs" / "tiny"
    proc = lmforge("train", "--config", "tiny", *TINY, "data.corpus=a.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "report.md").is_file() and (run / "loss.png").is_file()
    report = (run / "report.md").read_text()
    assert "## Held-out loss" in report and "## Compute" in report
    assert proc.stdout.count("bits per byte") == 1
    config = (run / "config.yaml").read_text()

    for change in ("data.corpus=b.jsonl", "tokenizer.vocab_size=280"):
        proc = lmforge(
            "train",
            "--config",
            "tiny",
            *TINY,
            "data.corpus=a.jsonl",
            change,
            "train.max_steps=6",
            cwd=tmp_path,
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lmforge: error: ") and "name=tiny-2" in lines[0], (
            lines
        )
        assert change.split("=")[0] in lines[0]
        assert (run / "config.yaml").read_text() == config  # nothing rewritten
        assert not (run / "checkpoints" / "step_000006").exists()
    # the same data trains on (resumes)
    proc = lmforge(
        "train", "--config", "tiny", *TINY, "data.corpus=a.jsonl", "train.max_steps=6", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "checkpoints" / "step_000006").is_dir() and not (tmp_path / "runs" / "tiny-2").exists()
    assert yaml.safe_load((run / "inputs.yaml").read_text())["data.corpus"] == "a.jsonl"


def test_a_vocabulary_the_corpus_cannot_fill_warns(tmp_path):
    write_docs(tmp_path / "small.jsonl", islice(embedded_corpus(), 3))
    proc = lmforge(
        "tokenizer",
        "train",
        "--input",
        "small.jsonl",
        "--output",
        "tok.json",
        "tokenizer.vocab_size=8192",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    real = json.loads((tmp_path / "tok.json").read_text())["model"]["vocab"]
    assert len(real) < 8192
    assert (
        "warning: tokenizer.vocab_size=8,192 asked for" in proc.stderr
        and f"gives only {len(real):,}" in proc.stderr
    )
    proc = lmforge(
        "tokenizer",
        "train",
        "--input",
        "small.jsonl",
        "--output",
        "tok2.json",
        f"tokenizer.vocab_size={len(real) - 20}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "warning" not in proc.stderr


def test_an_odd_vocabulary_under_tensor_parallel_names_the_size_to_use():
    cfg = load_config("tiny", ["model.vocab_size=865"])
    with pytest.raises(ConfigError, match=r"set model.vocab_size=866 \(a multiple of 2"):
        check_layout(cfg, Layout(tp=2), 128)
