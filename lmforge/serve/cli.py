"""`lmforge chat` and `lmforge serve` (and the `eval human` hook), for lmforge/cli.py to wire in:

    lmforge chat --run runs/x [--system TEXT] [--temperature 0.8] [--top-p 0.95] [--max-tokens 200]
                 [--compile]
    lmforge serve --run runs/x [--run name=runs/y ...] [--host 127.0.0.1] [--port 8000] [--compile]
                  [--max-batch 8] [--max-request-bytes 8388608]
                  [--api-key KEY | $LMFORGE_API_KEY] [--human-eval human_eval.sqlite]
                  [--rater-key KEY | $LMFORGE_RATER_KEY]
    lmforge eval human --models runA runB --prompts prompts.jsonl [--output human_eval.sqlite]

`add_parsers(subparsers)` adds chat and serve; `run_chat(args)`, `run_serve(args)` return an exit
status and raise LmforgeError for user errors. `add_human_parser(eval_subparsers)` and
`run_human(args)` (from human_eval.py) are the `eval human` action. `python -m lmforge.serve.cli`
runs these commands on their own.
"""

from __future__ import annotations

import argparse
import os
import sys

from lmforge.errors import LmforgeError
from lmforge.serve.config import DEFAULT_MAX_REQUEST_BYTES
from lmforge.serve.human_eval import add_human_parser, run_human

__all__ = ["add_human_parser", "add_parsers", "main", "run_chat", "run_human", "run_serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _sampling_args(
    p: argparse.ArgumentParser, temperature: float, top_p: float | None, max_tokens: int
) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=temperature, help="0 = greedy (default %(default)s)")
    g.add_argument("--top-p", type=float, default=top_p, help="nucleus sampling mass (default %(default)s)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default: all)")
    g.add_argument("--max-tokens", type=int, default=max_tokens, help="longest reply (default %(default)s)")
    g.add_argument("--seed", type=int, default=None, help="seed for reproducible replies (default: random)")


def _compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decoding step: faster tokens after seconds of compiling on the first "
        "replies (sample.compile)",
    )


def _template_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompt-template",
        metavar="FILE",
        default=None,
        help="YAML/JSON prompt template: its system prompt and few-shot examples (as earlier "
        "user/assistant turns) start every conversation that has no system message of its own",
    )


def _load_template(args):
    from lmforge.chat.prompts import load_template

    return load_template(args.prompt_template) if getattr(args, "prompt_template", None) else None


def add_parsers(subparsers) -> None:
    c = subparsers.add_parser(
        "chat",
        help="chat with a model in the terminal (streams; /help inside)",
        description="A conversation in the chat template, streamed. Commands: /reset, "
        "/system TEXT, /set KEY VALUE, /settings, /history, /help, /quit.",
    )
    c.add_argument("--run", required=True, help="run directory (latest checkpoint) or a checkpoint directory")
    c.add_argument(
        "--system", default=None, help="system prompt (replaces --prompt-template's, shots included)"
    )
    _template_arg(c)
    c.add_argument("--device", default="cpu", help="cpu, cuda, mps (default cpu)")
    _compile_arg(c)
    _sampling_args(c, temperature=0.8, top_p=0.95, max_tokens=200)

    s = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible HTTP API, chat page and human evaluation",
        description="Serve runs over an OpenAI-compatible API (/v1/models, "
        "/v1/completions, /v1/chat/completions), a chat page (/chat) and, "
        "with --human-eval, the rating pages (/human, /human/results).",
    )
    s.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="RUN",
        help="run directory or NAME=PATH; repeat for several models (the model id is NAME or the "
        "directory name)",
    )
    s.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)"
    )
    s.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 = any free port)")
    s.add_argument(
        "--api-key",
        default=os.environ.get("LMFORGE_API_KEY"),
        help="require 'Authorization: Bearer KEY' on the API (default: $LMFORGE_API_KEY, else none)",
    )
    s.add_argument(
        "--human-eval",
        default=None,
        metavar="FILE",
        help="comparisons file from `lmforge eval human`: enables /human and /human/results",
    )
    s.add_argument(
        "--rater-key",
        default=os.environ.get("LMFORGE_RATER_KEY"),
        help="a key for raters: opens human evaluation (/human) only, never the models' API "
        "(default: $LMFORGE_RATER_KEY, else none; the API key opens /human too)",
    )
    s.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        metavar="N",
        help="refuse request bodies larger than N bytes with a 413 (default %(default)s = 8 MiB)",
    )
    s.add_argument("--device", default="cpu", help="cpu, cuda, mps (default cpu)")
    _compile_arg(s)
    _template_arg(s)
    s.add_argument(
        "--max-batch",
        type=int,
        default=8,
        metavar="N",
        help="decode up to N waiting requests to a model together, one forward per step for all "
        "(default %(default)s; 1 = one request at a time)",
    )
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _sample(args):
    from lmforge.serve.config import SampleConfig

    cfg = SampleConfig(
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        compile=args.compile,
    )
    cfg.validate()
    return cfg


def run_chat(args) -> int:
    from lmforge.serve.chat import ChatSession, run_repl
    from lmforge.serve.engine import ServedModel

    template = _load_template(args)
    model = ServedModel.load(args.run, device=args.device)
    model.set_prompt_template(template)
    session = ChatSession(model, _sample(args), system=args.system)
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401 -- line editing and up-arrow history for input()
        except ImportError:
            pass
    run_repl(session)
    return 0


def run_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise LmforgeError(
            f"lmforge serve needs FastAPI and uvicorn ({e.name} is missing): pip install 'lmforge[serve]'"
        ) from None
    from lmforge.serve.engine import ServedModel
    from lmforge.serve.server import create_app, serve_forever

    if not args.run and not args.human_eval:
        raise LmforgeError("nothing to serve: give --run RUN (repeatable) and/or --human-eval FILE")
    if not 0 <= args.port <= 65535:
        raise LmforgeError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch < 1:
        raise LmforgeError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.max_request_bytes < 1:
        raise LmforgeError(f"--max-request-bytes must be >= 1, got {args.max_request_bytes}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    template = _load_template(args)
    models = []
    for spec in args.run:
        m = ServedModel.load(spec, device=args.device)
        m.compile = args.compile
        m.max_batch = args.max_batch
        m.set_prompt_template(template)
        print(f"[lmforge] model {m.name!r}: {m.path} ({m.block_size}-token context)", flush=True)
        models.append(m)
    app = create_app(
        models,
        api_key=args.api_key or None,
        human_db=args.human_eval,
        rater_key=args.rater_key or None,
        max_request_bytes=args.max_request_bytes,
    )
    if args.host not in LOOPBACK and not args.api_key:
        print(
            f"[lmforge] warning: listening on {args.host} without an API key; anyone who can reach it "
            "can use it (set --api-key or $LMFORGE_API_KEY)",
            file=sys.stderr,
            flush=True,
        )
    serve_forever(app, args.host, args.port, log_level=args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmforge")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    add_parsers(sub)
    e = sub.add_parser("eval").add_subparsers(dest="eval_action", required=True)
    add_human_parser(e)
    args = parser.parse_args(argv)
    try:
        return {"chat": run_chat, "serve": run_serve, "eval": run_human}[args.command](args)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
