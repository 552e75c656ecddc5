"""`lmforge inspect --run R "text" [--compare "other text"] [--json] [--out DIR]`.

Writes into DIR (default <run>/inspect/<text>):

    attention/L<layer>_<stack>_H<head>.png   one heat map per layer and head
    attention/heads.png                      every layer x head, small multiples
    compare/L<layer>_<stack>.png             with --compare: both texts and the difference, per layer
    compare/heads_second.png                 with --compare: the second text's head grid
    surprise.png, surprise.html              the text coloured by each token's bits, top-k predictions
    lens.png, lens.md                        the logit lens as a picture and a table

With --json, X.json beside every X.png holds the numbers behind it (for notebooks). The surprise
is also printed to the terminal (ANSI colours when it is one).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lmforge.errors import LmforgeError


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="look inside a model: attention maps, per-token surprise, logit lens")
    p.add_argument("--run", required=True, help="run directory (latest checkpoint) or a checkpoint directory")
    p.add_argument("text", help="the text to read")
    p.add_argument(
        "--compare", metavar="TEXT", help="a second text: attention side by side, with the difference"
    )
    p.add_argument(
        "--json", action="store_true", help="write the numbers behind every picture beside it (X.json)"
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/inspect/<text>)")
    p.add_argument("--top-k", type=int, default=5, help="predictions listed per token (default 5)")
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        metavar="L",
        help="per-head pictures for these layers only (default: every layer)",
    )


def load(run: str | Path):
    """(model in eval mode, tokenizer) of a run or checkpoint directory."""
    from lmforge.tokenizer import Tokenizer
    from lmforge.train.checkpoint import load_model

    path = Path(run)
    if not path.exists():
        raise LmforgeError(f"run directory not found: {path}")
    tok_path = next(
        (p / "tokenizer.json" for p in (path, path.parent.parent) if (p / "tokenizer.json").is_file()), None
    )
    if tok_path is None:
        raise LmforgeError(f"no tokenizer.json found in {path} or its run directory")
    model, _ = load_model(path)
    return model, Tokenizer.load(tok_path)


def run_dir_of(run: str | Path) -> Path:
    path = Path(run)
    return path.parent.parent if path.name.startswith("step_") else path


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "text"


def _json(path: Path, data: dict, enabled: bool) -> None:
    if enabled:
        path.with_suffix(".json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def inspect_to(
    model,
    tokenizer,
    text: str,
    out: Path,
    *,
    compare: str | None = None,
    write_json: bool = False,
    top_k: int = 5,
    layers: list[int] | None = None,
) -> dict:
    """Every picture (and, with write_json, its JSON) for `text` under `out`; returns
    {"attention", "surprise", "lens", "compare"} with the computed results and "files", the paths."""
    from lmforge.inspect import plots
    from lmforge.inspect.attention import attention_maps
    from lmforge.inspect.inputs import read
    from lmforge.inspect.lens import logit_lens
    from lmforge.inspect.render import lens_table, surprise_html
    from lmforge.inspect.surprise import token_surprise

    reading = read(model, tokenizer, text)
    second = read(model, tokenizer, compare) if compare is not None else None  # errors before writing
    deepest = max(model.cfg.n_layer, model.cfg.encoder_layers if model.cfg.kind == "encoder-decoder" else 0)
    if layers is not None and (bad := [x for x in layers if not 0 <= x < deepest]):
        raise LmforgeError(f"--layers {bad[0]}: the model has layers 0..{deepest - 1}")
    out = Path(out)
    (out / "attention").mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    maps = attention_maps(model, tokenizer, reading)
    for m in maps:
        if layers is not None and m.layer not in layers:
            continue
        for h in range(m.probs.shape[0]):
            path = plots.plot_head(m, h, out / "attention" / f"L{m.layer}_{m.stack}_H{h}.png")
            _json(
                path, {**m.to_json(), "head": h, "probs": m.to_json()["probs"][h], "text": text}, write_json
            )
            files.append(path)
    files.append(plots.plot_head_grid(maps, out / "attention" / "heads.png", text))
    _json(files[-1], {"text": text, "maps": [m.to_json() for m in maps]}, write_json)

    surprise = token_surprise(model, tokenizer, reading, top_k)
    files.append(plots.plot_surprise(surprise, out / "surprise.png"))
    _json(files[-1], {"text": text, **surprise.to_json()}, write_json)
    (out / "surprise.html").write_text(
        surprise_html(surprise, f"surprise per token: {text!r}"), encoding="utf-8"
    )
    files.append(out / "surprise.html")

    lens = logit_lens(model, tokenizer, reading)
    files.append(plots.plot_lens(lens, out / "lens.png"))
    _json(files[-1], {"text": text, **lens.to_json()}, write_json)
    (out / "lens.md").write_text(lens_table(lens) + "\n", encoding="utf-8")
    files.append(out / "lens.md")

    result = {"attention": maps, "surprise": surprise, "lens": lens, "compare": None, "files": files}
    if second is not None:
        (out / "compare").mkdir(exist_ok=True)
        other = attention_maps(model, tokenizer, second)
        for a, b in zip(maps, other):
            path = plots.plot_compare(a, b, text, compare, out / "compare" / f"L{a.layer}_{a.stack}.png")
            diff = (b.probs - a.probs).round(5).tolist() if a.probs.shape == b.probs.shape else None
            _json(
                path,
                {
                    "first": {"text": text, **a.to_json()},
                    "second": {"text": compare, **b.to_json()},
                    "difference": diff,
                },
                write_json,
            )
            files.append(path)
        files.append(plots.plot_head_grid(other, out / "compare" / "heads_second.png", compare))
        _json(files[-1], {"text": compare, "maps": [m.to_json() for m in other]}, write_json)
        result["compare"] = other
    return result


def run(args) -> int:
    from lmforge.inspect.render import lens_table, surprise_ansi

    if args.top_k < 1:
        raise LmforgeError(f"--top-k must be at least 1, got {args.top_k}")
    model, tok = load(args.run)
    out = Path(args.out) if args.out else run_dir_of(args.run) / "inspect" / slug(args.text)
    result = inspect_to(
        model,
        tok,
        args.text,
        out,
        compare=args.compare,
        write_json=args.json,
        top_k=args.top_k,
        layers=args.layers,
    )
    print(surprise_ansi(result["surprise"], colour=sys.stdout.isatty()))
    print("\nlogit lens (top token per layer, p of the actual next token):")
    print(lens_table(result["lens"]))
    pngs = sum(1 for f in result["files"] if f.suffix == ".png")
    print(
        f"\n[lmforge] inspect: {pngs} pictures{' with their JSON' if args.json else ''} -> {out}", flush=True
    )
    return 0
