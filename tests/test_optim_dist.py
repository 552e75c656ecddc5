"""Muon under torchrun (CPU, gloo): DDP, FSDP2, tensor and pipeline parallel runs with
train.optimizer=muon equal one process, and Muon+AdamW checkpoints move between layouts.

Muon orthogonalises each whole matrix: a sharded run gathers the update per matrix and keeps its
slice (lmforge/train/muon.py), so it must take the same steps as one process (fp32, within 1e-5).
Helpers and the data come from test_parallel_dist (one torchrun launch runs every layout).
"""

from __future__ import annotations

import shutil

import pytest
from test_parallel_dist import UNTIED, assert_same_run, cfg_dict, data, launch_jobs, reference, with_steps

from lmforge.config import RunConfig, from_dict
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.train.loop import train

pytestmark = pytest.mark.slow
__all__ = ["data"]  # the shared fixture

MUON = {"optimizer": "muon", "muon_lr": 0.02, "muon_weight_decay": 0.1}
LAYOUTS = {
    "ddp": ({}, MUON, {"dp": 2, "dp_mode": "ddp"}),
    "fsdp": ({}, {**MUON, "grad_accum": 2}, {"dp": 2}),
    "tp": ({}, MUON, {"tp": 2}),  # row- and column-sharded matrices
    "pp": (UNTIED, MUON, {"pp": 2, "pp_schedule": "1f1b"}),
}


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Every layout, plus an FSDP run resuming a single-process Muon checkpoint."""
    shards, tok, _ = data
    tmp = tmp_path_factory.mktemp("muon2")
    base = cfg_dict(*LAYOUTS["fsdp"])
    train(from_dict(RunConfig, {**base, "parallel": {}}), shards, tok, tmp / "resume_from_single")  # 4 steps
    jobs = {name: cfg_dict(*spec) for name, spec in LAYOUTS.items()}
    jobs["resume_from_single"] = with_steps(base, 8)  # ... then 4 more on dp=2
    return launch_jobs(data, tmp, 2, jobs)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_muon_layouts_match_one_process(name, runs, data, tmp_path_factory):
    assert_same_run(runs[name], reference(data, tmp_path_factory, cfg_dict(*LAYOUTS[name])))


def test_single_process_muon_checkpoint_resumes_under_fsdp(runs, data, tmp_path_factory):
    run = runs["resume_from_single"]
    assert latest_checkpoint(run).name == "step_000008" and (latest_checkpoint(run) / "dcp").is_dir()
    assert_same_run(run, reference(data, tmp_path_factory, with_steps(cfg_dict(*LAYOUTS["fsdp"]), 8)))


def test_fsdp_muon_checkpoint_resumes_on_one_process(runs, data, tmp_path_factory, tmp_path):
    shards, tok, _ = data
    run = tmp_path / "run"
    shutil.copytree(runs["fsdp"], run)  # 4 steps on dp=2: momentum buffers saved as shards
    longer = with_steps(cfg_dict(*LAYOUTS["fsdp"]), 8)
    train(from_dict(RunConfig, {**longer, "parallel": {}}), shards, tok, run)  # ... then 4 on one process
    assert (latest_checkpoint(run) / "model.safetensors").is_file()
    assert_same_run(run, reference(data, tmp_path_factory, longer))
