"""Distributed training on CPU (gloo), several processes per test launched with torchrun.

Every layout (DDP, FSDP2, tensor parallel with and without sequence parallelism, pipeline
parallel with GPipe and 1F1B, a 2x2x2 (pp, dp, tp) mesh) trains the same tiny model from the
same weights on the same global batch as one process does, and its losses, gradient norms,
validation loss and final weights match within 1e-5 (fp32). Checkpoints move between layouts;
a killed run resumes; bad input ends every rank with one message. One torchrun launch runs a
whole group of layouts, to pay the start-up once; processes use one thread each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from itertools import islice
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.config import RunConfig, from_dict
from lmforge.data.config import DataConfig
from lmforge.data.documents import embedded_corpus
from lmforge.data.shards import encode_corpus
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import latest_checkpoint, load_model
from lmforge.train.loop import train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 420  # generous for 8 processes on 2 busy cores; a hang fails instead of blocking CI

LLAMA = {"activation": "swiglu", "norm": "rmsnorm", "pos": "rope", "bias": False, "n_kv_head": 2}  # GQA
GPT2 = {"activation": "gelu", "norm": "layernorm", "pos": "learned", "bias": True}
UNTIED = {"tie_embeddings": False}  # pipeline stages cannot share the embedding with the output layer

# name: (model overrides, train overrides, parallel section)
TWO = {
    "ddp": ({}, {}, {"dp": 2, "dp_mode": "ddp"}),
    "fsdp": ({}, {"grad_accum": 2}, {"dp": 2}),
    "fsdp_zero2_ac": (GPT2, {}, {"dp": 2, "reshard_after_forward": False, "activation_checkpoint": "full"}),
    "tp": ({}, {}, {"tp": 2}),  # vocab-parallel tied embedding, GQA heads split
    "tp_qknorm": ({"qk_norm": True}, {}, {"tp": 2}),  # q/k norm gains' gradients summed over tp
    "tp_sp": (GPT2, {}, {"tp": 2, "sequence_parallel": True}),
    "pp_gpipe": (UNTIED, {}, {"pp": 2, "pp_schedule": "gpipe"}),
    "pp_1f1b": (UNTIED, {"grad_accum": 2}, {"pp": 2, "pp_schedule": "1f1b", "pp_microbatches": 4}),
    "encoder_pp": ({"kind": "encoder", "pos": "alibi", **UNTIED}, {}, {"pp": 2}),
    "encdec_tp": ({"kind": "encoder-decoder"}, {}, {"tp": 2}),
}
# Not bit-for-bit comparable with one process, so checked loosely: bf16 (FSDP's mixed precision:
# bf16 compute, fp32 reduction and master weights), and an objective whose masks each dp rank draws
# itself (span corruption) with the decoder blocks' cross-attention inside FSDP's root unit.
TWO_LOOSE = {
    "fsdp_bf16": ({}, {"precision": "bf16"}, {"dp": 2}),
    "encdec_fsdp": ({"kind": "encoder-decoder"}, {}, {"dp": 2}),
}
FOUR = {
    "fsdp_tp": ({"qk_norm": True}, {"grad_accum": 2}, {"dp": 2, "tp": 2}),
    "pp_ddp": (UNTIED, {}, {"pp": 2, "dp": 2, "dp_mode": "ddp", "pp_schedule": "gpipe"}),
}
EIGHT = {
    "3d": (
        UNTIED,
        {"grad_accum": 2},
        {"pp": 2, "dp": 2, "tp": 2, "sequence_parallel": True, "activation_checkpoint": "selective"},
    ),
}

WORKER = textwrap.dedent("""
    import json, sys
    from lmforge.config import RunConfig, from_dict
    from lmforge.tokenizer import Tokenizer
    from lmforge.train.loop import train
    shards, tok_path, jobs = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
    tok = Tokenizer.load(tok_path)
    for run_dir, cfg in jobs:
        train(from_dict(RunConfig, cfg), shards, tok, run_dir)
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(shard_dir, tokenizer, tokenizer.json) from a throwaway 300-token BPE on 80 documents."""
    root = tmp_path_factory.mktemp("dist_data")
    docs = list(islice(embedded_corpus(), 80))
    tok = train_tokenizer([d["text"] for d in docs], TokenizerConfig(vocab_size=300))
    tok.save(root / "tokenizer.json")
    encode_corpus(docs, tok, root / "shards", DataConfig(workers=1, val_fraction=0.1))
    assert tok.vocab_size % 2 == 0  # the tensor-parallel vocabulary split needs it
    return root / "shards", tok, root / "tokenizer.json"


def cfg_dict(model=None, train_=None, parallel=None) -> dict:
    m = {
        "vocab_size": 300,
        "n_layer": 2,
        "n_embd": 32,
        "n_head": 4,
        "block_size": 32,
        **LLAMA,
        **(model or {}),
    }
    t = {
        "max_steps": 4,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_steps": 2,
        "decay": "constant",
        "grad_clip": 0.5,
        "log_every": 1,
        "eval_every": 0,
        "eval_tokens": 512,
        "ckpt_every": 0,
        "threads": 1,
        "tensorboard": False,
        "precision": "fp32",
        "device": "cpu",
        "progress": "lines",
        **(train_ or {}),
    }
    return {"model": m, "train": t, "parallel": parallel or {}}


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        *args,
    ]


def launch_jobs(data, tmp: Path, nproc: int, jobs: dict[str, dict]) -> dict[str, Path]:
    """Run train() for every job in one torchrun launch of `nproc` processes; their run dirs."""
    shards, _, tok_path = data
    (tmp / "worker.py").write_text(WORKER)
    runs = {name: tmp / name for name in jobs}
    (tmp / "jobs.json").write_text(json.dumps([[str(runs[n]), c] for n, c in jobs.items()]))
    proc = subprocess.run(
        torchrun(nproc, str(tmp / "worker.py"), str(shards), str(tok_path), str(tmp / "jobs.json")),
        capture_output=True,
        text=True,
        env=env(),
        timeout=LAUNCH_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return runs


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


_REFERENCES: dict[str, Path] = {}


def reference(data, tmp_path_factory, cfg: dict) -> Path:
    """The single-process run of `cfg` (no parallel section), computed once per configuration."""
    plain = {**cfg, "parallel": {}}
    key = json.dumps(plain, sort_keys=True)
    if key not in _REFERENCES:
        shards, tok, _ = data
        run = tmp_path_factory.mktemp("reference")
        train(from_dict(RunConfig, plain), shards, tok, run)
        _REFERENCES[key] = run
    return _REFERENCES[key]


def assert_same_run(run: Path, ref: Path, rel: float = 1e-5) -> None:
    got, want = read_metrics(run), read_metrics(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=rel), (g["step"], g["loss"], w["loss"])
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=rel), (
            g["step"],
            g["grad_norm"],
            w["grad_norm"],
        )
        assert g["tokens"] == w["tokens"]
    got_val = {v["step"]: v["val_loss"] for v in read_metrics(run, "val")}  # a resumed run also has its
    want_val = {v["step"]: v["val_loss"] for v in read_metrics(ref, "val")}  # first part's last one
    assert want_val and set(want_val) <= set(got_val)
    for step, loss in want_val.items():
        assert got_val[step] == pytest.approx(loss, rel=rel)
    # The final (sharded) checkpoint holds the same weights. Adam's normalised steps turn the
    # rounding noise of near-zero gradients (e.g. the key bias, which softmax ignores) into
    # differences of up to ~lr, so the weights are compared at that scale.
    a, _ = load_model(ref)
    b, _ = load_model(run)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-4, msg=name)


def run_group(group: dict, data, tmp_path_factory, nproc: int, extra: dict | None = None) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp(f"launch{nproc}")
    jobs = {name: cfg_dict(m, t, p) for name, (m, t, p) in group.items()}
    return launch_jobs(data, tmp, nproc, {**jobs, **(extra or {})})


# ---- parity: every layout equals one process


@pytest.fixture(scope="module")
def two(data, tmp_path_factory):
    return run_group({**TWO, **TWO_LOOSE}, data, tmp_path_factory, 2)


@pytest.mark.parametrize("name", list(TWO))
def test_two_process_layouts_match_one_process(name, two, data, tmp_path_factory):
    model, train_, parallel = TWO[name]
    run = two[name]
    assert_same_run(run, reference(data, tmp_path_factory, cfg_dict(model, train_, parallel)))
    ckpt = latest_checkpoint(run)
    assert (ckpt / "dcp" / ".metadata").is_file() and len(list((ckpt / "dcp").glob("__*_0.distcp"))) == 2
    state = json.loads((ckpt / "state.json").read_text())
    assert (
        len(state["ranks"]) == 2
        and state["layout"]["dp"] * state["layout"]["tp"] * state["layout"]["pp"] == 2
    )
    # rank 0 alone wrote the run directory's files
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "tokenizer.json",
    ]


def with_steps(cfg: dict, steps: int) -> dict:
    return {**cfg, "train": {**cfg["train"], "max_steps": steps}}


@pytest.mark.parametrize("name", list(TWO_LOOSE))
def test_two_process_bf16_and_rank_drawn_masks_train_alike(name, two, data, tmp_path_factory):
    run, ref = two[name], reference(data, tmp_path_factory, cfg_dict(*TWO_LOOSE[name]))
    got, want = read_metrics(run), read_metrics(ref)
    assert [g["loss"] for g in got] == pytest.approx([w["loss"] for w in want], rel=2e-2)
    load_model(run)  # the sharded checkpoint loads into one process


@pytest.fixture(scope="module")
def four(data, tmp_path_factory):
    """The four-process layouts, plus a dp=2,tp=2 run resuming a single-process checkpoint."""
    shards, tok, _ = data
    tmp = tmp_path_factory.mktemp("launch4")
    base = cfg_dict(*FOUR["fsdp_tp"])
    train(
        from_dict(RunConfig, {**base, "parallel": {}}), shards, tok, tmp / "resume_from_single"
    )  # 4 steps, 1 process
    jobs = {name: cfg_dict(*spec) for name, spec in FOUR.items()}
    jobs["resume_from_single"] = with_steps(base, 8)  # ... then 4 more on dp=2, tp=2
    return launch_jobs(data, tmp, 4, jobs)


@pytest.mark.parametrize("name", list(FOUR))
def test_four_process_layouts_match_one_process(name, four, data, tmp_path_factory):
    model, train_, parallel = FOUR[name]
    assert_same_run(four[name], reference(data, tmp_path_factory, cfg_dict(model, train_, parallel)))


# ---- checkpoints move between layouts


def test_single_process_checkpoint_resumes_on_dp2_tp2(four, data, tmp_path_factory):
    run = four["resume_from_single"]
    assert (latest_checkpoint(run) / "dcp").is_dir() and latest_checkpoint(run).name == "step_000008"
    assert_same_run(run, reference(data, tmp_path_factory, with_steps(cfg_dict(*FOUR["fsdp_tp"]), 8)))


def test_dp2_tp2_checkpoint_resumes_on_one_process(four, data, tmp_path_factory, tmp_path):
    shards, tok, _ = data
    run = tmp_path / "run"
    shutil.copytree(four["fsdp_tp"], run)  # 4 steps on dp=2, tp=2 (FSDP2 + DTensor shards)
    longer = with_steps(cfg_dict(*FOUR["fsdp_tp"]), 8)
    train(from_dict(RunConfig, {**longer, "parallel": {}}), shards, tok, run)  # ... then 4 on one process
    assert (latest_checkpoint(run) / "model.safetensors").is_file()  # one process writes the plain format
    assert_same_run(run, reference(data, tmp_path_factory, longer))


def test_3d_mesh_2x2x2_matches_one_process(data, tmp_path_factory):
    runs = run_group(EIGHT, data, tmp_path_factory, 8)
    model, train_, parallel = EIGHT["3d"]
    assert_same_run(runs["3d"], reference(data, tmp_path_factory, cfg_dict(model, train_, parallel)))
    assert len(list((latest_checkpoint(runs["3d"]) / "dcp").glob("__*_0.distcp"))) == 8


# ---- the held-out set does not depend on the layout or the batch (issue 12)

# lr=0: every run keeps the initial weights, so only the validation set could make them differ.
# 7 windows in batches that leave a rank with padding only (dp), a half-padded pipeline
# micro-batch (pp) and an odd batch (tp).
VAL_LAYOUTS = {
    "val_fsdp": ({}, {"batch_size": 2}, {"dp": 2}),
    "val_pp": (UNTIED, {"batch_size": 4}, {"pp": 2, "pp_microbatches": 2, "pp_schedule": "gpipe"}),
    "val_tp": ({}, {"batch_size": 3}, {"tp": 2}),
}


def val_cfg(model, train_, parallel) -> dict:
    return cfg_dict(
        model, {"max_steps": 1, "lr": 0.0, "warmup_steps": 0, "eval_tokens": 7 * 32 - 5, **train_}, parallel
    )


def test_validation_loss_is_the_same_on_any_layout_and_batch(data, tmp_path_factory):
    runs = launch_jobs(
        data,
        tmp_path_factory.mktemp("val_layouts"),
        2,
        {name: val_cfg(*spec) for name, spec in VAL_LAYOUTS.items()},
    )
    for name, (model, _, _) in VAL_LAYOUTS.items():
        want = read_metrics(reference(data, tmp_path_factory, val_cfg(model, {"batch_size": 5}, {})), "val")
        got = read_metrics(runs[name], "val")
        assert len(got) == len(want) == 1
        assert got[0]["val_loss"] == pytest.approx(want[0]["val_loss"], rel=1e-6), name


# ---- through the CLI: `torchrun -m lmforge train`


def cli_recipe(data, tmp: Path, name: str, cfg: dict) -> Path:
    """A recipe file for `lmforge train` whose run directory already has the test's tokenizer
    and points at the test's shards, so every rank only reads them."""
    shards, _, tok_path = data
    run_dir = tmp / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tok_path, run_dir / "tokenizer.json")
    recipe = {**cfg, "name": name, "out_dir": str(tmp / "runs"), "data": {"shards": str(shards)}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def cli(nproc: int, recipe: Path, *overrides: str) -> list[str]:
    return torchrun(nproc, "-m", "lmforge", "train", "--config", str(recipe), *overrides)


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def test_killed_two_process_run_resumes_and_matches(data, tmp_path):
    # Dropout on: the resumed run must also restore every rank's own RNG state to match.
    # Long enough that the run is still going when this (busy, 2-core) machine gets round to killing it.
    steps = 40
    cfg = cfg_dict(
        {"resid_dropout": 0.1, "embd_dropout": 0.1},
        {"max_steps": steps, "ckpt_every": 5, "eval_every": 50, "keep_last": 2, "log_every": 1},
        {"dp": 2},
    )
    ref = subprocess.Popen(
        cli(2, cli_recipe(data, tmp_path, "ref", cfg)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    recipe = cli_recipe(data, tmp_path, "killed", cfg)
    run = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        cli(2, recipe),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        start_new_session=True,
    )
    try:
        while not (run / "checkpoints" / "step_000010" / "COMPLETE").exists():
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()[-3000:]}"
            time.sleep(0.005)
    finally:  # SIGKILL torchrun and both ranks (each in its own session), mid-step or mid-save
        for pid in [proc.pid, *child_pids(proc.pid)]:
            os.killpg(pid, signal.SIGKILL)
        proc.communicate()
    killed_at = int(latest_checkpoint(run).name.split("_")[1])
    assert killed_at < steps, "the run finished before it was killed"

    resumed = subprocess.run(
        cli(2, recipe), capture_output=True, text=True, env=env(), timeout=LAUNCH_TIMEOUT_S, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / f'step_{killed_at:06d}'}" in resumed.stdout
    out, err = ref.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert ref.returncode == 0, err[-3000:]
    assert out.count(f"step {steps}/{steps} |") == 1  # rank 0 alone prints

    want, got = read_metrics(tmp_path / "runs" / "ref"), read_metrics(run)
    assert [r["step"] for r in got] == list(range(1, steps + 1))  # no step lost or repeated
    assert [r["loss"] for r in got] == [r["loss"] for r in want]  # the same floats
    assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in want]
    assert [v["val_loss"] for v in read_metrics(run, "val")] == [
        v["val_loss"] for v in read_metrics(tmp_path / "runs" / "ref", "val")
    ]


def test_a_signal_to_one_rank_stops_all_at_the_same_step_with_a_checkpoint(data, tmp_path):
    recipe = cli_recipe(data, tmp_path, "sig", cfg_dict(train_={"max_steps": 100_000}))
    proc = subprocess.Popen(
        cli(2, recipe, "parallel.dp=2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
    )
    metrics = tmp_path / "runs" / "sig" / "metrics.jsonl"
    try:
        while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.01)
        os.kill(max(child_pids(proc.pid)), signal.SIGTERM)  # one rank only, as a node's scheduler might
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "interrupted by SIGTERM at step" in err
    ckpt = latest_checkpoint(tmp_path / "runs" / "sig")
    state = json.loads((ckpt / "state.json").read_text())
    assert 3 <= state["step"] < 100_000 and len(list((ckpt / "dcp").glob("__*_0.distcp"))) == 2
    assert read_metrics(tmp_path / "runs" / "sig")[-1]["step"] == state["step"]
    assert {r["loader"]["position"] for r in state["ranks"]} == {state["ranks"][0]["loader"]["position"]}


def run_failing(cmd: list[str]) -> str:
    """Run a launch that must fail; every rank must end (no hang) and the error be printed once."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=180, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert out.count("lmforge: error:") == 1, out[-3000:]
    assert "exitcode  : 0" not in out  # torchrun's summary: no rank ended as if all were well
    return out[out.index("lmforge: error:") :].splitlines()[0]


def test_mesh_larger_than_the_world_fails_on_every_rank_with_one_message(data, tmp_path):
    recipe = cli_recipe(data, tmp_path, "bad", cfg_dict())
    msg = run_failing(cli(2, recipe, "parallel.dp=2", "parallel.tp=2"))
    assert "pp * dp * tp = 1 * 2 * 2 = 4 processes, but 2 were started" in msg
    assert not (tmp_path / "runs" / "bad" / "config.yaml").exists()  # nothing written


def test_checkpoint_of_another_model_fails_on_every_rank_with_one_message(data, tmp_path):
    shards, tok, _ = data
    recipe = cli_recipe(data, tmp_path, "other", cfg_dict())
    train(
        from_dict(RunConfig, {**cfg_dict({"n_embd": 64}), "train": {**cfg_dict()["train"], "max_steps": 1}}),
        shards,
        tok,
        tmp_path / "runs" / "other",
    )
    msg = run_failing(cli(2, recipe, "parallel.dp=2"))
    assert "is of another model: model.n_embd=64 (this run: 32)" in msg
    assert latest_checkpoint(tmp_path / "runs" / "other").name == "step_000001"  # left as it was
