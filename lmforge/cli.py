"""`lmforge <command> [--config recipe] [section.key=value ...]`: one subcommand per stage.

User errors (LmforgeError) end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from lmforge.errors import LmforgeError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="recipe name (e.g. tiny, gpt2-124m, llama-1b) or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="dotted config overrides")


TRAIN_EPILOG = """\
optimizer and schedule (README, "Pre-training"):
  train.optimizer=adamw|adam|muon   muon: Muon on the blocks' matrices, AdamW (train.lr) on the rest;
                                    train.muon_lr (0.02), train.muon_momentum (0.95),
                                    train.muon_weight_decay (0), train.muon_adjust_lr=original|match_rms_adamw
  train.decay=cosine|linear|constant|wsd   wsd: warmup-stable-decay, train.decay_fraction (0.2),
                                    train.decay_shape=linear|1-sqrt (default); all decay to train.min_lr_ratio
"""


def build_parser() -> argparse.ArgumentParser:
    # Each stage's package owns its arguments; the subcommands are listed in pipeline order.
    from lmforge import __version__
    from lmforge.data.curate import cli as curate_cli
    from lmforge.eval import cli as eval_cli
    from lmforge.export import cli as export_cli
    from lmforge.inspect import cli as inspect_cli
    from lmforge.plan import cli as plan_cli
    from lmforge.serve import cli as serve_cli
    from lmforge.serve import human_export
    from lmforge.tune import cli as tune_cli

    parser = argparse.ArgumentParser(
        prog="lmforge", description="Build a language model from raw text, end to end."
    )
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser(
        "run", help="every stage on the configured corpus (default: tiny recipe, embedded corpus)"
    )
    _add_config_args(p)
    curate_cli.add_parser(sub)
    _add_tokenizer_parser(sub)
    p = sub.add_parser(
        "train",
        help="pre-train a model (trains the tokenizer and encodes shards if needed)",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(p)
    plan_cli.add_parser(sub)
    # `eval human` is serve's (the server's page collects the ratings); registered here so eval
    # need not import serve.
    eval_cli.add_parser(sub, extra_actions=[("human", serve_cli.add_human_parser, serve_cli.run_human)])
    human_export.add_parser(sub)  # `lmforge human export`: votes -> preference pairs for DPO
    tune_cli.add_parsers(sub)
    p = sub.add_parser("generate", help="sample text from a trained model")
    p.add_argument("--run", required=True, help="run directory (latest checkpoint) or a checkpoint directory")
    p.add_argument("--prompt", help="text to continue (default: sample.prompt)")
    p.add_argument(
        "--prompt-template",
        metavar="FILE",
        default=None,
        help="YAML/JSON prompt template (lmforge/chat/prompts.py): the prompt fills its query and "
        "is rendered with its system prompt and k seeded shots before generation",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="sample.key=value",
        help="decoding overrides, e.g. sample.temperature=0 sample.top_p=0.9",
    )
    serve_cli.add_parsers(sub)
    inspect_cli.add_parser(sub)
    export_cli.add_parsers(sub)
    sub.add_parser("recipes", help="list the shipped recipes")
    return parser


def _add_tokenizer_parser(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a BPE tokenizer or encode documents into token shards")
    tsub = p.add_subparsers(dest="action", metavar="action")
    t = tsub.add_parser("train", help="train a byte-level BPE tokenizer on documents")
    t.add_argument(
        "--input", required=True, help="documents: a .jsonl[.gz]/.txt file, a folder, or 'embedded'"
    )
    t.add_argument("--output", default="tokenizer.json", help="where to write tokenizer.json")
    _add_config_args(t)
    e = tsub.add_parser("encode", help="encode documents into uint16/uint32 token shards + meta.json")
    e.add_argument("--tokenizer", required=True, help="tokenizer.json")
    e.add_argument(
        "--input", required=True, help="documents: a .jsonl[.gz]/.txt file, a folder, or 'embedded'"
    )
    e.add_argument("--output", required=True, help="shard directory to create")
    _add_config_args(e)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 1
        status = COMMANDS[args.command](args, parser)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return status
    except LmforgeError as e:
        from lmforge.train.parallel.launch import is_main_process

        if is_main_process():  # under torchrun every rank fails alike; one message is enough
            print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """The reader of our stdout closed it (`lmforge ... | head`): stop quietly, as Unix tools do.
    stdout is pointed at devnull so the interpreter's final flush does not raise again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, the status a shell reports for a command killed by SIGPIPE


def cmd_run(args, parser) -> int:
    from lmforge.config import load_config
    from lmforge.pipeline import run_all

    run_all(load_config(args.config or "tiny", args.overrides))
    return 0


def cmd_train(args, parser) -> int:
    from lmforge.config import load_config
    from lmforge.pipeline import log, print_summary, result_dict, train_stage, write_training_report
    from lmforge.train.parallel.launch import is_main_process

    cfg = load_config(args.config or "tiny", args.overrides)
    result, _ = train_stage(cfg)
    if not is_main_process():  # under torchrun rank 0 alone reports
        return 0
    summary = result_dict(result)
    if not result.stopped_early:  # the report card of a finished run, as `lmforge run` writes it
        report = write_training_report(cfg, summary)
        log(f"report: {report}")
    print_summary(summary)
    log(f"checkpoints: {cfg.run_dir / 'checkpoints'}")
    if result.diverged:  # a failed run; one interrupted by a signal saved its checkpoint and resumes cleanly
        raise LmforgeError(result.stop_reason or "training diverged")
    return 0


def cmd_tokenizer(args, parser) -> int:
    from lmforge.config import load_config
    from lmforge.inputs import documents, log

    if args.action is None:
        parser.parse_args(["tokenizer", "--help"])
    cfg = load_config(args.config, args.overrides)
    if args.action == "train":
        from lmforge.inputs import warn
        from lmforge.tokenizer import train_tokenizer, vocab_shortfall

        out = Path(args.output)
        if out.exists():
            raise LmforgeError(f"{out} already exists; choose another --output or remove it")
        tok = train_tokenizer((d["text"] for d in documents(args.input)), cfg.tokenizer)
        warn(vocab_shortfall(tok, cfg.tokenizer))
        out.parent.mkdir(parents=True, exist_ok=True)
        tok.save(out)
        log(f"tokenizer: vocab {tok.vocab_size} -> {out}")
    else:
        from lmforge.data.shards import encode_corpus
        from lmforge.tokenizer import Tokenizer

        out = Path(args.output)
        if (out / "meta.json").exists():
            raise LmforgeError(f"{out} already holds token shards; choose another --output")
        tok = Tokenizer.load(args.tokenizer)
        meta = encode_corpus(documents(args.input), tok, out, cfg.data)
        for split, s in meta["splits"].items():
            log(f"{split}: {s['documents']} documents, {s['tokens']:,} tokens")
        log(f"shards -> {out}")
    return 0


def cmd_generate(args, parser) -> int:
    from lmforge.config import from_dict, parse_overrides, read_config
    from lmforge.serve.config import SampleConfig
    from lmforge.serve.generate import generate
    from lmforge.tokenizer import Tokenizer
    from lmforge.train.checkpoint import load_model, resolve_checkpoint

    tree = parse_overrides(args.overrides)
    unknown = [k for k in tree if k != "sample"]
    if unknown:
        raise LmforgeError(f"generate takes sample.* overrides only, got '{unknown[0]}'")
    path = Path(args.run)
    model, _ = load_model(path)
    cfg = read_config(resolve_checkpoint(path))
    sc = from_dict(SampleConfig, {**cfg.sample.__dict__, **tree.get("sample", {})}, "sample.")
    if args.prompt is not None:
        sc.prompt = args.prompt
    if args.prompt_template:
        from lmforge.chat.prompts import load_template, record_from_text, render_text, template_pool

        t = load_template(args.prompt_template)
        sc.prompt = render_text(t, record_from_text(t, sc.prompt), template_pool(t))
    tok_path = next(
        (p / "tokenizer.json" for p in (path, path.parent.parent) if (p / "tokenizer.json").exists()), None
    )
    if tok_path is None:
        raise LmforgeError(f"no tokenizer.json found in {path} or its run directory")
    tok = Tokenizer.load(tok_path)
    for i in range(sc.num_samples):
        if i:
            print("\n---")
        sys.stdout.write(sc.prompt)
        generate(model, tok, sc.prompt, sc, on_text=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        if sc.seed is not None:
            sc.seed += 1
    print()
    return 0


def cmd_recipes(args, parser) -> int:
    from lmforge.config import recipe_names

    print("\n".join(recipe_names()))
    return 0


# Stage packages own their commands: "module:function", imported when the command runs.
STAGE_COMMANDS = {
    "curate": "lmforge.data.curate.cli:run",
    "eval": "lmforge.eval.cli:run",
    "plan": "lmforge.plan.cli:run",
    "export": "lmforge.export.cli:run_export",
    "import": "lmforge.export.cli:run_import",
    "chat": "lmforge.serve.cli:run_chat",
    "serve": "lmforge.serve.cli:run_serve",
    "finetune": "lmforge.tune.cli:run_finetune",
    "synth": "lmforge.tune.cli:run_synth",
    "inspect": "lmforge.inspect.cli:run",
    "human": "lmforge.serve.human_export:run",
}


def _stage_command(target: str):
    def command(args, parser) -> int:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(args)

    return command


COMMANDS = {
    "run": cmd_run,
    "train": cmd_train,
    "tokenizer": cmd_tokenizer,
    "generate": cmd_generate,
    "recipes": cmd_recipes,
    **{name: _stage_command(t) for name, t in STAGE_COMMANDS.items()},
}

if __name__ == "__main__":
    raise SystemExit(main())
