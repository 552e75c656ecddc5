"""Fidelity and speed of `lmforge eval` against lm-evaluation-harness, same model, same data, one process.

Models (random weights, built here, nothing downloaded), one byte-level BPE tokenizer for both:
  - a tiny GPT-2 (transformers), run by lm-eval's own `hf` model type and by lmforge (HFCausalLM);
  - a tiny lmforge Transformer, run by lm-eval through `parity.make_harness_lm` (lm-eval builds the
    requests and splits the tokens; the wrapper scores naively) and by lmforge (LmforgeLM).
lm-eval reads the local benchmark files through task YAMLs that `include` its own task files.

For every task and metric: lmforge's value, lm-eval's, their difference, and the largest per-request
log-likelihood difference. Timing: wall time of each evaluation (data loading included, lm-eval's
dataset cache warmed first), same batch size, same process.

    python bench/eval_parity.py                       # default slice, writes bench/results/eval.md
    python bench/eval_parity.py --limit 100 --subjects 2 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmforge.eval import evaluate, get_tasks
from lmforge.eval.parity import make_harness_lm, run_lm_eval, subjects_one_per_category, write_lm_eval_tasks
from lmforge.eval.tasks.data import default_data_dir
from lmforge.tiny import tiny_gpt2, tiny_lmforge, tiny_tokenizer

METRIC_KEYS = ("acc", "acc_norm", "word_perplexity", "byte_perplexity", "bits_per_byte")


def lm_eval_lls(res: dict, task: str) -> list[list[float]]:
    """Per document, the log-likelihood of each request, from lm-eval's logged samples."""
    out = []
    for s in sorted(res["samples"][task], key=lambda s: s["doc_id"]):
        r = s["filtered_resps"]
        out.append([float(x[0]) if isinstance(x, (list, tuple)) else float(x) for x in r])
    return out


def compare_run(
    label: str,
    ours_lm,
    theirs_model,
    names: dict[str, str],
    include: Path,
    shots: int | None,
    limit: int,
    batch_size: int,
    task_filter: list[str],
) -> tuple[list[dict], dict]:
    """Run both on the tasks in `task_filter` (lmforge names); returns metric rows and timings."""
    ours_tasks = [t for n in task_filter for t in get_tasks(n)]
    theirs_names = [names[t.name] for t in ours_tasks]
    run_lm_eval(theirs_model, theirs_names, include, shots, 1, batch_size)  # warm lm-eval's dataset cache
    t0 = time.perf_counter()
    theirs = run_lm_eval(theirs_model, theirs_names, include, shots, limit, batch_size)
    t_theirs = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = evaluate(
        ours_lm,
        ours_tasks,
        num_fewshot=shots,
        limit=limit,
        batch_size=batch_size,
        log_samples=True,
        progress=False,
    )
    t_ours = time.perf_counter() - t0
    if ours["errors"]:
        raise SystemExit(f"lmforge failed: {ours['errors']}")
    rows = []
    for t in ours_tasks:
        r, th = ours["tasks"][t.name], theirs["results"][names[t.name]]
        if "loglikelihoods" in (r["samples"][0] if r.get("samples") else {}):
            mine = [s["loglikelihoods"] for s in r["samples"]]
            other = lm_eval_lls(theirs, names[t.name])
            dll = max(abs(a - b) for x, y in zip(mine, other) for a, b in zip(x, y))
        elif r.get("samples"):
            mine = [s["loglikelihood"] for s in r["samples"]]
            other = [x[0] for x in lm_eval_lls(theirs, names[t.name])]
            dll = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(mine, other))  # relative, long documents
        else:
            dll = float("nan")
        for m in METRIC_KEYS:
            if m in r["metrics"] and f"{m},none" in th:
                v, w = r["metrics"][m], float(th[f"{m},none"])
                se, wse = r["stderr"].get(m), th.get(f"{m}_stderr,none")
                rows.append(
                    {
                        "model": label,
                        "task": t.name,
                        "shots": r["num_fewshot"],
                        "metric": m,
                        "ours": v,
                        "theirs": w,
                        "diff": abs(v - w),
                        "se_diff": (
                            abs(se - float(wse)) if isinstance(wse, float) and se is not None else None
                        ),
                        "dll": dll,
                        "n": r["n"],
                    }
                )
    n_req = sum(
        len(s.get("loglikelihoods", [0])) for t in ours["tasks"].values() for s in t.get("samples", [])
    )
    docs = sum(t["n"] for t in ours["tasks"].values())
    return rows, {
        "model": label,
        "shots": shots,
        "tasks": ", ".join(task_filter),
        "docs": docs,
        "requests": n_req,
        "lm_eval_s": t_theirs,
        "lmforge_s": t_ours,
    }


def to_markdown(rows: list[dict], timings: list[dict], args, env: str, tok_size: int) -> str:
    worst = max(r["diff"] for r in rows if not r["metric"].endswith("perplexity"))
    worst_ppl = max(
        (r["diff"] / r["theirs"] for r in rows if r["metric"].endswith("perplexity")), default=0.0
    )
    lines = [
        "# lmforge eval vs lm-evaluation-harness",
        "",
        (
            f"`python bench/eval_parity.py --limit {args.limit} --subjects {args.subjects} --batch-size "
            f"{args.batch_size} --context {args.context} --vocab {args.vocab} --layers {args.layers} --embd "
            f"{args.embd} --threads {args.threads}` — {env}"
        ),
        "",
        (
            f"Models: {args.layers} layers, width {args.embd}, vocabulary {tok_size}, context {args.context} "
            "(random weights)."
        ),
        "",
        (
            "Same random-weight models, same local data (shared/data/benchmarks), the first "
            f"{args.limit} documents of each task (MMLU: {args.subjects} subject(s) per category), "
            "one process. "
            "lm-eval uses its own task files (included by path, pointed at the local files)."
        ),
        "",
        (
            f"**Parity:** largest |lmforge − lm-eval| over all accuracy metrics: {worst:.2e} "
            f"(to 4 decimals: {'equal' if worst < 5e-5 else 'NOT equal'}); perplexities: largest relative "
            f"difference {worst_ppl:.1e}."
        ),
        "",
        (
            "| model | task | shots | metric | lmforge | lm-eval | abs diff | stderr diff "
            "| max per-request Δll | n |"
        ),
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sd = "—" if r["se_diff"] is None else f"{r['se_diff']:.1e}"
        lines.append(
            f"| {r['model']} | {r['task']} | {r['shots']} | {r['metric']} | {r['ours']:.4f} | "
            f"{r['theirs']:.4f} | {r['diff']:.1e} | {sd} | {r['dll']:.1e} | {r['n']} |"
        )
    lines += [
        "",
        "Δll for wikitext is relative (documents of thousands of tokens).",
        "",
        "## Speed (same process, same batch size; wall time incl. data loading)",
        "",
        (
            "| model | tasks | shots | docs | lm-eval s | lmforge s | docs/s lm-eval | docs/s lmforge "
            "| speed-up |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t['model']} | {t['tasks']} | {t['shots']} | {t['docs']} | {t['lm_eval_s']:.1f} | "
            f"{t['lmforge_s']:.1f} | {t['docs'] / t['lm_eval_s']:.1f} | {t['docs'] / t['lmforge_s']:.1f} | "
            f"{t['lm_eval_s'] / t['lmforge_s']:.2f}× |"
        )
    tot_a = sum(t["lm_eval_s"] for t in timings)
    tot_b = sum(t["lmforge_s"] for t in timings)
    lines += ["", f"Total: lm-eval {tot_a:.1f} s, lmforge {tot_b:.1f} s, **{tot_a / tot_b:.2f}×**.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--subjects", type=int, default=1, help="MMLU subjects per category")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--context", type=int, default=256, help="models' context length (small: exercises truncation)"
    )
    ap.add_argument("--vocab", type=int, default=1024, help="tokenizer size (BPE trained on the demo corpus)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=32)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable timings on a shared box)"
    )
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval.md"))
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = default_data_dir()
    tmp = Path(tempfile.mkdtemp(prefix="lmforge_parity_"))
    tok = tiny_tokenizer(vocab_size=args.vocab)
    shape = {"n_layer": args.layers, "n_embd": args.embd}
    gpt2 = tiny_gpt2(tok, n_positions=args.context, save_to=tmp / "gpt2", **shape)
    lmf = tiny_lmforge(tok, block_size=args.context, **shape)
    subjects = subjects_one_per_category(args.subjects)
    names = write_lm_eval_tasks(tmp / "tasks", data_dir, subjects)
    mc0 = ["arc_easy", "arc_challenge", "hellaswag", "truthfulqa_mc1", "truthfulqa_mc2"] + [
        f"mmlu_{s}" for s in subjects
    ]
    few = ["arc_easy", "hellaswag"] + [f"mmlu_{s}" for s in subjects]
    plan = [(0, mc0), (5, few), (0, ["wikitext"])]
    rows, timings = [], []
    hf_args = f"pretrained={tmp / 'gpt2'},dtype=float32"
    for label, ours_lm, theirs in (
        ("gpt2 (hf)", gpt2, hf_args),
        ("lmforge", lmf, make_harness_lm(lmf, args.batch_size)),
    ):
        for shots, tasks in plan:
            limit = 4 if tasks == ["wikitext"] else args.limit
            r, t = compare_run(
                label, ours_lm, theirs, names, tmp / "tasks", shots, limit, args.batch_size, tasks
            )
            rows += r
            timings.append(t)
            print(
                f"{label} {shots}-shot {tasks}: lm-eval {t['lm_eval_s']:.1f}s lmforge {t['lmforge_s']:.1f}s "
                f"max diff {max(x['diff'] for x in r):.2e}",
                file=sys.stderr,
            )
    env = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"lm-eval {__import__('lm_eval').__version__}, transformers {__import__('transformers').__version__}"
    )
    md = to_markdown(rows, timings, args, env, tok.vocab_size)
    print(md)
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        old = Path(args.out).read_text() if args.append and Path(args.out).exists() else ""
        Path(args.out).write_text(old + ("\n---\n\n" if old else "") + md)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
