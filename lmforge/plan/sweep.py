"""`lmforge plan sweep`: scaling laws from your own runs (Chinchilla approaches 2 and 3).

Trains a grid of small decoders at several fixed compute budgets (IsoFLOP profiles): for each
budget C, a few model sizes N around a guessed optimum, each trained for D = C / FLOPs-per-token
tokens with its own full cosine schedule, and its final held-out loss recorded; a profile whose
lowest loss is at its edge gets more sizes beyond it. Then fits the IsoFLOP minima (approach 2)
and L(N, D) (approach 3), and draws them.

    <out>/tokenizer.json, data/        shared by every point
    <out>/points/<id>/                 a normal run directory per grid point (train.log inside)
    <out>/results.jsonl                one line per finished point (appended as they finish)
    <out>/sweep.json                   the sweep's configuration (a resumed sweep must match it)
    <out>/fit.json, isoflop.png, sweep.md

Resumable: a point in results.jsonl is never trained again, and a point cut short resumes from
its last checkpoint (the trainer's own resume). Budgets are training FLOPs counted by
ModelConfig.flops_per_token (6·N_matmul plus attention), the real work done.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from lmforge.atomic import write_text_atomic
from lmforge.config import RunConfig, from_dict, merge, parse_overrides, to_dict
from lmforge.errors import LmforgeError
from lmforge.inputs import prepare_shards, prepare_tokenizer
from lmforge.plan import chinchilla
from lmforge.tokenizer import Tokenizer
from lmforge.train.loop import train

# The default CPU grid: 20-25 minutes on 2 shared cores (bench/RESULTS.md has the measured run).
# 4 budgets x 5 sizes, a factor ~2 apart, from N*/SPREAD to N*·SPREAD around a guessed optimum N*.
DEFAULT_BUDGETS = (1e11, 2e11, 4e11, 8e11)
SIZES_PER_BUDGET = 5
SPREAD = 4.0
# The guess: N* with D = CENTRE_TOKENS_PER_PARAM x N* at the budget. Chinchilla's ~20 put the
# first CPU grid's minimum at its smallest model (loss still falling at 30 tokens per parameter):
# models this small, trained for a few hundred steps, want more tokens per parameter.
CENTRE_TOKENS_PER_PARAM = 60.0
MIN_STEPS = 50  # fewer optimizer steps than this and a run measures the optimizer, not the model
MAX_EXTRA = 2  # sizes added to a budget whose minimum sits at the edge of its profile (extend_edges)

# Base config of every grid point (a user's section.key=value overrides are applied on top). The
# tiny recipe's Llama-style choices, a 512-token vocabulary so that embeddings do not dwarf these
# small models, 128-token context, 1,024-token batches (small, so that short runs still take
# hundreds of steps), one evaluation at the end on the same 32K held-out tokens.
BASE = {
    "model": {
        "kind": "decoder",
        "vocab_size": 512,
        "block_size": 128,
        "activation": "swiglu",
        "norm": "rmsnorm",
        "pos": "rope",
        "bias": False,
        "tie_embeddings": True,
    },
    "tokenizer": {"vocab_size": 512},
    "data": {"corpus": "embedded", "val_fraction": 0.05},
    "train": {
        "batch_size": 8,
        "lr": 3e-3,
        "min_lr_ratio": 0.1,
        "decay": "cosine",
        "weight_decay": 0.1,
        "eval_every": 0,
        "eval_tokens": 32768,
        "ckpt_every": 0,
        "keep_last": 1,
        "tensorboard": False,
        "progress": "lines",
        "threads": 1,
        "device": "cpu",
        "precision": "fp32",
    },
}
WIDTHS = (16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512)
DEPTHS = range(1, 9)


@dataclass
class Point:
    id: str
    budget: float
    n_layer: int
    n_embd: int
    params: int
    steps: int
    tokens: int  # steps x batch x seq_len
    flops: float  # flops_per_token x tokens (the budget, up to rounding of the steps)


def base_config(overrides: list[str] | None = None) -> RunConfig:
    cfg = from_dict(RunConfig, merge(BASE, parse_overrides(overrides or [])))
    cfg.model.validate()
    cfg.train.validate()
    return cfg


def shape(cfg: RunConfig, n_layer: int, n_embd: int) -> RunConfig:
    """A copy of cfg with this depth and width (head dim 32, or one head under 64 wide)."""
    model = dataclasses.replace(
        cfg.model, n_layer=n_layer, n_embd=n_embd, n_head=max(1, n_embd // 32), n_kv_head=None
    )
    return dataclasses.replace(copy.deepcopy(cfg), model=model)


def ladder(cfg: RunConfig) -> list[tuple[int, int, int, float]]:
    """(params, n_layer, n_embd, training FLOPs per token) of the candidate shapes, smallest first:
    width/depth between 16 and 64 (Kaplan et al. 2020, Fig. 5: the loss stays within a few % over a
    40x range of it)."""
    seq_len = cfg.train.seq_len or cfg.model.block_size
    out = []
    for n_layer in DEPTHS:
        for n_embd in WIDTHS:
            if 16 <= n_embd / n_layer <= 64:
                m = dataclasses.replace(
                    cfg.model, n_layer=n_layer, n_embd=n_embd, n_head=max(1, n_embd // 32), n_kv_head=None
                )
                out.append((m.num_params(), n_layer, n_embd, m.flops_per_token(seq_len)))
    return sorted(out)


def _candidates(cfg: RunConfig, budget: float) -> list[tuple[int, int, int, float, int]]:
    """(params, n_layer, n_embd, flops_per_token, steps) of the ladder shapes that train at least
    MIN_STEPS steps on this budget, smallest first."""
    out = []
    for params, n_layer, n_embd, fpt in ladder(cfg):
        steps = round(budget / fpt / _tokens_per_step(cfg))
        if steps >= MIN_STEPS:
            out.append((params, n_layer, n_embd, fpt, steps))
    return out


def _tokens_per_step(cfg: RunConfig) -> int:
    return cfg.train.batch_size * (cfg.train.seq_len or cfg.model.block_size) * cfg.train.grad_accum


def _point(cfg: RunConfig, budget: float, cand: tuple[int, int, int, float, int]) -> Point:
    params, n_layer, n_embd, fpt, steps = cand
    tokens = steps * _tokens_per_step(cfg)
    pid = f"c{budget:.2e}_L{n_layer}_d{n_embd}".replace("+", "")
    return Point(pid, budget, n_layer, n_embd, params, steps, tokens, fpt * tokens)


def plan_grid(cfg: RunConfig, budgets=DEFAULT_BUDGETS, sizes: int = SIZES_PER_BUDGET) -> list[Point]:
    """The grid points, smallest budget first. LmforgeError if a budget is too small for any model."""
    if sizes < 3:
        raise LmforgeError(f"an IsoFLOP profile needs at least 3 sizes per budget, got {sizes}")
    points = []
    for budget in sorted(budgets):
        if not budget > 0:
            raise LmforgeError(f"sweep budgets must be positive FLOPs, got {budget!r}")
        fits = _candidates(cfg, budget)
        if len(fits) < 3:
            params, n_layer, n_embd, fpt = ladder(cfg)[0]
            need = MIN_STEPS * _tokens_per_step(cfg) * fpt
            raise LmforgeError(
                f"sweep budget {budget:.3g} FLOPs is too small for the grid: the smallest models "
                f"({n_layer} layer x {n_embd} wide, {params:,} params) need about {3 * need:.2g} FLOPs "
                f"for {MIN_STEPS} steps of {_tokens_per_step(cfg):,} tokens; use budgets of at least that"
            )
        centre = math.sqrt(budget / (chinchilla.FLOPS_PER_PARAM_TOKEN * CENTRE_TOKENS_PER_PARAM))
        targets = [centre * SPREAD ** (2 * i / (sizes - 1) - 1) for i in range(sizes)]
        chosen: list = []
        for t in targets:
            rest = [f for f in fits if f not in chosen]
            if rest:
                chosen.append(min(rest, key=lambda f: abs(math.log(f[0] / t))))
        points += [_point(cfg, budget, c) for c in sorted(chosen)]
    return points


def extend_edges(cfg: RunConfig, points: list[Point], done: dict[str, dict], sizes: int) -> list[Point]:
    """One more size for each finished budget whose lowest loss is at the smallest (largest) size:
    the next smaller (larger) ladder shape, so the IsoFLOP minimum ends up inside the profile, as
    approach 2 needs. At most MAX_EXTRA per budget; none where the ladder has no further shape."""
    new = []
    for budget in sorted({p.budget for p in points}):
        mine = sorted((p for p in points if p.budget == budget), key=lambda p: p.params)
        if any(p.id not in done for p in mine) or len(mine) >= sizes + MAX_EXTRA:
            continue
        best = min(mine, key=lambda p: done[p.id]["loss"])
        cands = _candidates(cfg, budget)
        if best is mine[0]:
            beyond = [c for c in cands if c[0] < 0.9 * best.params]
            pick = beyond[-1] if beyond else None
        elif best is mine[-1]:
            beyond = [c for c in cands if c[0] > 1.1 * best.params]
            pick = beyond[0] if beyond else None
        else:
            pick = None
        if pick is not None:
            new.append(_point(cfg, budget, pick))
    return new


def point_config(cfg: RunConfig, p: Point, out: Path) -> RunConfig:
    pc = shape(cfg, p.n_layer, p.n_embd)
    pc.name, pc.out_dir = p.id, str(out / "points")
    pc.train.max_steps = p.steps
    pc.train.warmup_steps = min(cfg.train.warmup_steps, max(1, p.steps // 10))
    pc.train.log_every = max(1, p.steps // 5)
    pc.data.shards = str(out / "data")
    pc.tokenizer.path = str(out / "tokenizer.json")
    return pc


def _train_point(cfg_dict: dict, log_path: str) -> dict:
    """One grid point (in this process or a worker): train, with its output in train.log."""
    cfg = from_dict(RunConfig, cfg_dict)
    tok = Tokenizer.load(cfg.tokenizer.path)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        t0 = time.perf_counter()
        result = train(cfg, Path(cfg.data.shards), tok, cfg.run_dir)
        return {**result.__dict__, "train_s": time.perf_counter() - t0}


def run_sweep(
    out: str | Path,
    budgets=DEFAULT_BUDGETS,
    sizes: int = SIZES_PER_BUDGET,
    overrides=None,
    workers: int = 1,
    log=print,
) -> dict:
    """Train every missing grid point, then fit and plot. Returns the fit summary."""
    out = Path(out)
    cfg = base_config(overrides)
    if workers < 1:
        raise LmforgeError(f"--workers must be at least 1, got {workers}")
    plan_grid(cfg, budgets, sizes)  # reject impossible budgets before anything is written
    _check_same_sweep(out, cfg, budgets, sizes)
    # Tokenizer and shards once, for every point (the pipeline reuses them when they exist).
    tok = prepare_tokenizer(cfg, out)
    prepare_shards(cfg, tok, out)
    cfg.model.vocab_size = tok.vocab_size  # the trained vocabulary can come out a little smaller
    points = plan_grid(cfg, budgets, sizes)

    done = read_results(out)
    log(
        f"sweep: {len(points)} points over {len({p.budget for p in points})} budgets, "
        f"{sum(p.flops for p in points):.3g} training FLOPs; {sum(p.id in done for p in points)} "
        f"already done -> {out}"
    )
    while True:
        todo = [p for p in points if p.id not in done]
        if todo:
            _train_all(todo, cfg, out, workers, log)
            done = read_results(out)
            continue
        extra = extend_edges(cfg, points, done, sizes)  # a profile whose minimum is at its edge grows
        if not extra:
            break
        log(
            "extending IsoFLOP profiles whose lowest loss is at an edge: "
            + ", ".join(f"{p.n_layer}x{p.n_embd} at C={p.budget:.2g}" for p in extra)
        )
        points += extra

    from lmforge.plan.sweep_report import write_outputs  # scipy (the `plan` extra) for the fits

    ids = {p.id for p in points}
    return write_outputs(out, [r for r in read_results(out).values() if r["id"] in ids], log)


def _train_all(todo: list[Point], cfg: RunConfig, out: Path, workers: int, log) -> None:
    """Train the points, appending each to results.jsonl as it finishes, with progress and ETA."""
    t_start, flops_done, total = time.perf_counter(), 0.0, sum(p.flops for p in todo)
    for i, (p, res) in enumerate(_run_points(todo, cfg, out, workers), 1):
        if res.get("stopped_early") or res.get("val_loss") is None:
            raise LmforgeError(
                f"grid point {p.id} stopped early ({res.get('stop_reason')}); "
                "run the sweep again to resume it"
            )
        row = {
            **p.__dict__,
            "loss": res["val_loss"],
            "val_bpb": res.get("val_bpb"),
            "train_loss": res.get("final_train_loss"),
            "tokens_per_s": res.get("tokens_per_s"),
            "train_s": res.get("train_s"),
        }
        _append_line(out / "results.jsonl", json.dumps(row))
        flops_done += p.flops
        elapsed = time.perf_counter() - t_start
        log(
            f"[{i}/{len(todo)}] C={p.budget:.2g} {p.n_layer}x{p.n_embd} N={p.params:,} D={p.tokens:,}: "
            f"val loss {res['val_loss']:.4f} in {res.get('train_s', 0):.0f}s; "
            f"elapsed {elapsed / 60:.1f} min, eta {elapsed / flops_done * (total - flops_done) / 60:.1f} min"
        )


def _run_points(todo: list[Point], cfg: RunConfig, out: Path, workers: int):
    jobs = [(p, to_dict(point_config(cfg, p, out)), str(out / "points" / p.id / "train.log")) for p in todo]
    if workers == 1:
        for p, cfg_dict, log_path in jobs:
            yield p, _train_point(cfg_dict, log_path)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_train_point, c, lp): p for p, c, lp in jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _append_line(path: Path, line: str) -> None:
    """Append one line; a torn last line (a crash mid-write) is ended first, not glued to this one."""
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_results(out: Path) -> dict[str, dict]:
    """Finished points by id; a line cut short by a crash is ignored (that point runs again)."""
    path = Path(out) / "results.jsonl"
    rows = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row and isinstance(row.get("loss"), (int, float)):
                rows[row["id"]] = row
    return rows


SECTIONS = ("model", "tokenizer", "data", "train")  # what decides a grid point's training


def _check_same_sweep(out: Path, cfg: RunConfig, budgets, sizes: int) -> None:
    """Refuse to mix points trained under another base config into this sweep's results.

    Compares the sections that decide training, key by key; a key only one side has (a field added
    to the config classes since) is not a difference."""
    spec = {k: v for k, v in to_dict(cfg).items() if k in SECTIONS}
    path = out / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8")).get("config", {})
        changed = [
            f"{sec}.{k}"
            for sec in SECTIONS
            for k, v in spec.get(sec, {}).items()
            if k in old.get(sec, {}) and old[sec][k] != v
        ]
        if changed:
            raise LmforgeError(
                f"{out} holds a sweep trained with another base configuration ({', '.join(changed[:4])} "
                f"differ; see {path}); use another --out, or the same overrides as before"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"config": spec, "budgets": list(budgets), "sizes": sizes}, indent=1))


if __name__ == "__main__":  # python -m lmforge.plan.sweep OUT [overrides] (same as `lmforge plan sweep`)
    run_sweep(sys.argv[1], overrides=sys.argv[2:])
