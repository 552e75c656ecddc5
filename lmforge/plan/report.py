"""The "Compute" section of a training run's report.md: N, D, C, the frontier, and measured MFU."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lmforge.plan import chinchilla
from lmforge.plan.hardware import device_peak


def run_sizing(cfg: Any, result: dict) -> dict:
    """N, D, C and frontier position of a finished run (cfg: RunConfig, result: TrainResult-like)."""
    res = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
    seq_len = cfg.train.seq_len or cfg.model.block_size
    fpt = cfg.model.flops_per_token(seq_len)
    n = cfg.model.num_params()
    d = res.get("tokens") or 0
    out = {"params": n, "tokens": d, "flops_per_token": fpt, "compute": fpt * d, "mfu": None, "peak": None}
    if d > 0:
        out["sizing"] = chinchilla.size(params=n, tokens=d)
    mfu, source = res.get("mfu"), "logged by the trainer"
    if mfu is None and res.get("tokens_per_s"):
        peak, source = (
            (res["peak_flops"], "given peak") if res.get("peak_flops") else device_peak(_device(cfg))
        )
        mfu = res["tokens_per_s"] * fpt / peak
        out["peak"] = peak
    if isinstance(mfu, (int, float)) and math.isfinite(mfu):
        out["mfu"], out["mfu_source"] = mfu, source
    return out


def report_section(cfg: Any, result: dict) -> str:
    """Markdown for report.md: N, D, C, position against the Chinchilla frontier, measured MFU."""
    s = run_sizing(cfg, result)
    rows = [("parameters N", f"{s['params']:,} ({_si(s['params'])})")]
    sz = s.get("sizing")
    if sz is None:
        rows.append(("training tokens D", "none recorded"))
    else:
        rows += [
            ("training tokens D", f"{s['tokens']:,} ({sz.tokens_per_param:,.1f} tokens per parameter)"),
            (
                "training compute C",
                (
                    f"{s['compute']:.3g} FLOPs ({_si(s['flops_per_token'], 'G')} FLOPs per token incl. "
                    f"attention); 6ND = {sz.compute:.3g}"
                ),
            ),
            (
                "compute-optimal for this C",
                (
                    f"{_si(sz.optimal_params)} parameters on {_si(sz.optimal_tokens)} tokens "
                    f"({sz.optimal_tokens_per_param:.1f} per parameter)"
                ),
            ),
            ("position", f"{sz.position} (N = {sz.size_ratio:.2g} x N_opt)"),
        ]
    if s["mfu"] is not None:
        peak = f" of {s['peak'] / 1e9:,.1f} GFLOP/s" if s.get("peak") else ""
        rows.append(("MFU", f"{100 * s['mfu']:.1f}%{peak} ({s['mfu_source']})"))
    else:
        rows.append(("MFU", "n/a (no throughput recorded)"))
    text = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    note = (
        "\n\nThe frontier is Chinchilla's (Hoffmann et al. 2022, Table 3: about 20 tokens per parameter); "
        "`lmforge plan sweep` fits your own."
    )
    if sz is not None and sz.warning:
        note += f"\n\n**Note:** {sz.warning}"
    return text + note


def _device(cfg: Any) -> str:
    device = getattr(cfg.train, "device", "auto")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _si(x: float, billion: str = "B") -> str:
    """12_345_678 -> '12.3M'; billion='G' for FLOPs."""
    for unit, scale in (("T", 1e12), (billion, 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
