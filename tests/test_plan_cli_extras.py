"""`lmforge plan` reports what training would do: the tiny recipe's real vocabulary and size, an
MFU from a CPU run's throughput, and a warning when a sweep's fit cannot be trusted."""

from __future__ import annotations

import json
import math

from lmforge.cli import main
from lmforge.config import load_config, to_yaml
from lmforge.plan import chinchilla
from lmforge.plan.sweep_report import fit_points, summary_lines


def test_plan_config_tiny_reports_the_fitted_vocabulary(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/tiny here: the recipe's tokenizer.vocab_size decides
    assert main(["plan", "--config", "tiny", "--json"]) == 0
    shape = json.loads(capsys.readouterr().out)["shape"]
    assert shape["vocab_size"] == 2048 and round(shape["params"] / 1e4) == 216  # 2.16M, not 4,096 / 2.56M


def test_plan_counts_the_recipes_optimizer_state(capsys, tmp_path, monkeypatch):
    """The tiny recipe trains with Muon: its plan counts one buffer for the block matrices, and
    --optimizer adamw (Adam's two) asks for more memory; the text names the optimizer."""
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--config", "tiny", "--json"]) == 0
    muon = json.loads(capsys.readouterr().out)["memory"]["per_gpu"]
    assert main(["plan", "--config", "tiny", "--optimizer", "adamw", "--json"]) == 0
    adamw = json.loads(capsys.readouterr().out)["memory"]["per_gpu"]
    assert (muon["optimizer_kind"], adamw["optimizer_kind"]) == ("muon", "adamw")
    assert adamw["optimizer"] > muon["optimizer"] and adamw["weights"] == muon["weights"]
    assert main(["plan", "--config", "tiny"]) == 0
    assert "Muon (block matrices) + AdamW" in capsys.readouterr().out


def test_mfu_from_a_cpu_run_uses_its_throughput(capsys, tmp_path):
    run = tmp_path / "cpu-run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(load_config("tiny", ["train.device=cpu"])))
    rows = [{"kind": "train", "step": s, "loss": 5.0, "tokens_per_s": 20_000.0 + s} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["plan", "--params", "70B", "--mfu-from", str(run), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)["assumptions"]
    assert 0 < a["mfu"] <= 1 and "median tokens/s" in a["mfu_source"] and "cpu-run" in a["mfu_source"]


def points(budgets, sizes_per_budget):
    """Grid points whose loss is Chinchilla's eq. 10 (a smooth landscape with a known optimum)."""
    out = []
    for c in budgets:
        for n in sizes_per_budget(c):
            d = c / (6 * n)
            loss = chinchilla.E + chinchilla.A / n**chinchilla.ALPHA + chinchilla.B / d**chinchilla.BETA
            out.append({"budget": c, "params": n, "tokens": d, "loss": loss})
    return out


def test_a_grid_around_the_optimum_fits_without_warnings():
    def around(c):
        n_opt = chinchilla.size(compute=c).params
        return [n_opt * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]

    fits = fit_points(points([1e18, 1e19, 1e20, 1e21], around))
    assert fits["warnings"] == []
    assert 0.4 < fits["approach2"]["a"] < 0.6
    assert not any(line.startswith("warning") for line in summary_lines(fits))


def test_budgets_too_small_for_the_sizes_warn_that_the_fit_is_meaningless():
    # every size far above the optimum, budgets 2x apart: the minimum sits at the smallest size
    fits = fit_points(points([1e11, 2e11], lambda c: [1e6, 2e6, 4e6, 8e6]))
    lines = [line for line in summary_lines(fits) if line.startswith("warning")]
    assert any("edge of the sampled sizes" in line for line in lines)
    assert any("span only 2.0x" in line for line in lines)
    assert lines[-1].startswith("warning: the fit is not meaningful")
    assert math.isfinite(fits["approach2"]["a"])
