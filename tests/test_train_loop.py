"""The training loop end to end on a tiny model: loss goes down, checkpoints are atomic, a run
killed with SIGKILL resumes to the same losses, SIGTERM saves, non-finite losses stop the run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from itertools import islice, pairwise
from pathlib import Path

import pytest
import torch

from lmforge.config import RunConfig, from_dict
from lmforge.data.config import DataConfig
from lmforge.data.documents import embedded_corpus
from lmforge.data.shards import encode_corpus
from lmforge.errors import LmforgeError
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import latest_checkpoint, list_checkpoints, load_model
from lmforge.train.loop import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(shard_dir, tokenizer, tokenizer.json path) from a throwaway 300-token BPE on 80 documents."""
    root = tmp_path_factory.mktemp("train_data")
    docs = list(islice(embedded_corpus(), 80))
    tok = train_tokenizer([d["text"] for d in docs], TokenizerConfig(vocab_size=300))
    tok.save(root / "tokenizer.json")
    encode_corpus(docs, tok, root / "shards", DataConfig(workers=1, val_fraction=0.1))
    return root / "shards", tok, root / "tokenizer.json"


def make_cfg(tok, model=None, **train) -> RunConfig:
    m = {
        "vocab_size": tok.vocab_size,
        "n_layer": 2,
        "n_embd": 32,
        "n_head": 2,
        "block_size": 32,
        **(model or {}),
    }
    t = {
        "max_steps": 30,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 3,
        "log_every": 1,
        "eval_every": 0,
        "eval_tokens": 512,
        "ckpt_every": 0,
        "threads": 1,
        "tensorboard": False,
        **train,
    }
    return from_dict(RunConfig, {"model": m, "train": t})


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# A training run in its own process, to be killed.
SCRIPT = textwrap.dedent("""
    import json, sys
    from lmforge.config import RunConfig, from_dict
    from lmforge.tokenizer import Tokenizer
    from lmforge.train.loop import train
    shards, tok_path, run_dir, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    result = train(from_dict(RunConfig, cfg), shards, Tokenizer.load(tok_path), run_dir)
    print("RESULT", json.dumps(result.__dict__))
""")


def start_training(data, run_dir: Path, cfg: RunConfig) -> subprocess.Popen:
    from lmforge.config import to_dict

    shards, _, tok_path = data
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(shards), str(tok_path), str(run_dir), json.dumps(to_dict(cfg))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training process ended before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.001)


# ---- a normal run


def test_decoder_run_learns_and_writes_the_run_dir(data, tmp_path, capsys):
    shards, tok, _ = data
    run = tmp_path / "run"
    cfg = make_cfg(tok, max_steps=40, eval_every=20, ckpt_every=20, log_every=5)
    result = train(cfg, shards, tok, run)

    losses = [r["loss"] for r in read_metrics(run)]
    assert [r["step"] for r in read_metrics(run)] == list(range(5, 41, 5))
    assert losses[-1] < losses[0] - 0.5, losses  # ln(300) = 5.7 at the start
    val = read_metrics(run, "val")
    assert [v["step"] for v in val] == [20, 40] and val[1]["val_loss"] < val[0]["val_loss"]
    assert result.steps == 40 and result.tokens == 40 * 4 * 32 and not result.stopped_early
    assert result.val_loss == pytest.approx(val[1]["val_loss"]) and result.val_ppl == pytest.approx(
        math.exp(result.val_loss)
    )
    assert 0.5 < result.val_bpb < 10 and result.tokens_per_s > 0
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "tokenizer.json",
    ]
    assert [p.name for p in list_checkpoints(run)] == ["step_000020", "step_000040"]
    files = sorted(p.name for p in latest_checkpoint(run).iterdir())
    assert files == ["COMPLETE", "config.yaml", "model.safetensors", "optimizer.pt", "state.json"]
    out = capsys.readouterr().out  # not a terminal: plain progress lines
    assert "step 40/40 | loss" in out and "tok/s" in out and "eta" in out and "val  40/40" in out

    model, loaded_cfg = load_model(run)  # the latest checkpoint, tied weights restored
    assert loaded_cfg == cfg.model and not model.training
    assert model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr() or not cfg.model.tie_embeddings
    x = torch.randint(0, tok.vocab_size, (2, 32))
    again, _ = load_model(latest_checkpoint(run))
    assert torch.equal(model(x)[0], again(x)[0])


@pytest.mark.parametrize(
    "kind,denoising", [("encoder", "t5"), ("encoder-decoder", "t5"), ("encoder-decoder", "bart")]
)
def test_encoder_objectives_train(data, tmp_path, kind, denoising):
    shards, tok, _ = data
    cfg = make_cfg(tok, {"kind": kind}, max_steps=30, denoising=denoising, log_every=5)
    result = train(cfg, shards, tok, tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert losses[-1] < losses[0] - 0.3, losses
    assert result.val_loss is not None and result.val_ppl is None and result.val_bpb is None


def test_bf16_autocast_and_progress_bar(data, tmp_path, capsys):
    shards, tok, _ = data
    result = train(
        make_cfg(tok, max_steps=3, precision="bf16", progress="bar"), shards, tok, tmp_path / "run"
    )
    assert math.isfinite(result.final_train_loss)
    assert "3/3" in capsys.readouterr().out  # tqdm's step/total


# ---- batch arithmetic


def test_grad_accumulation_matches_one_big_batch(data, tmp_path):
    shards, tok, _ = data
    big = train(make_cfg(tok, max_steps=3, batch_size=8, grad_accum=1), shards, tok, tmp_path / "big")
    acc = train(make_cfg(tok, max_steps=3, batch_size=4, grad_accum=2), shards, tok, tmp_path / "acc")
    a, b = read_metrics(tmp_path / "big"), read_metrics(tmp_path / "acc")
    for ra, rb in zip(a, b):  # same windows, same gradient: same norm and the same next losses
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
    assert big.tokens == acc.tokens == 3 * 8 * 32


def test_batch_ramp_in_the_loop(data, tmp_path):
    shards, tok, _ = data
    # micro-batch = 4 x 32 = 128 tokens; ramp from 1 to 4 micro-batches over 2,000 tokens.
    cfg = make_cfg(tok, max_steps=12, grad_accum=4, batch_ramp_start=128, batch_ramp_tokens=2000)
    train(cfg, shards, tok, tmp_path / "run")
    tokens = [0] + [r["tokens"] for r in read_metrics(tmp_path / "run")]
    micro = [(b - a) // 128 for a, b in pairwise(tokens)]
    assert micro == [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4]  # round(1 + 3 * seen / 2000)


def test_grad_clipping_scales_the_update(data, tmp_path):
    """With eps >> |grad|, Adam's first step is ~ lr * grad, so clipping the gradient norm from
    g to c shrinks the weight change by c / g."""
    shards, tok, _ = data
    common = {"max_steps": 1, "warmup_steps": 0, "lr": 1e-2, "eps": 1.0, "weight_decay": 0.0}
    train(make_cfg(tok, grad_clip=0.0, **common), shards, tok, tmp_path / "free")
    train(make_cfg(tok, grad_clip=0.01, **common), shards, tok, tmp_path / "clip")
    norm = read_metrics(tmp_path / "free")[0]["grad_norm"]
    assert read_metrics(tmp_path / "clip")[0]["grad_norm"] == pytest.approx(norm)  # logged before clipping
    assert norm > 0.1
    torch.manual_seed(make_cfg(tok).train.seed)
    from lmforge.model import Transformer

    init = Transformer(make_cfg(tok).model).state_dict()
    free, _ = load_model(tmp_path / "free")
    clip, _ = load_model(tmp_path / "clip")

    def delta(m):
        return torch.cat([(p - init[n]).flatten() for n, p in m.state_dict().items()]).norm().item()

    assert delta(clip) / delta(free) == pytest.approx(0.01 / norm, rel=0.1)


# ---- checkpoints


def test_keep_last_and_partial_checkpoints_are_ignored(data, tmp_path):
    shards, tok, _ = data
    run = tmp_path / "run"
    train(make_cfg(tok, max_steps=10, ckpt_every=2, keep_last=2), shards, tok, run)
    assert [p.name for p in list_checkpoints(run)] == ["step_000008", "step_000010"]

    ckpts = run / "checkpoints"
    (ckpts / ".tmp_step_000012").mkdir()  # a save killed half way
    (ckpts / ".tmp_step_000012" / "model.safetensors").write_bytes(b"garbage")
    partial = ckpts / "step_000014"  # renamed somehow, but without its COMPLETE marker
    partial.mkdir()
    for f in (ckpts / "step_000010").iterdir():
        if f.name != "COMPLETE":
            (partial / f.name).write_bytes(f.read_bytes())
    assert latest_checkpoint(run).name == "step_000010"
    with pytest.raises(LmforgeError, match="step_000014 is incomplete"):
        load_model(partial)

    result = train(make_cfg(tok, max_steps=12, ckpt_every=2, keep_last=2), shards, tok, run)  # resumes at 10
    assert result.steps == 12
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 13))
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000010", "step_000012"]  # leftovers cleaned


def test_corrupt_checkpoints_give_clear_errors(data, tmp_path):
    shards, tok, _ = data
    run = tmp_path / "run"
    train(make_cfg(tok, max_steps=2), shards, tok, run)
    ckpt = latest_checkpoint(run)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.raises(LmforgeError, match=r"step_000002 is damaged: model\.safetensors holds \d+ bytes"):
        load_model(run)  # the manifest in COMPLETE says how big it was
    (ckpt / "COMPLETE").write_text("step 2\n")  # a checkpoint from before manifests: safetensors finds it
    with pytest.raises(LmforgeError, match=r"cannot load weights from .*step_000002/model\.safetensors"):
        load_model(run)
    with pytest.raises(LmforgeError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(LmforgeError, match="no complete checkpoint"):
        load_model(tmp_path)
    with pytest.raises(LmforgeError, match="cannot load weights"):  # resuming from it fails the same way
        train(make_cfg(tok, max_steps=4), shards, tok, run)
    with pytest.raises(LmforgeError, match="train.resume=false"):
        train(make_cfg(tok, max_steps=4, resume=False), shards, tok, run)


def test_init_from_copies_weights_not_optimizer(data, tmp_path):
    shards, tok, _ = data
    train(make_cfg(tok, max_steps=5), shards, tok, tmp_path / "a")
    result = train(
        make_cfg(tok, max_steps=1, lr=0.0, init_from=str(tmp_path / "a")), shards, tok, tmp_path / "b"
    )
    assert result.steps == 1  # a fresh run: step count and optimizer start over
    a, _ = load_model(tmp_path / "a")
    b, _ = load_model(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name  # lr 0: still the weights it started from


# ---- stopping and resuming


def test_sigkill_then_resume_reproduces_the_losses(data, tmp_path):
    shards, tok, _ = data
    # Dropout on, so the resumed run also needs the restored torch RNG to match.
    cfg = make_cfg(
        tok,
        {"resid_dropout": 0.1, "embd_dropout": 0.1},
        max_steps=40,
        ckpt_every=5,
        eval_every=10,
        keep_last=2,
    )
    reference = train(cfg, shards, tok, tmp_path / "ref")

    run = tmp_path / "killed"
    proc = start_training(data, run, cfg)
    wait_for(
        lambda: (run / "checkpoints" / "step_000010" / "COMPLETE").exists(), proc, "the step-10 checkpoint"
    )
    proc.kill()  # SIGKILL: no handler runs, whatever was being written stays half-written
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(latest_checkpoint(run).name.split("_")[1])
    assert killed_at < 40, "the run finished before it was killed"

    resumed = train(cfg, shards, tok, run)
    ref_train, new_train = read_metrics(tmp_path / "ref"), read_metrics(run)
    assert [r["step"] for r in new_train] == list(range(1, 41))  # no duplicated or missing steps
    assert [r["loss"] for r in new_train] == [r["loss"] for r in ref_train]  # identical floats
    assert [r["grad_norm"] for r in new_train] == [r["grad_norm"] for r in ref_train]
    ref_val, new_val = read_metrics(tmp_path / "ref", "val"), read_metrics(run, "val")
    assert [(v["step"], v["val_loss"]) for v in new_val] == [(v["step"], v["val_loss"]) for v in ref_val]
    assert resumed.steps == reference.steps and resumed.tokens == reference.tokens
    a, _ = load_model(tmp_path / "ref")
    b, _ = load_model(run)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data, tmp_path, capsys):
    shards, tok, _ = data
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def send_sigterm_after_a_few_steps():  # a real signal to this process, as `kill` would send
        while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text()) < 300:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_sigterm_after_a_few_steps, daemon=True)
    sender.start()
    result = train(make_cfg(tok, max_steps=100_000), shards, tok, run)
    sender.join()
    assert result.stopped_early and 0 < result.steps < 100_000
    ckpt = latest_checkpoint(run)
    assert ckpt.name == f"step_{result.steps:06d}" and result.checkpoint == str(ckpt)
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM" in err and str(ckpt) in err
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers restored
    assert read_metrics(run)[-1]["step"] == result.steps


def test_non_finite_losses_skip_steps_then_stop(data, tmp_path, capsys):
    shards, tok, _ = data
    # lr 1e30: the first update blows the weights up, every later loss is inf/nan.
    cfg = make_cfg(tok, max_steps=50, lr=1e30, warmup_steps=0, max_bad_steps=3, ckpt_every=1)
    result = train(cfg, shards, tok, tmp_path / "run")
    err = capsys.readouterr().err
    assert result.stopped_early and result.steps == 4 and "non-finite" in result.stop_reason
    assert err.count("step skipped") == 3 and "stopped after 3 non-finite losses in a row" in err
    assert math.isfinite(result.final_train_loss)  # the last finite loss, from step 1
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert math.isfinite(losses[0]) and losses[1:] == [None] * 3
    assert latest_checkpoint(tmp_path / "run").name == "step_000003"  # nothing saved at the stopping step


@pytest.mark.slow
def test_compiled_training_matches_eager(data, tmp_path):
    """train.compile=true runs the same math through torch.compile (inductor on the CPU)."""
    shards, tok, _ = data
    losses = {}
    for compiled in (False, True):
        run = tmp_path / f"compile_{compiled}"
        train(make_cfg(tok, max_steps=4, compile=compiled), shards, tok, run)
        losses[compiled] = [r["loss"] for r in read_metrics(run)]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
