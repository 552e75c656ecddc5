"""`lmforge export` and `lmforge import`: the Hugging Face format out and in.

    lmforge export --run runs/x --out hf/x [--dtype float32|bfloat16|float16]
    lmforge import --hf path/to/hf-model --out runs/y [--allow-approximate]

Wire-up (lmforge/cli.py): `add_parsers(sub)` adds both subcommands; dispatch "export" to
`run_export(args)` and "import" to `run_import(args)`. Errors are LmforgeError (one line).
"""

from __future__ import annotations

import argparse
import sys

from lmforge.errors import LmforgeError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a run's model as a Hugging Face folder (Llama or GPT-2 architecture)",
        description="Write the latest checkpoint of a run as a transformers model folder: config.json, "
        "model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json "
        "(with the chat template). Llama for pos=rope/rmsnorm/swiglu models, GPT-2 for "
        "pos=learned/layernorm/gelu ones.",
    )
    p.add_argument("--run", required=True, help="run directory (latest checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="weight dtype in model.safetensors (default float32, what lmforge trains)",
    )

    p = subparsers.add_parser(
        "import",
        help="turn a local Hugging Face model folder into an lmforge run directory",
        description="Read a local Llama-family (llama, mistral, qwen2) or GPT-2 folder and write an lmforge "
        "run directory (config.yaml, tokenizer.json, checkpoints/step_000000) that train "
        "(train.init_from=DIR), finetune, eval, generate and serve use.",
    )
    p.add_argument("--hf", required=True, help="Hugging Face model folder (config.json, weights, tokenizer)")
    p.add_argument("--out", required=True, help="run directory to create (must not exist)")
    p.add_argument(
        "--allow-approximate",
        action="store_true",
        help="import GPT-2's tanh-approximate GELU (gelu_new) as lmforge's exact GELU",
    )


def _log(msg: str) -> None:
    print(f"lmforge: {msg}", file=sys.stderr)


def run_export(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    from lmforge.export.hf_export import export_run

    s = export_run(args.run, args.out, dtype=args.dtype)
    _log(
        f"export: {s['hf_class']} ({s['architecture']}), {s['params'] / 1e6:.2f}M parameters, {s['dtype']} "
        f"-> {s['out']}"
    )
    _log(f"load it with transformers.AutoModelForCausalLM.from_pretrained({s['out']!r}) and AutoTokenizer")
    return 0


def run_import(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    from lmforge.export.hf_import import import_hf

    s = import_hf(args.hf, args.out, allow_approximate=args.allow_approximate, log=_log)
    tok = s["tokenizer"]
    changes = []
    if tok["added"]:
        changes.append(f"added {', '.join(tok['added'])}")
    if tok["renamed"]:
        changes.append(", ".join(f"renamed {a} -> {b}" for a, b in tok["renamed"].items()))
    if tok["moved_ids"]:
        changes.append(f"{tok['moved_ids']} ids moved so the special tokens sit at 0..6")
    _log(
        f"import: {s['model_type']} as lmforge {s['architecture']}-shaped model, {s['params'] / 1e6:.2f}M "
        f"parameters, vocab {s['vocab_size']} -> {s['out']}"
    )
    _log(f"tokenizer: {'; '.join(changes) if changes else 'unchanged'}")
    _log(f"use it: lmforge generate --run {s['out']}  |  lmforge train train.init_from={s['out']} ...")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m lmforge.export.cli export|import ...`, the same commands outside the main CLI."""
    parser = argparse.ArgumentParser(prog="lmforge")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return {"export": run_export, "import": run_import}[args.command](args, parser)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
