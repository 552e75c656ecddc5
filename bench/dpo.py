"""DPO speed and peak memory: lmforge (full with a frozen reference copy, full with precomputed
reference log-probs, LoRA with the adapters-off reference) against TRL's DPOTrainer (full, and
LoRA through peft) on the same CPU, model, pairs, batch and beta.

The model is the demo's shape (lmforge/recipes/tiny.yaml: 4 layers x 192, 2,048-token vocabulary)
from random weights; TRL gets the same weights as a Hugging Face Llama folder (lmforge export,
the same function: tests/test_export_import.py) and the same tokenizer and chat template (TRL
tokenizes the pairs as lmforge does: tests/test_dpo_trl.py). The pairs are the synthetic sign-off
set (lmforge/tune/dpo_demo.py) that fit the context whole. Each variant runs in its own process
(one's peak RSS cannot hide another's). Steps/s counts the optimizer steps' own time (lmforge: the
training loop's per-step time; TRL: a callback from step begin to step end), not start-up or the
precomputation; peak memory is the process's peak RSS (ru_maxrss), which includes torch itself
and, for TRL, transformers/accelerate.

CPU seconds per step: each variant runs twice in fresh processes, --steps and 3 x --steps, and
(process CPU time of the long run - of the short run) / (2 x --steps) is what one more step costs,
start-up, imports, tokenisation, reference precomputation and the first steps' warm-up cancelling
out. Less load-sensitive than wall time but not immune: on a machine whose cores are busy with other
work (on this VM, vCPUs that likely share a physical core) the same step cost up to 2x the CPU
seconds, so measure on a quiet machine and compare rows of one run.

    python bench/dpo.py [--steps 10 --batch 8 --threads 1 --variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [
    "lmforge full, ref model",
    "lmforge full, ref precomputed",
    "lmforge lora r8",
    "trl full, ref model",
    "trl full, ref precomputed",
    "trl lora r8 (peft)",
]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
BETA, LR = 0.1, 1e-4


def make_base(root: Path) -> Path:
    import torch

    from lmforge.config import RunConfig
    from lmforge.export.hf_export import export_model
    from lmforge.model import ModelConfig, Transformer
    from lmforge.tiny import tiny_tokenizer
    from lmforge.train.checkpoint import save_checkpoint

    tok = tiny_tokenizer(vocab_size=2048)
    cfg = RunConfig(name="base", out_dir=str(root))
    cfg.model = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=192,
        activation="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
        tie_embeddings=False,
    )
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    run = root / "base"
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, model, {}, {"step": 0}, cfg, keep_last=1)
    export_model(model.eval(), tok, root / "hf")
    return run


def fitting_pairs(run: Path) -> list:
    """The synthetic pairs whose rows fit the 128-token context whole (both tools train on these)."""
    from lmforge.tokenizer import Tokenizer
    from lmforge.tune.dpo_demo import synthetic_pairs
    from lmforge.tune.dpo_source import encode_reply

    tok = Tokenizer.load(run / "tokenizer.json")
    return [p for p in synthetic_pairs(seed=0) if len(encode_reply(p.prompt, p.rejected, tok).ids) <= 129]


def run_lmforge(variant: str, root: Path, args) -> dict:
    from lmforge.config import from_dict
    from lmforge.tune.config import FinetuneConfig
    from lmforge.tune.dpo_train import dpo_finetune

    run = root / "base"
    pairs = fitting_pairs(run)
    settings = {
        "init": str(run),
        "data": "synthetic sign-off pairs",
        "out": str(root / f"{variant.replace(' ', '_')}-{args.steps}"),
        "objective": "dpo",
        "dpo": {"beta": BETA, "ref": "precomputed" if "precomputed" in variant else "model"},
        "max_steps": args.steps,
        "batch_size": args.batch,
        "lr": LR,
        "warmup_steps": 0,
        "eval_every": 0,
        "log_every": args.steps,
        "ckpt_every": 0,
        "device": "cpu",
        "precision": "fp32",
        "chat_prompts": [],
        "overlong": "drop",
    }
    if "lora" in variant:
        settings.update(
            method="lora", lora={"rank": 8, "alpha": 16.0, "dropout": 0.0, "targets": LORA_TARGETS}
        )
    r = dpo_finetune(from_dict(FinetuneConfig, settings), log=lambda m: None, pairs=(pairs, pairs[:8]))
    return {"steps_per_s": r.steps_per_s, "trainable": r.trainable_params, "final_loss": r.train_loss}


def run_trl(variant: str, root: Path, args) -> dict:
    import datasets
    import torch
    import transformers
    import trl

    pairs = fitting_pairs(root / "base")
    rows = [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    model = transformers.AutoModelForCausalLM.from_pretrained(root / "hf", dtype=torch.float32)
    htok = transformers.AutoTokenizer.from_pretrained(root / "hf")
    step_s: list[float] = []

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_s.append(time.perf_counter() - self.t0)

    peft_config = None
    if "lora" in variant:
        import peft

        peft_config = peft.LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
        )
    cfg = trl.DPOConfig(
        output_dir=str(root / f"trl-out-{args.steps}"),
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=LR,
        beta=BETA,
        lr_scheduler_type="constant",
        warmup_steps=0,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=args.steps,
        dataloader_num_workers=0,
        max_length=None,
        precompute_ref_log_probs="precomputed" in variant,
    )
    trainer = trl.DPOTrainer(
        model=model,
        args=cfg,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=htok,
        peft_config=peft_config,
        callbacks=[StepTimer()],
    )
    out = trainer.train()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"steps_per_s": len(step_s) / sum(step_s), "trainable": trainable, "final_loss": out.training_loss}


def worker(variant: str, root: Path, args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    r = (run_trl if variant.startswith("trl") else run_lmforge)(variant, root, args)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r["cpu_s"] = time.process_time()  # the whole process: imports, set-up and every step
    print("RESULT " + json.dumps(r), flush=True)


def worker_run(variant: str, root: Path, args, steps: int) -> dict | str:
    """One variant in a fresh process: its RESULT dict, or the error line."""
    cmd = [sys.executable, __file__, "--worker", variant, "--root", str(root), "--steps", str(steps)]
    cmd += ["--batch", str(args.batch), "--threads", str(args.threads)]
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        },
    )
    if p.returncode != 0:
        return p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    return json.loads(p.stdout.split("RESULT ")[-1].splitlines()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="the short run's steps (the long run: 3x)")
    ap.add_argument("--batch", type=int, default=8, help="pairs per step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="*", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, Path(args.root), args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_base(root)
        print(
            f"load: {os.getloadavg()[0]:.1f} (1-min average) at start; "
            f"{args.steps} and {3 * args.steps} steps of {args.batch} pairs, "
            f"{args.threads} threads",
            flush=True,
        )
        print(
            "| variant | CPU s per step | steps/s (wall, long run) | peak RSS (MB) | trainable params "
            "| final loss |\n|---|---:|---:|---:|---:|---:|",
            flush=True,
        )
        for v in args.variants:
            short, long = (worker_run(v, root, args, n) for n in (args.steps, 3 * args.steps))
            if isinstance(short, str) or isinstance(long, str):
                print(f"| {v} | failed: {short if isinstance(short, str) else long} |", flush=True)
                continue
            per_step = (long["cpu_s"] - short["cpu_s"]) / (2 * args.steps)
            print(
                f"| {v} | {per_step:.3f} | {long['steps_per_s']:.2f} | {long['peak_rss_mb']:,.0f} | "
                f"{long['trainable']:,} | {long['final_loss']:.4f} |",
                flush=True,
            )
        print(f"load: {os.getloadavg()[0]:.1f} at end", flush=True)


if __name__ == "__main__":
    main()
