"""`lmforge plan`: how big, how long, how much — before spending money.

    lmforge plan --params 7e9                       compute-optimal tokens and FLOPs for 7B parameters
    lmforge plan --compute 1e23 --gpu h100 --num-gpus 512 --mfu 0.4
    lmforge plan --tokens 2e12 --json
    lmforge plan --config llama-1b                   a recipe's own shape, tokens and memory
    lmforge plan gpus                                the GPU presets and their sources
    lmforge plan sweep [--budgets 2e11,4e11] [--workers 2] [section.key=value ...]

The lead's cli.py calls `add_parser(subparsers)` and dispatches to `run(args)`; bad input raises
LmforgeError, printed as one line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

from lmforge import gpus
from lmforge.errors import LmforgeError
from lmforge.plan import chinchilla, hardware, memory
from lmforge.plan.display import format_gpus, format_plan
from lmforge.plan.shapes import DEFAULT_SEQ_LEN, shape_for_params

_NEGATIVE = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[kKmMbBgGtTpP]?$")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_amount(text: str, what: str) -> float:
    """'7e9', '7B', '1.5T', '400M' -> float; LmforgeError for anything else or a value <= 0."""
    m = re.fullmatch(
        r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*([kmbgtp]?)\s*", str(text), re.IGNORECASE
    )
    if not m:
        raise LmforgeError(f"{what} must be a number like 7e9, 7B or 1.5T, got '{text}'")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise LmforgeError(f"{what} must be positive, got '{text}'")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plan",
        help="compute-optimal size, tokens, GPU time, cost, energy and memory",
        description="How big, how long, how much: Chinchilla compute-optimal sizing, "
        "GPU-hours, rent/buy cost, energy, memory per GPU; `plan sweep` fits "
        "scaling laws from your own small runs.",
    )
    g = p.add_argument_group("size (give one or two; the rest follows)")
    g.add_argument("--params", help="parameters N, e.g. 7e9 or 7B")
    g.add_argument("--tokens", help="training tokens D, e.g. 2e12 or 2T")
    g.add_argument("--compute", help="training FLOPs C, e.g. 1e23")
    g.add_argument(
        "--config",
        "-c",
        help="a recipe (e.g. llama-1b) or YAML: its shape, and its tokens unless --tokens/--compute is given",
    )
    h = p.add_argument_group("hardware")
    h.add_argument("--gpu", default="h100", help=f"GPU preset ({', '.join(gpus.GPUS)}; default h100)")
    h.add_argument("--num-gpus", default="8", help="GPUs in the cluster (default 8, one server)")
    h.add_argument("--mfu", help=f"model FLOPs utilisation in (0, 1] (default {hardware.DEFAULT_MFU})")
    h.add_argument("--mfu-from", metavar="RUN_DIR", help="use the median MFU logged in a run's metrics.jsonl")
    h.add_argument("--pue", default=str(hardware.DEFAULT_PUE), help="data-centre PUE (default %(default)s)")
    h.add_argument(
        "--energy-price", default=str(hardware.DEFAULT_ENERGY_PRICE), help="$ per MWh (default %(default)s)"
    )
    m = p.add_argument_group("memory")
    m.add_argument("--seq-len", help=f"tokens per sequence (default: the recipe's, else {DEFAULT_SEQ_LEN})")
    m.add_argument("--micro-batch", default="1", help="sequences per GPU per forward pass (default 1)")
    m.add_argument(
        "--precision", default="bf16", choices=sorted(memory.STATE_BYTES), help="default bf16 mixed"
    )
    m.add_argument(
        "--optimizer",
        choices=memory.OPTIMIZERS,
        help="optimizer state to count (default: the recipe's train.optimizer, else adamw)",
    )
    m.add_argument("--checkpointing", action="store_true", help="full activation checkpointing")
    m.add_argument("--tp", help="tensor-parallel size (default: the simplest layout that fits)")
    m.add_argument("--pp", help="pipeline-parallel size")
    m.add_argument("--zero", help="ZeRO stage 0-3 (3 = FSDP)")
    m.add_argument(
        "--measure-memory",
        action="store_true",
        help="also measure a real fp32 training step of the --config model on this CPU",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    # argparse takes '-7e9' for an option (its negative-number pattern knows no exponents or
    # suffixes), which would hide our clear "must be positive" message behind a usage error.
    p._negative_number_matcher = _NEGATIVE

    sub = p.add_subparsers(dest="plan_command", metavar="{gpus,sweep}")
    gp = sub.add_parser("gpus", help="list the GPU presets with their sources")
    gp.add_argument("--json", action="store_true")
    sw = sub.add_parser(
        "sweep", help="train an IsoFLOP grid of small models and fit scaling laws (resumable)"
    )
    sw.add_argument("--out", default="runs/plan-sweep", help="sweep directory (default %(default)s)")
    sw.add_argument("--budgets", help="comma-separated FLOP budgets (default: the ~20-minute CPU grid)")
    sw.add_argument("--sizes", default="5", help="model sizes per budget (default 5)")
    sw.add_argument("--workers", default="1", help="grid points trained at once, in processes (default 1)")
    sw.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    sw.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="overrides of the sweep's base config"
    )
    sw._negative_number_matcher = _NEGATIVE
    return p


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "plan_command", None)
    if command == "gpus":
        return _gpus(args)
    if command == "sweep":
        return _sweep(args)
    result = make_plan(args)
    print(json.dumps(result, indent=1, default=_jsonable) if args.json else format_plan(result))
    return 0


# ---- the plan ------------------------------------------------------------------------------------


def make_plan(args: argparse.Namespace) -> dict:
    params = parse_amount(args.params, "--params") if args.params else None
    tokens = parse_amount(args.tokens, "--tokens") if args.tokens else None
    compute = parse_amount(args.compute, "--compute") if args.compute else None
    gpu = gpus.get_gpu(args.gpu)
    num_gpus = _int(args.num_gpus, "--num-gpus")
    mfu, mfu_source = _mfu(args)
    pue = _float(args.pue, "--pue")
    energy_price = _float(args.energy_price, "--energy-price", allow_zero=True)
    micro_batch = _int(args.micro_batch, "--micro-batch")

    shape_source = "assumed"
    optimizer = args.optimizer or "adamw"
    if args.config:
        from lmforge.config import load_config

        if params is not None:
            raise LmforgeError("--params and --config both set the model size; give one")
        cfg = load_config(args.config)
        _fit_vocab(cfg)
        optimizer = args.optimizer or cfg.train.optimizer
        model = cfg.model
        seq_len = _int(args.seq_len, "--seq-len") if args.seq_len else (cfg.train.seq_len or model.block_size)
        params = float(model.num_params())
        if tokens is None and compute is None:  # the recipe's own training length
            t = cfg.train
            tokens = float(t.max_steps * t.grad_accum * t.batch_size * seq_len)
        shape_source = f"recipe {args.config}"
        sizing = chinchilla.size(
            params=params, tokens=tokens, compute=compute, flops_per_token=model.flops_per_token(seq_len)
        )
    else:
        seq_len = _int(args.seq_len, "--seq-len") if args.seq_len else DEFAULT_SEQ_LEN
        sizing = chinchilla.size(params=params, tokens=tokens, compute=compute)
        model = shape_for_params(sizing.params, seq_len=seq_len)  # for memory only; FLOPs stay 6ND
    cost = hardware.estimate_cost(sizing.training_flops, gpu, num_gpus, mfu, pue, energy_price)
    mem = _memory(args, model, gpu, num_gpus, seq_len, micro_batch, optimizer)
    out = {
        "sizing": sizing.to_dict(),
        "gpu": gpu.to_dict(),
        "cost": cost,
        "assumptions": {
            "mfu": mfu,
            "mfu_source": mfu_source,
            "pue": pue,
            "energy_price_per_mwh": energy_price,
        },
        "shape": {
            "source": shape_source,
            "n_layer": model.n_layer,
            "n_embd": model.n_embd,
            "n_head": model.n_head,
            "vocab_size": model.vocab_size,
            "params": model.num_params(),
            "seq_len": seq_len,
            "micro_batch": micro_batch,
        },
        "memory": mem,
    }
    if args.measure_memory:
        if not args.config:
            raise LmforgeError("--measure-memory runs the --config model on this CPU; give --config")
        measured = memory.measure_cpu_peak(model, seq_len, micro_batch, optimizer=optimizer)
        predicted = memory.training_memory(model, seq_len, micro_batch, precision="fp32", optimizer=optimizer)
        out["memory"]["cpu_check"] = {
            "measured_bytes": measured["peak_bytes"],
            "predicted_bytes": predicted["total"] - predicted["weights"],
        }
    return out


def _memory(args, model, gpu, num_gpus: int, seq_len: int, micro_batch: int, optimizer: str) -> dict:
    """Per-GPU memory: the given layout, or the simplest one that fits num_gpus (and the fewest GPUs)."""
    kw = {"seq_len": seq_len, "micro_batch": micro_batch, "precision": args.precision, "optimizer": optimizer}
    out: dict = {"gpu_memory_gb": gpu.memory_gb, "headroom": memory.DEFAULT_HEADROOM}
    if args.tp or args.pp or args.zero:
        tp = _int(args.tp, "--tp") if args.tp else 1
        pp = _int(args.pp, "--pp") if args.pp else 1
        zero = _int(args.zero, "--zero", allow_zero=True) if args.zero else 0
        if num_gpus % (tp * pp):
            raise LmforgeError(f"--num-gpus {num_gpus} is not a multiple of tp x pp = {tp * pp}")
        layout = memory.Layout(num_gpus // (tp * pp), tp, pp, zero)
        chosen = memory.training_memory(model, layout=layout, checkpointing=args.checkpointing, **kw)
    else:
        try:
            layout, chosen = memory.smallest_layout(
                model, gpu.memory_gb, checkpointing=args.checkpointing, num_gpus=num_gpus, **kw
            )
        except LmforgeError as e:
            chosen, out["does_not_fit"] = None, str(e)
    if chosen is not None:
        layout = memory.Layout(**chosen["layout"])
        out["layout"] = layout.describe()
        out["per_gpu"] = chosen
        other = memory.training_memory(model, layout=layout, checkpointing=not args.checkpointing, **kw)
        out["activations_other_checkpointing"] = other["activations"]
        out["fits"] = chosen["total"] <= gpu.memory_gb * 1e9 * memory.DEFAULT_HEADROOM
    for ckpt in (False, True):
        try:
            few, few_mem = memory.smallest_layout(model, gpu.memory_gb, checkpointing=ckpt, **kw)
            out[f"fewest_gpus{'_checkpointing' if ckpt else ''}"] = {
                "layout": few.describe(),
                "gpus": few.gpus,
                "total_bytes": few_mem["total"],
            }
        except LmforgeError:
            pass
    return out


def _fit_vocab(cfg) -> None:
    """The recipe's model as `lmforge train` builds it: its vocabulary fitted to the tokenizer (the
    run's tokenizer.json when it exists, else tokenizer.vocab_size, which BPE reaches on a large
    enough corpus)."""
    from lmforge.inputs import fit_model_to_tokenizer

    path = cfg.run_dir / "tokenizer.json"
    if cfg.tokenizer.path or path.is_file():
        from lmforge.tokenizer import Tokenizer

        vocab = Tokenizer.load(cfg.tokenizer.path or path).vocab_size
    else:
        vocab = cfg.tokenizer.vocab_size
    fit_model_to_tokenizer(cfg, vocab)


def _mfu_from_throughput(run_dir: Path, rows: list[dict]) -> tuple[float, str]:
    """A run without logged MFU (a CPU run, an unknown GPU): its median tokens/s x FLOPs per token
    over this machine's peak, as the run's report card computes it."""
    import yaml

    from lmforge.config import RunConfig, from_dict

    speeds = [
        r["tokens_per_s"]
        for r in rows
        if r.get("kind", "train") == "train" and isinstance(r.get("tokens_per_s"), (int, float))
    ]
    config = run_dir / "config.yaml"
    if not speeds or not config.is_file():
        raise LmforgeError(
            f"{run_dir} has no logged MFU or throughput (metrics.jsonl and config.yaml of a training run)"
        )
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    if isinstance(data.get("train"), dict):
        data["train"].pop("eval_batches", None)  # runs from before train.eval_tokens
    cfg = from_dict(RunConfig, data)
    fpt = cfg.model.flops_per_token(cfg.train.seq_len or cfg.model.block_size)
    peak, source = hardware.device_peak(cfg.train.device if cfg.train.device != "auto" else "cpu")
    mfu = statistics.median(speeds) * fpt / peak
    return hardware.check_mfu(min(mfu, 1.0)), f"{run_dir}: median tokens/s x FLOPs per token over {source}"


def _mfu(args) -> tuple[float, str]:
    if args.mfu and args.mfu_from:
        raise LmforgeError("give --mfu or --mfu-from, not both")
    if args.mfu_from:
        from lmforge.report import read_metrics

        rows = read_metrics(Path(args.mfu_from) / "metrics.jsonl")
        values = [
            r["mfu"]
            for r in rows
            if r.get("kind", "train") == "train" and isinstance(r.get("mfu"), (int, float))
        ]
        if values:
            return hardware.check_mfu(
                statistics.median(values)
            ), f"median of {len(values)} values in {args.mfu_from}"
        return _mfu_from_throughput(Path(args.mfu_from), rows)
    if args.mfu is None:
        return hardware.DEFAULT_MFU, "default"
    try:
        value = float(args.mfu)
    except ValueError:
        raise LmforgeError(f"--mfu must be a number in (0, 1], got '{args.mfu}'") from None
    return hardware.check_mfu(value), "given"


def _float(text: str, what: str, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LmforgeError(f"{what} must be a number, got '{text}'") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise LmforgeError(f"{what} must be {'>= 0' if allow_zero else 'positive'}, got '{text}'")
    return value


def _int(text: str, what: str, allow_zero: bool = False) -> int:
    try:
        value = int(str(text))
    except ValueError:
        raise LmforgeError(f"{what} must be a whole number, got '{text}'") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise LmforgeError(f"{what} must be {'>= 0' if allow_zero else 'at least 1'}, got '{text}'")
    return value


def _jsonable(x):
    return x.item() if hasattr(x, "item") else str(x)


# ---- subcommands ---------------------------------------------------------------------------------


def _gpus(args) -> int:
    if args.json:
        print(json.dumps({k: g.to_dict() for k, g in gpus.GPUS.items()}, indent=1))
    else:
        print(format_gpus())
    return 0


def _sweep(args) -> int:
    from lmforge.plan import sweep

    budgets = sweep.DEFAULT_BUDGETS
    if args.budgets:
        budgets = tuple(parse_amount(b, "--budgets") for b in args.budgets.split(",") if b.strip())
        if not budgets:
            raise LmforgeError("--budgets needs at least one FLOP budget, e.g. 2e11,4e11,8e11")
    sizes, workers = _int(args.sizes, "--sizes"), _int(args.workers, "--workers")
    if args.dry_run:
        cfg = sweep.base_config(args.overrides)
        points = sweep.plan_grid(cfg, budgets, sizes)
        print(f"{'budget':>9} {'shape':>8} {'params':>10} {'tokens':>11} {'D/N':>6} {'steps':>6}")
        for p in points:
            print(
                f"{p.budget:>9.2g} {p.n_layer:>3}x{p.n_embd:<4} {p.params:>10,} {p.tokens:>11,} "
                f"{p.tokens / p.params:>6.1f} {p.steps:>6}"
            )
        print(f"{len(points)} points, {sum(p.flops for p in points):.3g} training FLOPs")
        return 0
    sweep.run_sweep(args.out, budgets, sizes, args.overrides, workers)
    return 0
