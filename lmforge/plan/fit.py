"""Scaling laws fitted from (N, D, C, loss) points, as Chinchilla does (Hoffmann et al. 2022, §3).

Approach 2, IsoFLOP profiles: at each compute budget, fit a parabola to the final loss against
log N (and against log D); its vertex is that budget's optimal size. Then N_opt = k_N·C^a and
D_opt = k_D·C^b by least squares in log-log space.

Approach 3, a parametric loss: L(N, D) = E + A/N^alpha + B/D^beta, fitted by minimising the Huber
loss (delta = 1e-3) between log L and its prediction, from a grid of starting points, with a
quasi-Newton method (paper §3.3 and App. D.2). Its compute-optimal frontier follows in closed form:
N_opt = G·(C/6)^(beta/(alpha+beta)), G = (alpha·A / (beta·B))^(1/(alpha+beta)) (paper eq. 4).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

from lmforge.errors import LmforgeError

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022 §3.3
# The paper's initialisation grid (App. D.2): alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
# a, b in {0, 5, ..., 25}, where A = exp(a), B = exp(b), E = exp(e).
INIT_GRID = {
    "a": np.arange(0, 30, 5.0),
    "b": np.arange(0, 30, 5.0),
    "e": np.arange(-1, 1.5, 0.5),
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
}
N_STARTS = 16  # BFGS runs from the grid points with the lowest starting objective


# ---- approach 2 --------------------------------------------------------------------------------


def isoflop_minima(points: list[dict]) -> list[dict]:
    """Per compute budget: the parabola vertex of loss vs ln N and vs ln D.

    points: dicts with 'compute', 'params', 'tokens', 'loss'; budgets are grouped by 'compute'
    (equal within 1%). A budget needs 3 sizes and an upward parabola; 'inside' says whether the
    vertex lies within the sampled sizes (otherwise it is an extrapolation).
    """
    groups: dict[float, list[dict]] = defaultdict(list)
    for p in sorted(points, key=lambda p: p["compute"]):
        key = next((k for k in groups if abs(p["compute"] / k - 1) < 0.01), p["compute"])
        groups[key].append(p)
    out = []
    for compute, pts in sorted(groups.items()):
        if len({p["params"] for p in pts}) < 3:
            continue
        loss = np.array([p["loss"] for p in pts])
        x_n = np.log([p["params"] for p in pts])
        x_d = np.log([p["tokens"] for p in pts])
        vn, curv_n = _vertex(x_n, loss)
        vd, _ = _vertex(x_d, loss)
        if vn is None or vd is None:
            out.append(
                {
                    "compute": compute,
                    "params": None,
                    "tokens": None,
                    "loss": None,
                    "inside": False,
                    "n_points": len(pts),
                }
            )
            continue
        inside = x_n.min() <= vn <= x_n.max()
        out.append(
            {
                "compute": compute,
                "params": math.exp(vn),
                "tokens": math.exp(vd),
                "loss": float(np.polyval(curv_n, vn)),
                "inside": bool(inside),
                "n_points": len(pts),
                "parabola_ln_n": curv_n.tolist(),
            }
        )
    return out


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[float | None, np.ndarray]:
    coef = np.polyfit(x, y, 2)
    if coef[0] <= 0:  # no minimum: the budget's sizes do not bracket the optimum
        return None, coef
    return -coef[1] / (2 * coef[0]), coef


def fit_isoflop(points: list[dict]) -> dict:
    """Approach 2: exponents a (N_opt ∝ C^a) and b (D_opt ∝ C^b) from the IsoFLOP minima."""
    minima = isoflop_minima(points)
    usable = [m for m in minima if m["params"] is not None and m["inside"]]
    if len(usable) < 2:  # fall back to extrapolated vertices rather than nothing
        usable = [m for m in minima if m["params"] is not None]
    if len(usable) < 2:
        raise LmforgeError(
            f"approach 2 needs IsoFLOP minima at 2 or more budgets, got {len(usable)} "
            "(each budget needs 3+ model sizes whose losses bracket a minimum)"
        )
    c = np.log([m["compute"] for m in usable])
    a, ln_kn = np.polyfit(c, np.log([m["params"] for m in usable]), 1)
    b, ln_kd = np.polyfit(c, np.log([m["tokens"] for m in usable]), 1)
    return {
        "a": float(a),
        "b": float(b),
        "k_params": math.exp(ln_kn),
        "k_tokens": math.exp(ln_kd),
        "minima": minima,
        "budgets_used": len(usable),
    }


# ---- approach 3 --------------------------------------------------------------------------------


def _objective(
    theta: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray
) -> tuple[float, np.ndarray]:
    """Huber(LSE(a - alpha ln N, b - beta ln D, e) - ln L) summed, and its gradient (scaled by 1/delta)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])  # (3, P)
    top = terms.max(axis=0)
    w = np.exp(terms - top)
    s = w.sum(axis=0)
    lse = top + np.log(s)
    w /= s  # softmax: d lse / d term
    r = lse - ln_l
    d = HUBER_DELTA
    small = np.abs(r) <= d
    loss = np.where(small, 0.5 * r * r, d * (np.abs(r) - 0.5 * d)).sum() / d
    g_r = np.where(small, r, d * np.sign(r)) / d
    grad = np.array(
        [
            (g_r * w[0]).sum(),
            (g_r * w[1]).sum(),
            (g_r * w[2]).sum(),
            -(g_r * w[0] * ln_n).sum(),
            -(g_r * w[1] * ln_d).sum(),
        ]
    )
    return float(loss), grad


def _grid_objective(grid: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray) -> np.ndarray:
    """The objective at every row of `grid` (G, 5) at once, to rank the starting points."""
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))  # (G, 1) each
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.broadcast_to(e, (len(grid), len(ln_n)))])
    r = np.logaddexp.reduce(terms, axis=0) - ln_l  # (G, P)
    d = HUBER_DELTA
    return np.where(np.abs(r) <= d, 0.5 * r * r, d * (np.abs(r) - 0.5 * d)).sum(axis=1) / d


def fit_parametric(params, tokens, losses, n_starts: int = N_STARTS) -> dict:
    """Approach 3: E, A, B, alpha, beta of L(N, D) = E + A/N^alpha + B/D^beta, and the frontier."""
    from scipy.optimize import minimize

    ln_n, ln_d, ln_l = (np.log(np.asarray(v, dtype=float)) for v in (params, tokens, losses))
    if len(ln_l) < 5:
        raise LmforgeError(f"approach 3 fits 5 constants and needs at least 5 runs, got {len(ln_l)}")
    grid = np.array(list(itertools.product(*INIT_GRID.values())))  # (4500, 5)
    start_loss = _grid_objective(grid, ln_n, ln_d, ln_l)
    best = None
    for theta0 in grid[np.argsort(start_loss)[:n_starts]]:
        # BFGS rather than the paper's L-BFGS: with 5 unknowns the limited-memory variant saves
        # nothing, and SciPy's L-BFGS-B calls threaded BLAS that stalls ~100x on a busy machine.
        # A well-posed fit converges in < 100 iterations; 300 caps the flat valleys of a bad one.
        res = minimize(
            _objective,
            theta0,
            args=(ln_n, ln_d, ln_l),
            jac=True,
            method="BFGS",
            options={"maxiter": 300, "gtol": 1e-9},
        )
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    out = {
        "E": math.exp(e),
        "A": math.exp(a),
        "B": math.exp(b),
        "alpha": float(alpha),
        "beta": float(beta),
        "huber_loss": float(best.fun) * HUBER_DELTA,
    }
    out.update(parametric_frontier(out))
    return out


def parametric_frontier(fit: dict) -> dict:
    """Closed-form optimum of L(N, D) at fixed C = 6ND (Hoffmann et al. 2022, eq. 4)."""
    alpha, beta = fit["alpha"], fit["beta"]
    if alpha <= 0 or beta <= 0:
        return {"a": None, "b": None, "G": None}
    G = (alpha * fit["A"] / (beta * fit["B"])) ** (1.0 / (alpha + beta))
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta), "G": G}


def parametric_optimum(fit: dict, compute: float) -> tuple[float, float]:
    """(N_opt, D_opt) of a fitted law at `compute` = 6ND FLOPs."""
    n = fit["G"] * (compute / 6.0) ** fit["a"]
    return n, compute / (6.0 * n)


def parametric_loss(fit: dict, params, tokens):
    return (
        fit["E"]
        + fit["A"] / np.asarray(params) ** fit["alpha"]
        + fit["B"] / np.asarray(tokens) ** fit["beta"]
    )
