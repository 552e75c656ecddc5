"""`lmforge finetune` and `lmforge synth`: argument parsers and entry points.

The lead wires them into lmforge/cli.py with `add_parsers(subparsers)` and
COMMANDS["finetune"] = run_finetune, COMMANDS["synth"] = run_synth (each takes the parsed args;
a second positional argument, the parser, is accepted and ignored).

Configuration: `--config file.yaml` (FinetuneConfig / SynthConfig fields at the top level), then
`key=value` overrides (`lora.rank=16`), then the explicit flags, which win.
"""

from __future__ import annotations

import argparse
from typing import Any

from lmforge.config import from_dict, merge, parse_overrides, read_recipe
from lmforge.tune.config import FinetuneConfig, SynthConfig


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="supervised fine-tuning (instructions, dialogs; full or LoRA)",
        description="Fine-tune a checkpoint on instruction or chat records.",
    )
    p.add_argument("--init", help="base model: run directory or checkpoint directory")
    p.add_argument(
        "--data",
        help="SFT records (.jsonl, .jsonl.gz, .json): alpaca, dolly, prompt/response, "
        "gsm8k, self-instruct, messages, sharegpt or oasst trees",
    )
    p.add_argument("--out", help="output run directory (default: <init>-sft)")
    p.add_argument("--format", help="record format (default: auto, from the first record's keys)")
    p.add_argument("--val-data", dest="val_data", help="held-out records (default: val_fraction of --data)")
    p.add_argument(
        "--method",
        choices=["sft", "dpo"],
        help="sft (default): learn the assistant replies; dpo: "
        "preference pairs (prompt, chosen, rejected), DPO",
    )
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of every weight")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first malformed record (on_bad_record=error)"
    )
    p.add_argument("--config", "-c", help="YAML file of finetune settings")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. epochs=2 batching=pad lora.rank=16"
    )

    s = subparsers.add_parser(
        "synth",
        help="synthetic instruction data from a teacher model (Self-Instruct)",
        description="Grow seed tasks into SFT records with an OpenAI-compatible teacher.",
    )
    s.add_argument("--seeds", help="seed tasks JSONL (Self-Instruct format)")
    s.add_argument("--out", help="output JSONL (appended to; a rerun resumes)")
    s.add_argument("--base-url", dest="base_url", help="teacher endpoint, e.g. http://127.0.0.1:8000/v1")
    s.add_argument("--model", help="teacher model name")
    s.add_argument("-n", "--num", dest="num_instructions", type=int, help="records wanted in --out")
    s.add_argument("--config", "-c", help="YAML file of synth settings")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. concurrency=8 rouge_threshold=0.7")


def _config(cls: type, args: argparse.Namespace, flags: dict[str, Any]) -> Any:
    data = read_recipe(args.config) if args.config else {}
    data = merge(data, parse_overrides(args.overrides or []))
    data = merge(data, {k: v for k, v in flags.items() if v is not None})
    cfg = from_dict(cls, data)
    cfg.validate()
    return cfg


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    flags = {
        "init": args.init,
        "data": args.data,
        "out": args.out,
        "format": args.format,
        "val_data": args.val_data,
        "method": "lora" if args.lora else None,
        "objective": args.method,
        "on_bad_record": "error" if args.strict else None,
    }
    return _config(FinetuneConfig, args, flags)


def run_finetune(args: argparse.Namespace, parser: Any = None) -> int:
    from lmforge.train.parallel.launch import is_main_process
    from lmforge.tune.dpo_train import dpo_finetune
    from lmforge.tune.sft import default_log, finetune

    cfg = finetune_config(args)
    if cfg.objective == "dpo":
        return _report_dpo(dpo_finetune(cfg))
    r = finetune(cfg)
    if not is_main_process():  # under torchrun rank 0 reports
        return 0
    if r.stopped:  # a signal: the checkpoint in <out>/train is saved; the same command resumes
        default_log(r.stopped)
        return 0
    mem = f"{r.peak_memory_mb:,.0f} MB ({r.memory_kind})"
    print(
        f"trainable parameters: {r.trainable_params:,} of {r.total_params:,} "
        f"({100 * r.trainable_params / r.total_params:.2f}%)"
    )
    if r.val_loss is not None and r.val_loss_before is not None:
        print(
            f"held-out loss: {r.val_loss_before:.4f} -> {r.val_loss:.4f} nats per assistant token "
            f"({r.val_conversations} conversations)"
        )
    print(f"peak memory: {mem}")
    print(f"time: {r.wall_s:.1f}s")
    default_log(f"fine-tuned model: {r.out_dir} (try: lmforge chat --run {r.out_dir})")
    return 0


def _report_dpo(r) -> int:
    from lmforge.train.parallel.launch import is_main_process
    from lmforge.tune.dpo_train import held_out_line
    from lmforge.tune.sft import default_log

    if not is_main_process():
        return 0
    if r.stopped:
        default_log(r.stopped)
        return 0
    print(
        f"trainable parameters: {r.trainable_params:,} of {r.total_params:,} "
        f"({100 * r.trainable_params / r.total_params:.2f}%)"
    )
    if r.val_before and r.val_after:
        print(held_out_line(r.val_before, r.val_after, r.val_pairs))
    print(
        f"DPO ({r.loss}, beta {r.beta:g}, reference: {r.ref}): {r.steps} steps, {r.steps_per_s:.2f} steps/s"
    )
    print(f"peak memory: {r.peak_memory_mb:,.0f} MB ({r.memory_kind})")
    print(f"time: {r.wall_s:.1f}s")
    default_log(f"preference-tuned model: {r.out_dir} (try: lmforge chat --run {r.out_dir})")
    return 0


def run_synth(args: argparse.Namespace, parser: Any = None) -> int:
    from lmforge.tune.synth import default_log, synthesize

    flags = {
        "seeds": args.seeds,
        "out": args.out,
        "base_url": args.base_url,
        "model": args.model,
        "num_instructions": args.num_instructions,
    }
    cfg = _config(SynthConfig, args, flags)
    r = synthesize(cfg)
    default_log(
        f"records: {r.out} ({r.records}; {r.added} new, {r.requests} requests, {r.failed_requests} failed)"
    )
    return 0


__all__ = ["add_parsers", "finetune_config", "run_finetune", "run_synth"]
