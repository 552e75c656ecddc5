"""Generation speed: lmforge's generate vs `transformers.generate` on the same exported model, CPU, greedy.

For each model (a run given with --run, or random Llama- and GPT-2-shaped models of the tiny
recipe's size built here), the run is exported with `lmforge export`, loaded back with
`AutoModelForCausalLM`, and both generate --new tokens after a --prompt-token prompt, never stopping
early (no end-of-text stop on either side). Timed repeats alternate lmforge / transformers (ABAB),
each side reports its median; the greedy tokens of both are checked to be identical first.

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
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate_batch, generate_tokens
from lmforge.train.checkpoint import load_model

SHAPES = {  # the tiny recipe's size (lmforge/recipes/tiny.yaml); gpt2 swaps in GPT-2's choices
    "llama": {"pos": "rope", "norm": "rmsnorm", "activation": "swiglu", "bias": False, "tie_embeddings": True},
    "gpt2": {"pos": "learned", "norm": "layernorm", "activation": "gelu", "bias": True, "tie_embeddings": True},
}


def random_run(root: Path, name: str, shape: dict, vocab: int) -> Path:
    from lmforge.config import RunConfig
    from lmforge.eval.tiny import tiny_tokenizer
    from lmforge.model import ModelConfig, Transformer
    from lmforge.train.checkpoint import save_checkpoint

    tok = tiny_tokenizer(vocab_size=vocab)
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=4, n_head=4, n_embd=256, **shape)
    torch.manual_seed(0)
    run = root / name
    run.mkdir(parents=True)
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, Transformer(cfg), {}, {"step": 0}, RunConfig(name=name, out_dir=str(root), model=cfg), 1)
    return run


def lmforge_generate(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    cfg = SampleConfig(max_new_tokens=n, temperature=0.0, top_k=None)
    if len(prompts) == 1:
        return [list(generate_tokens(model, prompts[0], cfg, stop_ids=()))]
    return generate_batch(model, prompts, cfg, stop_ids=())


def hf_generate(hf, prompts: list[list[int]], n: int) -> list[list[int]]:
    import transformers

    gen = transformers.GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                                        pad_token_id=1)
    ids = torch.tensor(prompts)  # equal lengths: no padding, so batching changes no result
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
    return out[:, ids.shape[1]:].tolist()


def timed(fn, repeats: int) -> list[float]:
    return [_once(fn) for _ in range(repeats)]


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
    prompts = torch.randint(7, cfg.model.vocab_size, (8, args.prompt), generator=g).tolist()
    n = min(args.new, cfg.model.block_size - args.prompt)
    rows = []
    for batch in (1, 8):
        ps = prompts[:batch]
        ours, theirs = lmforge_generate(model, ps, n), hf_generate(hf, ps, n)  # also the warm-up
        same = ours == theirs
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):  # ABAB: drift in machine speed hits both sides alike
            t_ours.append(_once(lambda ps=ps: lmforge_generate(model, ps, n)))
            t_theirs.append(_once(lambda ps=ps: hf_generate(hf, ps, n)))
        tokens = batch * n
        a, b = tokens / statistics.median(t_ours), tokens / statistics.median(t_theirs)
        rows.append({"model": label, "batch": batch, "tokens": tokens, "ours": a, "theirs": b, "ratio": a / b,
                     "same": same, "spread_ours": (tokens / max(t_ours), tokens / min(t_ours)),
                     "spread_theirs": (tokens / max(t_theirs), tokens / min(t_theirs)),
                     "params": model.num_params()})
        print(f"{label} batch {batch}: lmforge {a:.0f} tok/s, transformers {b:.0f} tok/s, {a / b:.2f}x, "
              f"identical tokens: {same}", file=sys.stderr)
    return rows


def to_markdown(rows: list[dict], args, env: str) -> str:
    cmd = (f"`python bench/hf_generate_speed.py --prompt {args.prompt} --new {args.new} --repeats {args.repeats} "
           f"--threads {args.threads}" + "".join(f" --run {r}" for r in args.run or []) + "`")
    lines = ["## Generation speed: lmforge vs transformers.generate (same exported model, CPU, greedy)", "",
             f"{cmd} — {env}", "",
             (f"Prompt {args.prompt} tokens, {args.new} new tokens per sequence, no early stop; tokens/s = "
              "generated tokens / wall time (prefill included), median of the repeats, ABAB order."), "",
             ("| model | params | batch | lmforge tok/s | transformers tok/s | lmforge / transformers | "
             "identical greedy tokens | spread lmforge | spread transformers |"),
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['batch']} | {r['ours']:.0f} | "
                     f"{r['theirs']:.0f} | "
                     f"**{r['ratio']:.2f}×** | {'yes' if r['same'] else 'NO'} | "
                     f"{r['spread_ours'][0]:.0f}–{r['spread_ours'][1]:.0f} | "
                     f"{r['spread_theirs'][0]:.0f}–{r['spread_theirs'][1]:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", help="an lmforge run directory (repeatable); default: random models")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    ap.add_argument("--new", type=int, default=128, help="new tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=2048, help="tokenizer size of the random models (tiny recipe)")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="lmforge_hf_speed_"))
    runs = ({Path(r).name: Path(r) for r in args.run} if args.run else
            {k: random_run(tmp / "runs", k, s, args.vocab) for k, s in SHAPES.items()})
    rows = [row for label, run in runs.items() for row in bench(label, run, tmp, args)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = (f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} thread(s), "
           f"{os.cpu_count()} CPUs, load average {load:.1f} at the end")
    md = to_markdown(rows, args, env)
    print(md)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
