"""Distributed training throughput: the real trainer under torchrun in several (pp, dp, tp) layouts,
against one process in the same invocation.

For each layout it launches `torchrun --nproc_per_node pp*dp*tp` running lmforge.train.loop.train
for --steps steps on a throwaway tokenizer and shards made from the embedded corpus, reads the
per-step tokens/s that rank 0 logs in metrics.jsonl (median over the steps after --warmup), and
prints tokens/s, tokens/s per process, MFU where the device's peak is known (metrics.peak_flops),
and `ratio vs 1 process: X.XXx` against the single-process run measured first. The global batch
is the same in every layout (train.batch_size is split over dp), so this is strong scaling.

    python bench/train_distributed.py --device cpu --layouts 1x2x1,1x1x2,2x1x1      # gloo, 2 processes each
    python bench/train_distributed.py --device cuda --precision bf16 --layouts 1x8x1,1x4x2,2x2x2 \\
        --n-layer 12 --n-embd 768 --n-head 12 --block-size 1024 --batch-size 64 --vocab-size 50304

A layout is PPxDPxTP. Layouts with pp > 1 use untied embeddings in every run, the baseline included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without install

WORKER = textwrap.dedent("""
    import json, sys
    from lmforge.config import RunConfig, from_dict
    from lmforge.tokenizer import Tokenizer
    from lmforge.train.loop import train
    shards, tok_path, run_dir, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    train(from_dict(RunConfig, cfg), shards, Tokenizer.load(tok_path), run_dir)
""")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", default="1x2x1,1x1x2,2x1x1", help="comma-separated PPxDPxTP meshes")
    p.add_argument("--dp-mode", default="fsdp", choices=["fsdp", "ddp"])
    p.add_argument("--pp-schedule", default="1f1b", choices=["gpipe", "1f1b"])
    p.add_argument("--pp-microbatches", type=int, default=0, help="0 = pp")
    p.add_argument("--sequence-parallel", action="store_true")
    p.add_argument("--activation-checkpoint", default="none", choices=["none", "full", "selective"])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16, help="global sequences per step (split over dp)")
    p.add_argument("--vocab-size", type=int, default=2048, help="tokenizer (and model) vocabulary")
    p.add_argument("--documents", type=int, default=600, help="embedded-corpus documents to tokenize")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="logged steps left out of the median")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    return p.parse_args(argv)


def make_data(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from lmforge.data.config import DataConfig
    from lmforge.data.documents import embedded_corpus
    from lmforge.data.shards import encode_corpus
    from lmforge.tokenizer import TokenizerConfig, train_tokenizer

    docs = list(islice(embedded_corpus(), args.documents))
    tok = train_tokenizer([d["text"] for d in docs], TokenizerConfig(vocab_size=args.vocab_size))
    tok.save(root / "tokenizer.json")
    encode_corpus(docs, tok, root / "shards", DataConfig(workers=1, val_fraction=0.05))
    return root / "shards", root / "tokenizer.json"


def run_config(args: argparse.Namespace, mesh: tuple[int, int, int], untied: bool) -> dict:
    pp, dp, tp = mesh
    vocab = args.vocab_size + (-args.vocab_size) % 8  # divisible by any tp up to 8
    model = {
        "vocab_size": vocab,
        "n_layer": args.n_layer,
        "n_embd": args.n_embd,
        "n_head": args.n_head,
        "block_size": args.block_size,
        "activation": "swiglu",
        "norm": "rmsnorm",
        "pos": "rope",
        "bias": False,
        "tie_embeddings": not untied,
    }
    train = {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "warmup_steps": 2,
        "log_every": 1,
        "eval_every": 0,
        "eval_tokens": 0,
        "ckpt_every": 0,
        "keep_last": 1,
        "threads": args.threads,
        "tensorboard": False,
        "precision": args.precision,
        "device": args.device,
        "progress": "lines",
    }
    parallel = {
        "pp": pp,
        "dp": dp,
        "tp": tp,
        "dp_mode": args.dp_mode,
        "pp_schedule": args.pp_schedule,
        "pp_microbatches": args.pp_microbatches,
        "sequence_parallel": args.sequence_parallel,
        "activation_checkpoint": args.activation_checkpoint,
    }
    return {"model": model, "train": train, "parallel": parallel}


def measure(mesh: tuple[int, int, int], cfg: dict, data: tuple[Path, Path], work: Path, warmup: int) -> dict:
    shards, tok = data
    run = work / "x".join(map(str, mesh))
    nproc = mesh[0] * mesh[1] * mesh[2]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(work / "worker.py"),
        str(shards),
        str(tok),
        str(run),
        json.dumps(cfg),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(cfg["train"]["threads"])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"layout {mesh} failed:\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "train"][warmup:]
    tok_s = statistics.median(r["tokens_per_s"] for r in steps)
    mfus = [r["mfu"] for r in steps if r.get("mfu") is not None]
    return {
        "mesh": "x".join(map(str, mesh)),
        "processes": nproc,
        "tokens_per_s": tok_s,
        "tokens_per_s_per_process": tok_s / nproc,
        "mfu": statistics.median(mfus) if mfus else None,
        "final_loss": steps[-1]["loss"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    meshes = [tuple(int(v) for v in s.lower().split("x")) for s in args.layouts.split(",")]
    if any(len(m) != 3 or min(m) < 1 for m in meshes):
        raise SystemExit(f"--layouts must be PPxDPxTP triples, got {args.layouts}")
    untied = any(m[0] > 1 for m in meshes)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "worker.py").write_text(WORKER)
        data = make_data(work, args)
        results = []
        for mesh in [(1, 1, 1), *meshes]:
            results.append(measure(mesh, run_config(args, mesh, untied), data, work, args.warmup))
    base = results[0]["tokens_per_s"]
    print(
        f"{args.n_layer} layers x {args.n_embd}, T={args.block_size}, global batch {args.batch_size}, "
        f"{args.precision} on {args.device}, dp_mode={args.dp_mode}, pp schedule {args.pp_schedule}, "
        f"{args.steps} steps (median after {args.warmup})"
    )
    print(
        f"{'mesh pp x dp x tp':>18} {'procs':>5} {'tokens/s':>10} {'per proc':>9} {'mfu':>6}  ratio vs 1 "
        "process"
    )
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(
            f"{r['mesh']:>18} {r['processes']:>5} {r['tokens_per_s']:>10,.0f} "
            f"{r['tokens_per_s_per_process']:>9,.0f} "
            f"{mfu:>6}  ratio vs 1 process: {r['tokens_per_s'] / base:.2f}x"
        )
    if args.json:
        print(json.dumps({"args": vars(args), "results": results}))


if __name__ == "__main__":
    main()
