"""What a finished sweep writes: fit.json, isoflop.png and sweep.md (the fits, read by a person)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lmforge.atomic import write_atomic, write_text_atomic
from lmforge.errors import LmforgeError
from lmforge.plan import chinchilla
from lmforge.plan.fit import fit_isoflop, fit_parametric, parametric_optimum


def fit_points(rows: list[dict]) -> dict:
    """Approach 2 and approach 3 fits of finished grid points (dicts with budget, params, tokens, loss)."""
    pts = [
        {"compute": r["budget"], "params": r["params"], "tokens": r["tokens"], "loss": r["loss"]}
        for r in rows
    ]
    out: dict = {"points": len(pts)}
    try:
        out["approach2"] = fit_isoflop(pts)
    except LmforgeError as e:
        out["approach2"] = {"error": str(e)}
    try:
        fit3 = fit_parametric(
            [p["params"] for p in pts], [p["tokens"] for p in pts], [p["loss"] for p in pts]
        )
        budgets = sorted({p["compute"] for p in pts})
        if fit3["a"] is not None:
            optima = {c: parametric_optimum(fit3, c) for c in budgets}
            fit3["tokens_per_param"] = {f"{c:.3g}": d / n for c, (n, d) in optima.items()}
        out["approach3"] = fit3
    except LmforgeError as e:
        out["approach3"] = {"error": str(e)}
    a2 = out["approach2"]
    if "minima" in a2:
        a2["tokens_per_param"] = {
            f"{m['compute']:.3g}": m["tokens"] / m["params"] for m in a2["minima"] if m["params"] is not None
        }
    out["warnings"] = fit_warnings(out)
    return out


# Published compute-optimal exponents a (N_opt ∝ C^a): Kaplan et al. 2020 0.73, Hoffmann et al.
# 2022 0.46-0.50; outside a generous band around them, a fit says more about the grid than the model.
PLAUSIBLE_A = (0.25, 0.85)
MIN_BUDGET_SPAN = 4.0  # largest / smallest budget; closer budgets cannot separate the exponents


def fit_warnings(fits: dict) -> list[str]:
    """Why a fit should not be trusted: minima at the grid's edge, budgets too close together, an
    exponent far from every published one (as too-small budgets give)."""
    a2 = fits.get("approach2", {})
    if "minima" not in a2:
        return []
    warnings = []
    minima = a2["minima"]
    edge = [m for m in minima if not m["inside"]]
    if edge:
        warnings.append(
            f"{len(edge)} of {len(minima)} budgets have their lowest loss at the edge of the sampled "
            "sizes (or no minimum), so their optimum is extrapolated"
        )
    budgets = [m["compute"] for m in minima]
    if len(budgets) >= 2 and max(budgets) / min(budgets) < MIN_BUDGET_SPAN:
        warnings.append(
            f"the budgets span only {max(budgets) / min(budgets):.1f}x (at least "
            f"{MIN_BUDGET_SPAN:.0f}x is needed to tell the exponents apart)"
        )
    lo, hi = PLAUSIBLE_A
    if not lo <= a2["a"] <= hi:
        warnings.append(
            f"N_opt ∝ C^{a2['a']:.3f} is far from the published 0.46-0.73 (Hoffmann et al. 2022, "
            "Kaplan et al. 2020)"
        )
    if warnings:
        warnings.append(
            "the fit is not meaningful: use larger budgets (--budgets) spread over at least "
            f"{MIN_BUDGET_SPAN:.0f}x, so every budget's best size lies inside its grid"
        )
    return warnings


def write_outputs(out: Path, rows: list[dict], log=print) -> dict:
    fits = fit_points(rows)
    _write_json(out / "fit.json", fits)
    plot_isoflop(out / "isoflop.png", rows, fits)
    (out / "sweep.md").write_text(summary_markdown(rows, fits), encoding="utf-8")
    for line in summary_lines(fits):
        log(line)
    log(f"fit: {out / 'fit.json'}; plot: {out / 'isoflop.png'}; summary: {out / 'sweep.md'}")
    return fits


def summary_lines(fits: dict) -> list[str]:
    lines = []
    a2, a3 = fits["approach2"], fits["approach3"]
    if "error" in a2:
        lines.append(f"approach 2 (IsoFLOP minima): {a2['error']}")
    else:
        tpp = list(a2["tokens_per_param"].values())
        lines.append(
            f"approach 2 (IsoFLOP minima over {a2['budgets_used']} budgets): N_opt ∝ C^{a2['a']:.3f}, "
            f"D_opt ∝ C^{a2['b']:.3f}; tokens per parameter at the minima "
            + ", ".join(f"{t:.1f}" for t in tpp)
        )
    if "error" in a3:
        lines.append(f"approach 3 (parametric L(N, D)): {a3['error']}")
    else:
        lines.append(
            f"approach 3: L = {a3['E']:.3f} + {a3['A']:.4g}/N^{a3['alpha']:.3f} + "
            f"{a3['B']:.4g}/D^{a3['beta']:.3f}"
            + (f"; N_opt ∝ C^{a3['a']:.3f}, D_opt ∝ C^{a3['b']:.3f}" if a3["a"] is not None else "")
        )
    lines.append(
        f"Chinchilla for comparison: approach 2 a = 0.49, b = 0.51; approach 3 alpha = {chinchilla.ALPHA}, "
        f"beta = {chinchilla.BETA} (a = 0.46, b = 0.54); Table 3: ~20 tokens per parameter"
    )
    lines += [f"warning: {w}" for w in fits.get("warnings", [])]
    return lines


def summary_markdown(rows: list[dict], fits: dict) -> str:
    head = ["# Scaling-law sweep", "", "![IsoFLOP profiles and frontier](isoflop.png)", "", "## Fits", ""]
    head += [f"- {line}" for line in summary_lines(fits)]
    table = [
        "",
        "## Grid points",
        "",
        "| budget (FLOPs) | layers x width | N | D | D/N | val loss | train time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["budget"], r["params"])):
        table.append(
            f"| {r['budget']:.2g} | {r['n_layer']} x {r['n_embd']} | {r['params']:,} | {r['tokens']:,} | "
            f"{r['tokens'] / r['params']:.1f} | {r['loss']:.4f} | {r.get('train_s') or 0:.0f} |"
        )
    return "\n".join(head + table) + "\n"


def plot_isoflop(path: Path, rows: list[dict], fits: dict) -> Path:
    """Left: loss against N per budget with the fitted parabolas. Right: N_opt against C."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    budgets = sorted({r["budget"] for r in rows})
    colors = [colormaps["viridis"](i / max(len(budgets) - 1, 1)) for i in range(len(budgets))]
    minima = {m["compute"]: m for m in fits["approach2"].get("minima", [])}
    for c, color in zip(budgets, colors):
        pts = sorted((r["params"], r["loss"]) for r in rows if r["budget"] == c)
        n, loss = np.array(pts).T
        left.plot(n, loss, "o", color=color, label=f"C = {c:.2g}")
        m = minima.get(c)
        if m and m.get("parabola_ln_n"):
            xs = np.linspace(np.log(n.min()), np.log(n.max()), 50)
            left.plot(np.exp(xs), np.polyval(m["parabola_ln_n"], xs), "-", color=color, alpha=0.6)
            if m["params"] is not None:
                left.plot([m["params"]], [m["loss"]], "*", color=color, markersize=12)
    left.set_xscale("log")
    left.xaxis.set_major_formatter(FuncFormatter(_si_tick))
    left.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: _si_tick(x) if f"{x:.0e}"[0] in "25" else ""))
    left.set_xlabel("parameters N")
    left.set_ylabel("held-out loss (nats/token)")
    left.set_title("IsoFLOP profiles (approach 2)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    cs = np.geomspace(min(budgets) / 2, max(budgets) * 2, 50)
    a2, a3 = fits["approach2"], fits["approach3"]
    found = [m for m in minima.values() if m["params"] is not None]
    if found:
        right.plot(
            [m["compute"] for m in found],
            [m["params"] for m in found],
            "k*",
            markersize=12,
            label="IsoFLOP minima",
        )
    if "a" in a2:
        right.plot(cs, a2["k_params"] * cs ** a2["a"], "k-", label=f"approach 2: N ∝ C^{a2['a']:.2f}")
    if a3.get("a") is not None:
        right.plot(
            cs, [parametric_optimum(a3, c)[0] for c in cs], "b--", label=f"approach 3: N ∝ C^{a3['a']:.2f}"
        )
    right.plot(
        cs,
        [chinchilla.optimal_from_compute(c)[0] for c in cs],
        ":",
        color="gray",
        label="Chinchilla Table 3 frontier",
    )
    right.set_xscale("log")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(_si_tick))
    right.set_xlabel("training FLOPs C")
    right.set_ylabel("compute-optimal N")
    right.set_title("Compute-optimal frontier")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return write_atomic(path, fig.savefig, suffix=".png")


def _si_tick(x: float, _pos=None) -> str:
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def _write_json(path: Path, data: dict) -> None:
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, (np.floating, np.integer, np.bool_)):
            return x.item()
        return x

    write_text_atomic(path, json.dumps(clean(data), indent=1))
