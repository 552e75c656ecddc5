"""Generation speed: lmforge's generate vs `transformers.generate` on the same exported model, CPU, greedy.

For each model (a run given with --run, or random Llama- and GPT-2-shaped models of the tiny
recipe's size built here), the run is exported with `lmforge export`, loaded back with
`AutoModelForCausalLM`, and both generate --new tokens after a --prompt-token prompt, never stopping
early (no end-of-text stop on either side). lmforge runs twice: eager, and with its decoding step
compiled (`sample.compile`). Timed repeats alternate lmforge eager / compiled / transformers (ABC
ABC ...), each side reports its median; the greedy tokens of every side are checked to be identical
first. Each side gets one untimed warm-up call; the compiled side's compile (its first call less a
timed call, with inductor's on-disk cache off, so the cold cost) is reported as its own column.

Batch 1 runs lmforge's `generate_tokens`; batch 8 its `generate_batch` (one KV cache of batch 8),
against transformers generating the same 8 prompts in one batch.

    python bench/hf_generate_speed.py                       # tiny-recipe shape, random weights
    python bench/hf_generate_speed.py --run runs/tiny --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmforge.export import export_run
from lmforge.serve.batching import generate_batch
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate_tokens
from lmforge.train.checkpoint import load_model

SHAPES = {  # the tiny recipe's size (lmforge/recipes/tiny.yaml); gpt2 swaps in GPT-2's choices
    "llama": {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "swiglu",
        "bias": False,
        "tie_embeddings": True,
    },
    "gpt2": {
        "pos": "learned",
        "norm": "layernorm",
        "activation": "gelu",
        "bias": True,
        "tie_embeddings": True,
    },
}


def random_run(root: Path, name: str, shape: dict, vocab: int) -> Path:
    from lmforge.model import ModelConfig
    from lmforge.tiny import random_run as save
    from lmforge.tiny import tiny_tokenizer

    tok = tiny_tokenizer(vocab_size=vocab)
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=4, n_head=4, n_embd=256, **shape)
    return save(root / name, tok, cfg)


def lmforge_generate(model, prompts: list[list[int]], n: int, compile: bool = False) -> list[list[int]]:
    cfg = SampleConfig(max_new_tokens=n, temperature=0.0, top_k=None, compile=compile)
    if len(prompts) == 1:
        return [list(generate_tokens(model, prompts[0], cfg, stop_ids=()))]
    return generate_batch(model, prompts, cfg, stop_ids=())


def hf_generate(hf, prompts: list[list[int]], n: int) -> list[list[int]]:
    import transformers

    gen = transformers.GenerationConfig(
        max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=1
    )
    ids = torch.tensor(prompts)  # equal lengths: no padding, so batching changes no result
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
    return out[:, ids.shape[1] :].tolist()


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(label: str, run: Path, tmp: Path, args) -> list[dict]:
    import transformers

    export_run(run, tmp / f"hf_{label}")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp / f"hf_{label}", dtype=torch.float32).eval()
    model, cfg = load_model(run)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(7, cfg.vocab_size, (8, args.prompt), generator=g).tolist()
    n = min(args.new, cfg.block_size - args.prompt)
    rows = []
    for batch in (1, 8):
        ps = prompts[:batch]
        sides = {
            "eager": lambda ps=ps: lmforge_generate(model, ps, n),
            "compiled": lambda ps=ps: lmforge_generate(model, ps, n, compile=True),
            "transformers": lambda ps=ps: hf_generate(hf, ps, n),
        }
        if args.no_compile:
            del sides["compiled"]
        # Warm-up: one untimed call per side, which also gives the tokens to compare; the compiled
        # side's first call includes compiling, reported apart from the timed calls.
        tokens, first = {}, {}
        for side, fn in sides.items():
            t0 = time.perf_counter()
            tokens[side] = fn()
            first[side] = time.perf_counter() - t0
        times = {side: [] for side in sides}
        for _ in range(args.repeats):  # ABC order: drift in machine speed hits every side alike
            for side, fn in sides.items():
                times[side].append(_once(fn))
        tokens_made = batch * n
        rate = {side: tokens_made / statistics.median(ts) for side, ts in times.items()}
        row = {
            "model": label,
            "batch": batch,
            "tokens": tokens_made,
            "params": model.num_params(),
            "theirs": rate["transformers"],
            "spread": {},
            "same": {},
        }
        for side in sides:
            row["spread"][side] = (tokens_made / max(times[side]), tokens_made / min(times[side]))
            if side != "transformers":
                row[side] = rate[side]
                row[f"ratio_{side}"] = rate[side] / rate["transformers"]
                row["same"][side] = tokens[side] == tokens["transformers"]
        if "compiled" in sides:
            row["compile_s"] = first["compiled"] - statistics.median(times["compiled"])
        rows.append(row)
        print(
            f"{label} batch {batch}: "
            + ", ".join(
                f"{side} {rate[side]:.0f} tok/s"
                + (f" ({row[f'ratio_{side}']:.2f}x)" if side != "transformers" else "")
                for side in sides
            )
            + f", identical tokens: {row['same']}",
            file=sys.stderr,
        )
    return rows


def to_markdown(rows: list[dict], args, env: str) -> str:
    cmd = (
        f"`python bench/hf_generate_speed.py --prompt {args.prompt} --new {args.new} --repeats "
        f"{args.repeats} "
        f"--threads {args.threads}"
        + (" --no-compile" if args.no_compile else "")
        + "".join(f" --run {r}" for r in args.run or [])
        + "`"
    )
    sides = ["eager"] + ([] if args.no_compile else ["compiled"])
    compile_col = [] if args.no_compile else ["compile s"]
    head = (
        ["model", "params", "batch"]
        + [f"lmforge {s} tok/s" for s in sides]
        + ["transformers tok/s"]
        + [f"{s} / transformers" for s in sides]
        + compile_col
        + ["identical greedy tokens"]
        + [f"spread {s}" for s in sides + ["transformers"]]
    )
    numeric = 3 + 2 * len(sides) + len(compile_col)  # columns after model, right-aligned
    lines = [
        "## Generation speed: lmforge vs transformers.generate (same exported model, CPU, greedy)",
        "",
        f"{cmd} — {env}",
        "",
        (
            f"Prompt {args.prompt} tokens, {args.new} new tokens per sequence, no early stop; tokens/s = "
            "generated tokens / wall time (prefill included), median of the repeats, run in ABC order. "
            "Compiled = `SampleConfig(compile=True)`; its one-time compile is excluded from the timed "
            "runs and given as its own column."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * numeric + "---|" * (2 + len(sides)),
    ]
    for r in rows:
        cells = (
            [r["model"], f"{r['params'] / 1e6:.2f}M", str(r["batch"])]
            + [f"{r[s]:.0f}" for s in sides]
            + [f"{r['theirs']:.0f}"]
            + [f"**{r[f'ratio_{s}']:.2f}×**" for s in sides]
            + [f"{r['compile_s']:.1f}" for _ in compile_col]
            + ["yes" if all(r["same"].values()) else "NO"]
            + [f"{r['spread'][s][0]:.0f}–{r['spread'][s][1]:.0f}" for s in sides + ["transformers"]]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", action="append", help="an lmforge run directory (repeatable); default: random models"
    )
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    ap.add_argument("--new", type=int, default=128, help="new tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--vocab", type=int, default=2048, help="tokenizer size of the random models (tiny recipe)"
    )
    ap.add_argument(
        "--no-compile", action="store_true", help="skip lmforge's compiled decoding (sample.compile)"
    )
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # The compile column is the cold cost: without this, inductor's on-disk cache makes reruns cheaper.
    torch._inductor.config.force_disable_caches = True
    import transformers

    transformers.logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="lmforge_hf_speed_"))
    runs = (
        {Path(r).name: Path(r) for r in args.run}
        if args.run
        else {k: random_run(tmp / "runs", k, s, args.vocab) for k, s in SHAPES.items()}
    )
    rows = [row for label, run in runs.items() for row in bench(label, run, tmp, args)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end"
    )
    md = to_markdown(rows, args, env)
    print(md)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
