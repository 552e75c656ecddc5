"""`lmforge plan`: Chinchilla sizing, cost arithmetic, scaling-law fits, CLI messages, report section."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from lmforge import gpus
from lmforge.config import RunConfig
from lmforge.errors import LmforgeError
from lmforge.plan import add_parser, chinchilla, hardware, report_section, run
from lmforge.plan.fit import (
    fit_isoflop,
    fit_parametric,
    parametric_frontier,
    parametric_loss,
    parametric_optimum,
)

# Hoffmann et al. 2022, Table 3: parameters, FLOPs, tokens.
TABLE3 = [
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
]


def _rel(a: float, b: float) -> float:
    return abs(a / b - 1)


@pytest.mark.parametrize("params,flops,tokens", TABLE3)
def test_chinchilla_table3_reproduced(params, flops, tokens):
    # The 67B row prints rounded tokens (1.5T; its FLOPs imply 1.43T): 7% there, 3% everywhere else.
    tok_tol = 0.07 if params == 67e9 else 0.03
    s = chinchilla.size(params=params)  # from N: FLOPs and tokens
    assert _rel(s.compute, flops) < 0.03 and _rel(s.tokens, tokens) < tok_tol
    s = chinchilla.size(compute=flops)  # from C: parameters and tokens
    assert _rel(s.params, params) < 0.03 and _rel(s.tokens, tokens) < tok_tol
    if params != 67e9:  # from D (not from the 67B row's rounded tokens): parameters and FLOPs
        s = chinchilla.size(tokens=tokens)
        assert _rel(s.params, params) < 0.03 and _rel(s.compute, flops) < 0.03


def test_eq10_loss_and_frontier_position():
    # Eq. 10 with the paper's constants, computed by hand for Chinchilla itself (70B, 1.4T tokens).
    expected = 1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28
    assert chinchilla.chinchilla_loss(70e9, 1.4e12) == pytest.approx(expected)
    assert chinchilla.size(params=70e9, tokens=1.4e12).position in ("compute-optimal", "near the frontier")
    llama = chinchilla.size(params=7e9, tokens=2e12)  # Llama 2 7B: far more tokens than optimal
    assert llama.position == "over-trained" and "over-trained" in llama.warning
    big = chinchilla.size(params=175e9, tokens=300e9)  # GPT-3: far fewer
    assert big.position == "under-trained" and "under-trained" in big.warning
    # Two of three given: the third from C = 6ND, or from a shape's FLOPs per token.
    s = chinchilla.size(params=1e9, compute=6e19)
    assert s.tokens == pytest.approx(1e10) and s.compute_model is None
    s = chinchilla.size(params=1e9, tokens=1e10, flops_per_token=7e9)
    assert s.compute == pytest.approx(6e19) and s.compute_model == pytest.approx(7e19)


def test_cost_arithmetic_and_published_estimates():
    a100 = gpus.get_gpu("A100-40GB")
    c = hardware.estimate_cost(1e21, a100, num_gpus=10, mfu=0.5, pue=1.1, energy_price=100)
    hours = 1e21 / (312e12 * 0.5) / 3600
    assert c["gpu_hours"] == pytest.approx(hours) and c["wall_hours"] == pytest.approx(hours / 10)
    assert (c["rent_low"], c["rent_high"]) == pytest.approx((hours * 1.0, hours * 2.0))
    assert c["energy_mwh"] == pytest.approx(hours * 400 * 1.1 / 1e6)
    assert c["purchase"] == 100_000

    # The docs' side-by-side (README, "How big, how long, how much"): Talebi 2023's
    # estimates under the stated assumptions.
    def flops(n: float, d: float) -> float:
        return 6 * n * d

    ten_b = hardware.estimate_cost(flops(10e9, 750e9), a100, mfu=0.4)
    assert ten_b["rent_low"] <= 150_000 <= ten_b["rent_high"]  # "$150,000"
    hundred_b = hardware.estimate_cost(flops(100e9, 750e9), a100, mfu=0.4)
    assert hundred_b["rent_low"] <= 1_500_000 <= hundred_b["rent_high"]  # "$1,500,000"
    assert hardware.estimate_cost(1e20, a100, num_gpus=1000)["purchase"] == 10_000_000  # "$10,000,000"
    energy = hardware.estimate_cost(flops(100e9, 2e12), a100, mfu=0.4, pue=1.0)["energy_mwh"]
    assert 900 < energy < 1200  # "~1,000 MWh"
    for gpu in gpus.GPUS.values():  # every preset says where its numbers come from
        assert gpu.sources and gpu.peak_flops > 0 and gpu.rent_per_hour[0] <= gpu.rent_per_hour[1]


@pytest.mark.parametrize(
    ("device_name", "preset"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100-80gb"),  # the same 312 TFLOP/s as the 40 GB preset
        ("NVIDIA A100 80GB PCIe", "a100-80gb"),
        ("NVIDIA H100 PCIe", None),  # 756 dense TFLOP/s, not the SXM preset's 989
        ("NVIDIA H100 NVL", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_training_and_plan_read_one_datasheet_table(monkeypatch, device_name, preset):
    # Training's MFU and plan's compute section take a CUDA device's peak from lmforge/gpus.py.
    import torch

    from lmforge.train.metrics import peak_flops

    want = gpus.GPUS[preset].peak_flops if preset else None
    assert gpus.device_gpu(device_name) is (gpus.GPUS[preset] if preset else None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: device_name)
    assert peak_flops(torch.device("cuda")) == want
    assert peak_flops(torch.device("cpu")) is None
    if preset:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        peak, source = hardware.device_peak("cuda")
        assert peak == want and "datasheet" in source


def _synthetic_points(true: dict) -> list[dict]:
    pts = []
    frontier = {**true, **parametric_frontier(true)}
    for compute in (1e18, 3e18, 1e19, 3e19, 1e20, 3e20, 1e21):
        n_opt, _ = parametric_optimum(frontier, compute)
        for factor in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8):
            n = n_opt * factor
            d = compute / (6 * n)
            pts.append(
                {"compute": compute, "params": n, "tokens": d, "loss": float(parametric_loss(true, n, d))}
            )
    return pts


def test_scaling_fits_recover_known_constants():
    true = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. eq. 10
    pts = _synthetic_points(true)
    fit = fit_parametric([p["params"] for p in pts], [p["tokens"] for p in pts], [p["loss"] for p in pts])
    for k, v in true.items():
        assert _rel(fit[k], v) < 0.05, (k, fit[k], v)
    iso = fit_isoflop(pts)  # approach 2's exponents are the law's beta/(alpha+beta), alpha/(alpha+beta)
    assert _rel(iso["a"], 0.28 / 0.62) < 0.05 and _rel(iso["b"], 0.34 / 0.62) < 0.05
    assert all(m["inside"] for m in iso["minima"])


def _plan(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lmforge")
    add_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["plan", *argv]))


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--params", "-7e9"], "--params must be positive"),
        (["--params", "0"], "--params must be positive"),
        (["--tokens", "lots"], "--tokens must be a number"),
        (["--params", "7e9", "--gpu", "tpu-v9"], "known GPUs: a100-40gb, a100-80gb, h100, h200"),
        (["--params", "7e9", "--mfu", "1.5"], "MFU must be in (0, 1]"),
        (["--params", "7e9", "--mfu", "-0.1"], "MFU must be in (0, 1]"),
        (["--params", "1e9", "--tokens", "1e10", "--compute", "1e20"], "at most two"),
        (["sweep", "--budgets", "1e8", "--dry-run"], "too small"),
    ],
)
def test_cli_bad_input_is_one_clear_message(argv, fragment):
    with pytest.raises(LmforgeError) as err:
        _plan(*argv)
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_cli_table_and_json(capsys):
    assert (
        _plan("--params", "7B", "--tokens", "2T", "--gpu", "h100", "--num-gpus", "512", "--mfu", "0.4") == 0
    )
    text = capsys.readouterr().out
    for fragment in ("training tokens D", "GPU-hours", "rent", "energy", "Memory per GPU", "over-trained"):
        assert fragment in text
    assert _plan("--compute", "1e23", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert _rel(out["sizing"]["params"] * out["sizing"]["tokens"] * 6, 1e23) < 1e-9
    assert out["cost"]["gpu_hours"] > 0 and out["memory"]["per_gpu"]["total"] > 0


def test_mfu_measured_by_a_run(tmp_path, capsys):
    rows = [
        {"kind": "train", "step": s, "loss": 3.0, "mfu": m} for s, m in ((10, 0.30), (20, 0.36), (30, 0.38))
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _plan("--params", "1B", "--mfu-from", str(tmp_path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["assumptions"]["mfu"] == pytest.approx(0.36)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 3.0}) + "\n")
    with pytest.raises(LmforgeError, match="no logged MFU"):
        _plan("--params", "1B", "--mfu-from", str(tmp_path))


def test_report_section_states_n_d_c_position_and_mfu():
    cfg = RunConfig()
    tokens = 20 * cfg.model.num_params()  # about compute-optimal
    text = report_section(cfg, {"tokens": tokens, "tokens_per_s": 1000.0, "mfu": 0.123})
    assert f"{cfg.model.num_params():,}" in text and f"{tokens:,}" in text
    assert "FLOPs" in text and "compute-optimal" in text and "12.3%" in text
    seq = cfg.model.block_size
    text = report_section(cfg, {"tokens": tokens, "tokens_per_s": 1e4, "peak_flops": 1e12})
    assert f"{100 * 1e4 * cfg.model.flops_per_token(seq) / 1e12:.1f}%" in text
    text = report_section(cfg, {"tokens": 1000 * cfg.model.num_params()})
    assert "over-trained" in text and not math.isnan(len(text))
