"""Peak memory and speed of LoRA vs full fine-tuning, through the real `finetune` path.

Each variant runs in its own process (so one's peak cannot hide the other's): build a base
checkpoint of the chosen size, fine-tune it for a few steps on synthetic conversations, report
the peak. On CUDA the peak is torch.cuda.max_memory_allocated; on CPU it is the process's peak
RSS (ru_maxrss), of which a "load only" process (torch + model + data, no training) gives the
floor. Prints a markdown table and the LoRA / full ratios.

    python bench/tune_lora_memory.py [--layers 8 --width 512 --vocab 8192 --steps 4 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "load only": None,
    "full": {"method": "full"},
    "lora r8 q,v": {"method": "lora", "lora": {"rank": 8, "targets": ["q_proj", "v_proj"]}},
    "lora r8 all linear": {"method": "lora", "lora": {"rank": 8, "targets": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "up_proj", "down_proj", "gate_proj"]}},
}


def make_base(root: Path, args) -> tuple[Path, Path]:
    import torch

    from lmforge.config import RunConfig
    from lmforge.data.config import TokenizerConfig
    from lmforge.model import ModelConfig, Transformer
    from lmforge.tokenizer import train_tokenizer
    from lmforge.train.checkpoint import save_checkpoint

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnoprstu") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    convs = [[{"role": "user", "content": " ".join(rng.choices(words, k=40))},
              {"role": "assistant", "content": " ".join(rng.choices(words, k=80))}] for _ in range(200)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    tok = train_tokenizer([m["content"] for c in convs for m in c], TokenizerConfig(vocab_size=1024))
    cfg = RunConfig(name="base", out_dir=str(root))
    cfg.model = ModelConfig(vocab_size=args.vocab, block_size=args.seq_len, n_layer=args.layers, n_embd=args.width,
                            n_head=args.width // 64, pos="rope", activation="swiglu", norm="rmsnorm", bias=False,
                            tie_embeddings=False)
    run = root / "base"
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, Transformer(cfg.model), {}, {"step": 0}, cfg, keep_last=1)
    return run, data


def child(args) -> None:
    import torch

    from lmforge.config import from_dict
    from lmforge.tune.config import FinetuneConfig
    from lmforge.tune.sft import finetune, peak_memory_mb

    torch.set_num_threads(args.threads)
    variant = VARIANTS[args.child]
    if variant is None:  # the floor: import, load the model, read the data; no training
        from lmforge.train.checkpoint import load_model
        from lmforge.tune.formats import load_conversations

        load_model(args.base, device=args.device)
        load_conversations(args.data)
        peak, kind = peak_memory_mb(torch.device(args.device))
        print(json.dumps({"peak_mb": peak, "kind": kind}))
        return
    cfg = from_dict(FinetuneConfig, {**variant, "init": args.base, "data": args.data, "out": args.out,
                                     "max_steps": args.steps, "batch_size": args.batch, "eval_every": 0,
                                     "log_every": 1, "chat_prompts": [], "device": args.device,
                                     "val_fraction": 0.05})
    r = finetune(cfg, log=lambda m: None)
    print(json.dumps({"peak_mb": r.peak_memory_mb, "kind": r.memory_kind, "trainable": r.trainable_params,
                      "total": r.total_params, "tokens_per_s": r.tokens_per_s}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", dest="seq_len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child"), ap.add_argument("--base"), ap.add_argument("--data"), ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        base, data = make_base(Path(tmp), args)
        rows = {}
        for i, name in enumerate(VARIANTS):
            cmd = [sys.executable, __file__, "--child", name, "--base", str(base), "--data", str(data),
                   "--out", str(Path(tmp) / f"out{i}")] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                                          if k not in ("child", "base", "data", "out")]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                sys.exit(f"{name} failed:\n{res.stderr[-2000:]}")
            rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    floor = rows["load only"]["peak_mb"]
    full = rows["full"]
    print(f"model: {args.layers} layers x {args.width}, vocab {args.vocab} (untied), {full['total']:,} parameters; "
          f"batch {args.batch} x {args.seq_len} tokens, {args.steps} steps, device {args.device}, "
          f"memory = {full['kind']}\n")
    print("| variant | trainable params | peak MB | peak - load-only MB | vs full (above load-only) | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        if name == "load only":
            print(f"| load only (no training) | - | {floor:,.0f} | 0 | - | - |")
            continue
        over = r["peak_mb"] - floor
        print(f"| {name} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%) | {r['peak_mb']:,.0f} | "
              f"{over:,.0f} | {over / (full['peak_mb'] - floor):.2f}x | {r['tokens_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
