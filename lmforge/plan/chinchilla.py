"""Compute-optimal sizing: Chinchilla (Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models", arXiv:2203.15556).

A pre-training run is three numbers: parameters N, training tokens D and compute C ≈ 6·N·D FLOPs
(2 FLOPs per parameter per token forward, 4 backward; Kaplan et al. 2020 §2.1). For a compute
budget there is one model size that reaches the lowest loss (the compute-optimal frontier); given
any one of N, D or C, `size` gives the other two on that frontier, or, given two, says how far the
run is from it.

Two published results are used, for two different things:
- The frontier is the paper's Table 3 (its approach 1 projection: N_opt = G·C^a, roughly 20
  tokens per parameter). The paper prints a ≈ 0.50 but not G, so both come from a least-squares
  fit of log N on log C over Table 3's nine rows (tests/test_plan.py reproduces the table).
- The predicted loss is the parametric law of approach 3, eq. 10, with the paper's constants.
  That law's own optimum puts fewer tokens per parameter at large scale than Table 3 (a = 0.45);
  Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") trace this to the fit, so we
  size with Table 3 and use eq. 10 only to predict a loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lmforge.errors import LmforgeError

# Table 3 frontier, N_opt = FRONTIER_G * C**FRONTIER_A (C in FLOPs = 6ND). Fit of log N on log C
# over all nine rows of Hoffmann et al. 2022 Table 3; every cell reproduces within 3% except the
# 67B row's tokens (printed 1.5T, rounded; its own FLOPs imply 1.43T), which agree within 7%.
FRONTIER_A = 0.4981
FRONTIER_G = 0.09916

# Eq. 10 of Hoffmann et al. 2022 (approach 3): L(N, D) = E + A / N^alpha + B / D^beta, in nats per
# token on their MassiveText data and SentencePiece tokenizer (so not comparable to other data).
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28

# A run whose model is more than this factor larger or smaller than the compute-optimal size for
# its compute is reported as off the frontier. Chinchilla's IsoFLOP valleys (Figure 3) are flat
# within about 2x of the optimum; beyond it the loss rises visibly for the same compute.
FAR_FACTOR = 2.0

# Kaplan et al. 2020 §2.1: training FLOPs per parameter per token (forward 2, backward 4).
FLOPS_PER_PARAM_TOKEN = 6.0


def optimal_from_compute(compute: float) -> tuple[float, float]:
    """(N_opt, D_opt) on the frontier for a budget of `compute` = 6ND FLOPs."""
    _positive("compute", compute)
    n = FRONTIER_G * compute**FRONTIER_A
    return n, compute / (FLOPS_PER_PARAM_TOKEN * n)


def optimal_from_params(params: float) -> tuple[float, float]:
    """(C_opt, D_opt): the budget for which a model of `params` parameters is compute-optimal."""
    _positive("params", params)
    c = (params / FRONTIER_G) ** (1.0 / FRONTIER_A)
    return c, c / (FLOPS_PER_PARAM_TOKEN * params)


def optimal_from_tokens(tokens: float) -> tuple[float, float]:
    """(C_opt, N_opt): the budget, and model size, for which `tokens` tokens are compute-optimal.
    From D = C / (6 G C^a): C = (6 G D)^(1 / (1 - a))."""
    _positive("tokens", tokens)
    c = (FLOPS_PER_PARAM_TOKEN * FRONTIER_G * tokens) ** (1.0 / (1.0 - FRONTIER_A))
    return c, FRONTIER_G * c**FRONTIER_A


def chinchilla_loss(params: float, tokens: float) -> float:
    """Eq. 10: the loss (nats/token, Chinchilla's data) of N params trained on D tokens."""
    _positive("params", params)
    _positive("tokens", tokens)
    return E + A / params**ALPHA + B / tokens**BETA


@dataclass
class Sizing:
    """One planned run and where it sits against the compute-optimal frontier."""

    params: float  # N
    tokens: float  # D
    compute: float  # 6·N·D FLOPs (the frontier's convention)
    compute_model: float | None  # FLOPs from the model's shape (attention included), when a shape is given
    tokens_per_param: float  # D / N
    optimal_params: float  # N_opt for this compute
    optimal_tokens: float  # D_opt for this compute
    optimal_tokens_per_param: float
    size_ratio: float  # N / N_opt: > 1 under-trained (too big for the compute), < 1 over-trained
    position: str  # "compute-optimal", "near the frontier", "over-trained", "under-trained"
    loss: float  # eq. 10 prediction for (N, D)
    warning: str | None  # set when the run is far from the frontier

    @property
    def training_flops(self) -> float:
        """What the hardware must execute: the shape's count when known, else 6ND."""
        return self.compute_model if self.compute_model is not None else self.compute

    def to_dict(self) -> dict:
        return asdict(self)


def size(
    params: float | None = None,
    tokens: float | None = None,
    compute: float | None = None,
    flops_per_token: float | None = None,
) -> Sizing:
    """Complete a plan from one or two of N, D, C.

    One given: the other two on the frontier. Two given: the third from C = 6·N·D (or, with
    `flops_per_token` from a model shape, C = flops_per_token · D), and the run's distance from
    the frontier. `compute` is in the same convention: 6ND FLOPs without a shape, the shape's
    FLOPs with one.
    """
    given = {k: v for k, v in (("params", params), ("tokens", tokens), ("compute", compute)) if v is not None}
    for k, v in given.items():
        _positive(k, v)
    if flops_per_token is not None:
        _positive("flops_per_token", flops_per_token)
    if not given:
        raise LmforgeError("give one or two of --params, --tokens, --compute (or a model with --config)")
    if len(given) == 3:
        raise LmforgeError(
            "give at most two of --params, --tokens and --compute; the third follows from them"
        )
    fpt = flops_per_token
    if params is not None and tokens is None and compute is None:
        _, tokens = optimal_from_params(params)
    elif tokens is not None and params is None and compute is None:
        _, params = optimal_from_tokens(tokens)
    elif compute is not None and params is None and tokens is None:
        if fpt is not None:
            raise LmforgeError("with a model shape, give its parameters too (they are fixed by the shape)")
        params, tokens = optimal_from_compute(compute)
    elif tokens is None:  # params and compute: D from the compute
        tokens = compute / (fpt if fpt is not None else FLOPS_PER_PARAM_TOKEN * params)
    elif params is None:  # tokens and compute: N from C = 6ND
        if fpt is not None:
            raise LmforgeError(
                "with a model shape the parameters are fixed; give --tokens or --compute, not both"
            )
        params = compute / (FLOPS_PER_PARAM_TOKEN * tokens)
    compute_6nd = FLOPS_PER_PARAM_TOKEN * params * tokens
    n_opt, d_opt = optimal_from_compute(compute_6nd)
    ratio = params / n_opt
    position, warning = _position(params, tokens, n_opt, d_opt, ratio)
    return Sizing(
        params=params,
        tokens=tokens,
        compute=compute_6nd,
        compute_model=fpt * tokens if fpt is not None else None,
        tokens_per_param=tokens / params,
        optimal_params=n_opt,
        optimal_tokens=d_opt,
        optimal_tokens_per_param=d_opt / n_opt,
        size_ratio=ratio,
        position=position,
        loss=chinchilla_loss(params, tokens),
        warning=warning,
    )


def _position(
    params: float, tokens: float, n_opt: float, d_opt: float, ratio: float
) -> tuple[str, str | None]:
    if abs(math.log(ratio)) < 0.01:
        return "compute-optimal", None
    if 1 / FAR_FACTOR <= ratio <= FAR_FACTOR:
        return "near the frontier", None
    have = f"{tokens / params:,.1f} tokens per parameter"
    best = (
        f"the compute-optimal split of the same {6 * params * tokens:.3g} FLOPs is {_si(n_opt)} parameters "
        f"on {_si(d_opt)} tokens ({d_opt / n_opt:.1f} tokens per parameter)"
    )
    if ratio < 1:
        return "over-trained", (
            f"over-trained: {have}, the model is {1 / ratio:.1f}x smaller than compute-optimal; {best}. "
            "Fine when a smaller model is wanted for cheaper inference (as Llama does), "
            "but not the lowest loss for this compute."
        )
    return "under-trained", (
        f"under-trained: {have}, the model is {ratio:.1f}x larger than compute-optimal; {best}, "
        "which reaches a lower loss for the same compute."
    )


def _positive(name: str, value: float) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise LmforgeError(f"{name} must be a positive number, got {value!r}")


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
