"""`lmforge run`'s SFT stage: fine-tune the freshly pre-trained model on the shipped instruction
set (lmforge/corpus/sft_demo.jsonl.gz) and show a chat exchange.

The lead wires it into lmforge/pipeline.py after sampling:

    from lmforge.report import update_report_section
    from lmforge.tune.stage import SECTION, report_section, sft_stage
    sft = sft_stage(cfg, run_dir, tok)            # dict; writes <run_dir>/sft/ (a run dir)
    if not sft.get("skipped"):
        update_report_section(run_dir, SECTION, report_section(sft))

Re-running reuses a finished <run_dir>/sft (like every other stage) instead of training again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from lmforge.config import RunConfig
from lmforge.errors import LmforgeError
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.tune.config import FinetuneConfig
from lmforge.tune.demo_data import DEMO_PATH

SECTION = "Supervised fine-tuning"  # the report.md section name
CHAT_PROMPTS = ["What is the capital of France?", "Give me three tips for staying healthy."]


def demo_config(cfg: RunConfig, run_dir: Path, **overrides) -> FinetuneConfig:
    """The demo's fine-tuning settings: full fine-tuning, packed rows of the model's context, batch 8,
    1/8 of the pre-training steps (75 for the tiny recipe: ~2 epochs of the 565 conversations,
    about a minute on 2 CPU cores), at most 80 and at least 2."""
    steps = max(2, min(80, cfg.train.max_steps // 8))
    base = {
        "init": str(run_dir),
        "data": str(DEMO_PATH),
        "format": "messages",
        "out": str(run_dir / "sft"),
        "max_steps": steps,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": max(1, steps // 10),
        "min_lr_ratio": 0.1,
        "eval_every": max(1, steps // 2),
        "log_every": 10,
        "val_fraction": 0.05,
        "seed": cfg.train.seed,
        "device": cfg.train.device,
        "precision": cfg.train.precision,
        "chat_prompts": list(CHAT_PROMPTS),
        "max_new_tokens": 48,
        # sampled like the run's own samples: greedy decoding of a tiny model loops on one word
        "chat_temperature": cfg.sample.temperature,
        "chat_top_k": cfg.sample.top_k,
    }
    return FinetuneConfig(**{**base, **overrides})


def sft_stage(cfg: RunConfig, run_dir: Path, tokenizer, **overrides) -> dict:
    """Fine-tune run_dir's latest checkpoint into run_dir/sft and return the result as a dict
    (FinetuneResult's fields: steps, val_loss_before, val_loss, trainable_params, samples, ...)."""
    from lmforge.tune.sft import default_log, finetune

    run_dir = Path(run_dir)
    if cfg.model.kind != "decoder":
        default_log(
            f"skipped: supervised fine-tuning makes chat models from decoders, this is a {cfg.model.kind}"
        )
        return {"skipped": True}
    ft = demo_config(cfg, run_dir, **overrides)
    out = Path(ft.out)
    done = out / "finetune.json"
    if latest_checkpoint(out) is not None and done.exists():
        default_log(f"reusing the fine-tuned model in {out}")
        return json.loads(done.read_text(encoding="utf-8"))
    saved = run_dir / "tokenizer.json"
    if saved.exists() and tokenizer is not None:
        from lmforge.tokenizer import Tokenizer

        if Tokenizer.load(saved).hash != tokenizer.hash:
            raise LmforgeError(f"{saved} is not the tokenizer this run trained with")
    return asdict(finetune(ft))  # its log shows the chat exchange


def report_section(result: dict) -> str:
    """The body of report.md's "Supervised fine-tuning" section (no heading: update_report_section
    adds it): what was fine-tuned, the loss on held-out conversations, the chat exchange."""
    if not result or result.get("skipped"):
        return ""
    vb, va = result.get("val_loss_before"), result.get("val_loss")
    lines = [
        (
            f"Fine-tuned on {result['train_conversations']} conversations of the demo instruction set "
            f"({result['method']}, {result['steps']} steps, "
            f"{result['trainable_params']:,} trainable parameters); "
            f"the chat model is in `{result['out_dir']}` (`lmforge chat --run {result['out_dir']}`)."
        ),
        "",
        "| metric | value |",
        "|---|---|",
    ]
    if vb is not None and va is not None:
        lines.append(
            f"| held-out loss, assistant tokens ({result['val_conversations']} conversations) "
            f"| {vb:.4f} -> {va:.4f} nats |"
        )
    lines += [
        f"| final train loss | {result['train_loss']:.4f} nats |",
        f"| peak memory | {result['peak_memory_mb']:,.0f} MB ({result['memory_kind']}) |",
        f"| time | {result['wall_s']:.1f} s |",
        "",
    ]
    if result.get("samples"):
        lines += ["A chat exchange:", "", "```"]
        for s in result["samples"]:
            lines += [f"user: {s['user']}", f"assistant: {s['assistant']}", ""]
        lines[-1:] = ["```", ""]
    return "\n".join(lines)
