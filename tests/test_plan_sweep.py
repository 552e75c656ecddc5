"""`lmforge plan sweep` end to end on a minute grid: real training, fits written, and resumable."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.plan import sweep

# 1-layer models, 32-token windows, 4 sequences per step: each grid point trains in about a second.
TINY = [
    "tokenizer.vocab_size=300",
    "model.block_size=32",
    "train.batch_size=4",
    "train.eval_tokens=256",
    "data.workers=1",
    "data.val_fraction=0.1",
]
BUDGETS = (1.5e9, 3e9)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 40 documents (~300 KB) of the embedded demo corpus."""
    src = resources.files("lmforge") / "corpus" / "demo.jsonl.gz"
    with gzip.open(src.open("rb"), "rt", encoding="utf-8") as f:
        lines = [line for _, line in zip(range(40), f)]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sweep_trains_fits_and_resumes(tmp_path, corpus):
    out = tmp_path / "sweep"
    overrides = TINY + [f"data.corpus={corpus}"]
    fits = sweep.run_sweep(out, BUDGETS, 3, overrides, log=lambda s: None)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert all(r["loss"] > 0 and r["tokens"] > 0 for r in rows)
    assert {"approach2", "approach3"} <= set(fits) and (out / "isoflop.png").stat().st_size > 1000
    assert json.loads((out / "fit.json").read_text())["points"] == 6
    assert "Grid points" in (out / "sweep.md").read_text()

    # Run again: nothing is retrained (no checkpoint is rewritten, no result appended).
    ckpts = {p: p.stat().st_mtime_ns for p in out.glob("points/*/checkpoints/*/COMPLETE")}
    assert len(ckpts) == 6
    sweep.run_sweep(out, BUDGETS, 3, overrides, log=lambda s: None)
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("points/*/checkpoints/*/COMPLETE")} == ckpts

    # A results line lost in a crash: only that point is revisited, from its finished checkpoint.
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # torn last line
    sweep.run_sweep(out, BUDGETS, 3, overrides, log=lambda s: None)
    assert len(sweep.read_results(out)) == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("points/*/checkpoints/*/COMPLETE")} == ckpts

    # Another base config in the same directory is refused, and nothing is touched.
    with pytest.raises(LmforgeError, match="another base configuration .train.lr differ"):
        sweep.run_sweep(out, BUDGETS, 3, overrides + ["train.lr=1e-4"], log=lambda s: None)


def test_profiles_with_the_minimum_at_an_edge_are_extended():
    cfg = sweep.base_config()
    points = sweep.plan_grid(cfg)
    largest = {b: max(p.params for p in points if p.budget == b) for b in {p.budget for p in points}}
    done = {p.id: {"loss": 3.0 if p.params == largest[p.budget] else 4.0} for p in points}
    extra = sweep.extend_edges(cfg, points, done, sweep.SIZES_PER_BUDGET)
    assert len(extra) == len(largest)  # every profile still falling at its largest size grows one size
    assert all(p.params > largest[p.budget] and p.steps >= sweep.MIN_STEPS for p in extra)
    done.update({p.id: {"loss": 4.5} for p in extra})  # now the minimum is inside: no more
    assert sweep.extend_edges(cfg, points + extra, done, sweep.SIZES_PER_BUDGET) == []


def test_budget_too_small_for_any_model():
    with pytest.raises(LmforgeError, match="too small"):
        sweep.plan_grid(sweep.base_config(TINY), budgets=(1e6,), sizes=3)
