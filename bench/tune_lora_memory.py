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

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VARIANTS = {
    "load only": None,
    "full": {"method": "full"},
    "lora r8 q,v": {"method": "lora", "lora": {"rank": 8, "targets": ["q_proj", "v_proj"]}},
    "lora r8 all linear": {"method": "lora", "lora": {"rank": 8, "targets": ALL}},
    "lora r8 all linear, dropout 0": {"method": "lora", "lora": {"rank": 8, "dropout": 0.0, "targets": ALL}},
}


def make_base(root: Path, args) -> tuple[Path, Path]:

    from lmforge.config import RunConfig
    from lmforge.model import ModelConfig, Transformer
    from lmforge.tokenizer import TokenizerConfig, train_tokenizer
    from lmforge.train.checkpoint import save_checkpoint

    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnoprstu") for _ in range(rng.randint(2, 8))) for _ in range(400)
    ]
    convs = [
        [
            {"role": "user", "content": " ".join(rng.choices(words, k=40))},
            {"role": "assistant", "content": " ".join(rng.choices(words, k=80))},
        ]
        for _ in range(200)
    ]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    tok = train_tokenizer([m["content"] for c in convs for m in c], TokenizerConfig(vocab_size=1024))
    cfg = RunConfig(name="base", out_dir=str(root))
    cfg.model = ModelConfig(
        vocab_size=args.vocab,
        block_size=args.seq_len,
        n_layer=args.layers,
        n_embd=args.width,
        n_head=args.width // 64,
        pos="rope",
        activation="swiglu",
        norm="rmsnorm",
        bias=False,
        tie_embeddings=False,
    )
    run = root / "base"
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, Transformer(cfg.model), {}, {"step": 0}, cfg, keep_last=1)
    return run, data


def tensor_bytes(cfg, args) -> dict:
    """Exact bytes of weights, gradients, optimizer state and saved activations for one step."""
    import torch

    from lmforge.chat.template import encode_chat
    from lmforge.train.checkpoint import load_model
    from lmforge.train.optim import param_groups
    from lmforge.tune.formats import load_conversations
    from lmforge.tune.lora import apply_lora
    from lmforge.tune.pack import Example, batch_loss, make_batches
    from lmforge.tune.sft import find_tokenizer

    model, _ = load_model(args.base)
    model.train()
    tok = find_tokenizer(Path(args.base), Path(args.base))
    if cfg.method == "lora":
        apply_lora(model, cfg.lora)
    convs = load_conversations(args.data).conversations
    exs = [Example(*encode_chat(c, tok)) for c in convs]
    exs = [Example(e.ids[: args.seq_len + 1], e.mask[: args.seq_len + 1]) for e in exs]
    batch = make_batches(exs, "pack", args.seq_len, args.batch, tok.pad_id)[0]
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in weights:  # a frozen weight kept for backward is not an activation
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = batch_loss(model, batch)
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-4)
    loss.backward()
    opt.step()
    mb = 2**20
    params = list(model.parameters())
    out = {
        "weights": sum(p.numel() * p.element_size() for p in params) / mb,
        "grads": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None) / mb,
        "optimizer": sum(
            t.numel() * t.element_size()
            for s in opt.state.values()
            for t in s.values()
            if torch.is_tensor(t) and t.dim() > 0
        )
        / mb,
        "activations": sum(saved.values()) / mb,
    }
    out["total"] = sum(out.values())
    return out


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
    cfg = from_dict(
        FinetuneConfig,
        {
            **variant,
            "init": args.base,
            "data": args.data,
            "out": args.out,
            "max_steps": args.steps,
            "batch_size": args.batch,
            "eval_every": 0,
            "log_every": 1,
            "chat_prompts": [],
            "device": args.device,
            "val_fraction": 0.05,
        },
    )
    r = finetune(cfg, log=lambda m: None)
    print(
        json.dumps(
            {
                "peak_mb": r.peak_memory_mb,
                "kind": r.memory_kind,
                "trainable": r.trainable_params,
                "total": r.total_params,
                "tokens_per_s": r.tokens_per_s,
                "bytes": tensor_bytes(cfg, args),
            }
        )
    )


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
            cmd = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--base",
                str(base),
                "--data",
                str(data),
                "--out",
                str(Path(tmp) / f"out{i}"),
            ] + [
                f"--{k.replace('_', '-')}={v}"
                for k, v in vars(args).items()
                if k not in ("child", "base", "data", "out")
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                sys.exit(f"{name} failed:\n{res.stderr[-2000:]}")
            rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    floor = rows["load only"]["peak_mb"]
    full = rows["full"]
    print(
        f"model: {args.layers} layers x {args.width}, vocab {args.vocab} (untied), {full['total']:,} "
        "parameters; "
        f"batch {args.batch} x {args.seq_len} tokens, {args.steps} steps, device {args.device}, "
        f"memory = {full['kind']}\n"
    )
    print(
        "| variant | trainable params | peak MB | peak - load-only MB | vs full (above load-only) | tokens/s "
        "|"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        if name == "load only":
            print(f"| load only (no training) | - | {floor:,.0f} | 0 | - | - |")
            continue
        over = r["peak_mb"] - floor
        print(
            f"| {name} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%) | {r['peak_mb']:,.0f} "
            "| "
            f"{over:,.0f} | {over / (full['peak_mb'] - floor):.2f}x | {r['tokens_per_s']:,.0f} |"
        )
    print("\nTensor bytes of one training step (MB), counted exactly:\n")
    print("| variant | weights | gradients | AdamW state | saved activations | total | vs full |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        if name != "load only":
            b = r["bytes"]
            print(
                f"| {name} | {b['weights']:,.1f} | {b['grads']:,.1f} | {b['optimizer']:,.1f} | "
                f"{b['activations']:,.1f} | {b['total']:,.1f} | {b['total'] / full['bytes']['total']:.2f}x |"
            )


if __name__ == "__main__":
    main()
