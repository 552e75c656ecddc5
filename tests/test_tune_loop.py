"""Fine-tuning on the pre-training loop: gradient accumulation is batch splitting (batch_size x
grad_accum), a run stopped by SIGTERM and then killed with SIGKILL resumes step for step, and two
FSDP processes train as one. Each run is a real `finetune` in its own process; the signals are
sent from inside the run at a chosen step (the worker wraps the batch source's next_batch), so
the kill lands mid-run at the same place every time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lmforge.config import RunConfig
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import latest_checkpoint, load_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 420  # a hang fails instead of blocking CI
PAIRS = [
    ("hi", "hello there"),
    ("how are you", "fine thanks"),
    ("what is red", "a color"),
    ("name a fruit", "an apple"),
    ("count to three", "one two three"),
    ("say bye", "goodbye now"),
    ("what is blue", "the sky"),
    ("name a tree", "an old oak"),
]

WORKER = textwrap.dedent("""
    import json, os, sys
    from lmforge.config import from_dict
    from lmforge.tune.config import FinetuneConfig
    from lmforge.tune.sft import finetune
    from lmforge.tune.source import SftSource

    cfg = from_dict(FinetuneConfig, json.loads(sys.argv[1]))
    sig, at = json.loads(sys.argv[2]) if len(sys.argv) > 2 else (0, -1)
    draw = SftSource.next_batch

    def next_batch(self, rows, step, micro):
        if step == at and micro == 0:  # the signal arrives while step `at` + 1 is being computed
            os.kill(os.getpid(), sig)
        return draw(self, rows, step, micro)

    SftSource.next_batch = next_batch
    r = finetune(cfg, log=lambda m: None)
    print("RESULT " + json.dumps({"stopped": r.stopped, "steps": r.steps}))
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(base run dir, SFT records, worker script): an untrained tiny llama-style checkpoint."""
    root = tmp_path_factory.mktemp("tune_loop")
    text = " ".join(q + " " + a for q, a in PAIRS) + " the a of and to is in it that "
    tok = train_tokenizer([text * 30], TokenizerConfig(vocab_size=320, min_frequency=2))
    run = root / "base"
    cfg = RunConfig(name="base", out_dir=str(root))
    cfg.model = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=48,
        n_layer=2,
        n_embd=32,
        n_head=4,
        pos="rope",
        activation="swiglu",
        norm="rmsnorm",
        bias=False,
    )
    torch.manual_seed(0)
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, Transformer(cfg.model), {}, {"step": 0}, cfg, keep_last=1)
    data = root / "pairs.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in PAIRS
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 3))
    (root / "worker.py").write_text(WORKER)
    return run, data, root / "worker.py"


def settings(setup, out: Path, **kw) -> dict:
    run, data, _ = setup
    # seq_len 24 packs two or three conversations of unequal length into each row
    return {
        "init": str(run),
        "data": str(data),
        "out": str(out),
        "max_steps": 8,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 2,
        "seq_len": 24,
        "eval_every": 0,
        "log_every": 1,
        "ckpt_every": 0,
        "device": "cpu",
        "precision": "fp32",
        "val_fraction": 0.2,
        "chat_prompts": [],
        **kw,
    }


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run_worker(setup, cfg: dict, signal_at: tuple[int, int] | None = None, nproc: int = 1):
    args = [str(setup[2]), json.dumps(cfg)] + ([json.dumps(signal_at)] if signal_at else [])
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            *args,
        ]
    else:
        cmd = [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=TIMEOUT_S, check=False)


def result(proc) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(proc.stdout.split("RESULT ")[-1].splitlines()[0])


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_model(out)[0].state_dict()


def test_accumulation_is_batch_splitting(setup, tmp_path):
    """4 rows in one micro-batch = 2 micro-batches of 2 rows: every assistant token weighs the same
    (the packed rows hold different numbers of them, so a mean of micro-batch means would differ)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert result(run_worker(setup, settings(setup, one)))["steps"] == 8
    assert result(run_worker(setup, settings(setup, two, batch_size=2, grad_accum=2)))["steps"] == 8
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    w1, w2 = weights(one), weights(two)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)


def test_sigterm_then_sigkill_resumes_step_for_step(setup, tmp_path):
    """LoRA with adapter dropout, so the resumed run must also restore the random generators."""
    lora = {"method": "lora", "lr": 1e-2, "lora": {"rank": 2, "dropout": 0.1}}
    ref = tmp_path / "ref"
    assert result(run_worker(setup, settings(setup, ref, **lora)))["stopped"] is None
    out = tmp_path / "cut"
    cfg = settings(setup, out, ckpt_every=4, **lora)
    stopped = result(run_worker(setup, cfg, (signal.SIGTERM, 2)))  # saved at the end of step 3
    assert "interrupted by SIGTERM at step 3/8" in stopped["stopped"]
    assert latest_checkpoint(out / "train").name == "step_000003"
    killed = run_worker(setup, cfg, (signal.SIGKILL, 5))  # resumed at 3, saved at 4, killed in step 6
    assert killed.returncode == -signal.SIGKILL
    assert result(run_worker(setup, cfg))["steps"] == 8  # resumes from step 4
    assert losses(out) == losses(ref)
    w_ref, w_out = weights(ref), weights(out)
    for name in w_ref:
        torch.testing.assert_close(w_out[name], w_ref[name], atol=0, rtol=0)
    assert not (out / "train" / "checkpoints").exists()  # resume state removed once the model is saved
    assert (out / "lora" / "adapter.safetensors").exists()


_ONE_PROCESS: dict[str, Path] = {}


@pytest.mark.slow
@pytest.mark.parametrize("layout", [{"dp": 2}, {"tp": 2}], ids=["fsdp", "tp"])
def test_two_processes_train_as_one(setup, tmp_path_factory, layout):
    """FSDP (each rank its half of every micro-batch's rows) and tensor parallelism (packed rows
    through split heads) give one process's losses, held-out losses and weights."""
    if "one" not in _ONE_PROCESS:
        _ONE_PROCESS["one"] = tmp_path_factory.mktemp("one") / "out"
        result(run_worker(setup, settings(setup, _ONE_PROCESS["one"])))
    one, two = _ONE_PROCESS["one"], tmp_path_factory.mktemp("two") / "out"
    result(run_worker(setup, settings(setup, two, parallel=layout), nproc=2))
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)
    val = [
        [
            json.loads(x)["val_loss"]
            for x in (d / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["kind"] == "val"
        ]
        for d in (one, two)
    ]
    assert val[1] == pytest.approx(val[0], abs=1e-5)
    w1, w2 = weights(one), weights(two)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)
