"""lm-evaluation-harness on an exported lmforge model, next to `lmforge eval` on the same model and data.

For each model (a run given with --run, or tiny random Llama- and GPT-2-shaped runs built here):
  1. `lmforge export` it to a Hugging Face folder;
  2. run lm-eval's own `hf` model type on that folder (transformers does the forward passes),
     with lm-eval's own ARC-Easy and HellaSwag task files pointed at the local data
     (docs/eval-semantics.md §11);
  3. run lmforge's evaluator (LmforgeLM, the lmforge Transformer) on the run itself;
and print both accuracies (acc, acc_norm) and the largest per-request log-likelihood difference.
Equal to 4 decimals is the bar. With --serve, also:
  4. serve the run with `lmforge serve` (loopback) and run lm-eval's `local-completions` model
     against it (prompt log-probabilities via `echo` + `logprobs`, the exported tokenizer).

    python bench/hf_lm_eval.py                      # tiny random llama + gpt2, 200 docs per task
    python bench/hf_lm_eval.py --run runs/tiny --limit 500 --out bench/results/hf_lm_eval.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmforge.eval import LmforgeLM, evaluate, get_tasks
from lmforge.eval.parity import run_lm_eval, write_lm_eval_tasks
from lmforge.eval.tasks.data import default_data_dir
from lmforge.export import export_run

TASKS = ("arc_easy", "hellaswag")
SHAPES = {
    "llama": {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "swiglu",
        "bias": False,
        "n_kv_head": 2,
        "tie_embeddings": False,
    },
    "gpt2": {
        "pos": "learned",
        "norm": "layernorm",
        "activation": "gelu",
        "bias": True,
        "tie_embeddings": True,
    },
}


def tiny_run(root: Path, name: str, shape: dict, vocab: int, context: int, layers: int, embd: int) -> Path:
    """A run directory with random weights (std 0.1, so the choices' scores differ)."""
    from lmforge.model import ModelConfig
    from lmforge.tiny import random_run, tiny_tokenizer

    tok = tiny_tokenizer(vocab_size=vocab)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=context,
        n_layer=layers,
        n_head=4,
        n_embd=embd,
        init_std=0.1,
        **shape,
    )
    return random_run(root / name, tok, cfg)


def lm_eval_lls(res: dict, task: str) -> list[list[float]]:
    out = []
    for s in sorted(res["samples"][task], key=lambda s: s["doc_id"]):
        out.append([float(x[0]) if isinstance(x, (list, tuple)) else float(x) for x in s["filtered_resps"]])
    return out


def served_lm_eval(run: Path, hf: Path, names: list[str], tmp: Path, limit: int) -> dict:
    """lm-eval's `local-completions` against the run under `lmforge serve` on loopback."""
    from lmforge.serve.engine import ServedModel
    from lmforge.serve.server import RunningServer, create_app

    model = ServedModel.load(f"m={run}")
    with RunningServer(create_app([model])) as srv:
        args = (
            f"model=m,base_url={srv.url}/v1/completions,tokenizer={hf},tokenizer_backend=huggingface,"
            "tokenized_requests=True,num_concurrent=1,max_retries=1"
        )
        return run_lm_eval(args, names, tmp / "tasks", 0, limit, 1, model_type="local-completions")


def compare(
    label: str, run: Path, tmp: Path, names: dict, limit: int, batch_size: int, serve: bool = False
) -> tuple[list[dict], dict]:
    hf = tmp / f"hf_{label}"
    t0 = time.perf_counter()
    summary = export_run(run, hf)
    t_export = time.perf_counter() - t0
    theirs_names = [names[t] for t in TASKS]
    t0 = time.perf_counter()
    theirs = run_lm_eval(f"pretrained={hf},dtype=float32", theirs_names, tmp / "tasks", 0, limit, batch_size)
    t_theirs = time.perf_counter() - t0
    served, t_served = None, 0.0
    if serve:
        t0 = time.perf_counter()
        served = served_lm_eval(run, hf, theirs_names, tmp, limit)
        t_served = time.perf_counter() - t0
    tasks = [t for n in TASKS for t in get_tasks(n)]
    t0 = time.perf_counter()
    ours = evaluate(
        LmforgeLM.from_run(run),
        tasks,
        num_fewshot=0,
        limit=limit,
        batch_size=batch_size,
        log_samples=True,
        progress=False,
    )
    t_ours = time.perf_counter() - t0
    if ours["errors"]:
        raise SystemExit(f"lmforge eval failed: {ours['errors']}")
    rows = []
    for t in tasks:
        r, th = ours["tasks"][t.name], theirs["results"][names[t.name]]
        mine = [s["loglikelihoods"] for s in r["samples"]]
        other = lm_eval_lls(theirs, names[t.name])
        dll = max(abs(a - b) for x, y in zip(mine, other) for a, b in zip(x, y))
        dll_served = None
        if served is not None:
            dll_served = max(
                abs(a - b) for x, y in zip(mine, lm_eval_lls(served, names[t.name])) for a, b in zip(x, y)
            )
        for m in ("acc", "acc_norm"):
            v, w = r["metrics"][m], float(th[f"{m},none"])
            row = {
                "model": f"{label} ({summary['hf_class']})",
                "task": t.name,
                "metric": m,
                "ours": v,
                "theirs": w,
                "diff": abs(v - w),
                "dll": dll,
                "n": r["n"],
            }
            if served is not None:
                sv = float(served["results"][names[t.name]][f"{m},none"])
                row.update(served=sv, diff=max(row["diff"], abs(v - sv)), dll_served=dll_served)
            rows.append(row)
    return rows, {
        "model": label,
        "export_s": t_export,
        "lm_eval_s": t_theirs,
        "lmforge_s": t_ours,
        "served_s": t_served,
    }


def to_markdown(rows: list[dict], times: list[dict], args, env: str) -> str:
    worst = max(r["diff"] for r in rows)
    lines = [
        "## lm-evaluation-harness on an exported model vs `lmforge eval`",
        "",
        f"`python bench/hf_lm_eval.py --limit {args.limit} --batch-size {args.batch_size}"
        + "".join(f" --run {r}" for r in args.run or [])
        + f"` — {env}",
        "",
        (
            "Each model is exported with `lmforge export`; lm-eval's `hf` model type loads the folder with "
            "transformers, lmforge evaluates the run itself. Same local data, lm-eval's own task files, the "
            f"first {args.limit} documents of each task, 0-shot."
        ),
        "",
        (
            f"**Largest |lmforge − lm-eval| accuracy difference: {worst:.1e} "
            f"({'equal' if worst < 5e-5 else 'NOT equal'} to 4 decimals).**"
        ),
        "",
        (
            "| model | task | metric | lmforge eval | lm-eval (hf, exported) | lm-eval (local-completions, "
            "lmforge serve) | abs diff | max per-request Δll (hf / served) | n |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        served = f"{r['served']:.4f}" if "served" in r else "—"
        dll = f"{r['dll']:.1e}" + (f" / {r['dll_served']:.1e}" if "dll_served" in r else "")
        lines.append(
            f"| {r['model']} | {r['task']} | {r['metric']} | {r['ours']:.4f} | {r['theirs']:.4f} | "
            f"{served} | {r['diff']:.1e} | {dll} | {r['n']} |"
        )
    lines += [
        "",
        "| model | export s | lm-eval (hf) s | lm-eval (served) s | lmforge eval s |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in times:
        lines.append(
            f"| {t['model']} | {t['export_s']:.1f} | {t['lm_eval_s']:.1f} | {t['served_s']:.1f} | "
            f"{t['lmforge_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", action="append", help="an lmforge run directory (repeatable); default: tiny random runs"
    )
    ap.add_argument("--limit", type=int, default=200, help="documents per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=256, help="context of the tiny runs")
    ap.add_argument("--vocab", type=int, default=1024, help="tokenizer size of the tiny runs")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    ap.add_argument(
        "--serve",
        action="store_true",
        help="also run lm-eval's local-completions against the run under lmforge serve",
    )
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="lmforge_hf_lm_eval_"))
    names = write_lm_eval_tasks(tmp / "tasks", default_data_dir(), [])
    if args.run:
        runs = {Path(r).name: Path(r) for r in args.run}
    else:
        runs = {
            k: tiny_run(tmp / "runs", k, s, args.vocab, args.context, args.layers, args.embd)
            for k, s in SHAPES.items()
        }
    rows, times = [], []
    for label, run in runs.items():
        r, t = compare(label, run, tmp, names, args.limit, args.batch_size, args.serve)
        rows += r
        times.append(t)
        print(
            f"{label}: max accuracy diff {max(x['diff'] for x in r):.1e}, lm-eval {t['lm_eval_s']:.0f}s, "
            f"lmforge {t['lmforge_s']:.0f}s",
            file=sys.stderr,
        )
    env = (
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs; "
        f"lm-eval {__import__('lm_eval').__version__}, transformers {__import__('transformers').__version__}"
    )
    md = to_markdown(rows, times, args, env)
    print(md)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    return 0 if max(r["diff"] for r in rows) < 5e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
