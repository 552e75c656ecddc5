"""`lmforge curate`: the argparse wiring, for lmforge/cli.py to mount.

    lmforge curate --input data/raw --output data/curated [--config recipe.yaml] [--workers 8]
    lmforge curate ... --executor ray --address auto
    lmforge curate ... lang_id.min_score=0.5 c4.min_words_per_line=3     # dotted overrides
    lmforge curate ... --tokenizer tokenizer.json [--shards data/shards]   # and encode into token shards

A recipe is a YAML mapping of CurateConfig fields (or a run recipe with a `curate:` section).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmforge.data.curate.config import CurateConfig
from lmforge.errors import LmforgeError
from lmforge.typed_config import from_dict, merge, parse_overrides, read_recipe


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "curate",
        help="clean, filter, de-duplicate and mix raw text into training documents",
        description="Curate raw text: every stage with its published defaults unless a recipe "
        "says otherwise; kept/ + removed/ + stats.json + report.md in --output.",
    )
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="PATH",
        help=(
            "a file or folder to curate (repeatable; format from the extension); "
            "or list sources in the recipe"
        ),
    )
    p.add_argument(
        "--output", "-o", required=True, help="output folder (a rerun with the same config resumes it)"
    )
    p.add_argument("--config", "-c", help="curation recipe: a YAML path or a shipped profile (fineweb, c4)")
    p.add_argument("--workers", "-w", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--executor", choices=["local", "ray"], help="local process pool (default) or Ray tasks")
    p.add_argument(
        "--address", help="Ray cluster address ('auto' joins the running cluster; default: local Ray)"
    )
    p.add_argument(
        "--tokenizer",
        help="a tokenizer.json: also encode the curated documents (mixed/ when mixing, "
        "else kept/) into train/val token shards",
    )
    p.add_argument("--shards", help="where the token shards go (default: OUTPUT/shards); needs --tokenizer")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. c4.enabled=false"
    )
    return p


RECIPES = Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_curate_config(config: str | None, overrides: list[str]) -> CurateConfig:
    """A shipped curation profile (fineweb, c4) or a YAML path, plus dotted overrides; unknown keys fail."""
    if config and not Path(config).exists() and (RECIPES / f"{config}.yaml").exists():
        config = str(RECIPES / f"{config}.yaml")
    data = read_recipe(config) if config else {}
    if "curate" in data and isinstance(data["curate"], dict):
        data = data["curate"]
    tree = parse_overrides(overrides)
    if isinstance(tree.get("curate"), dict):
        tree = merge({k: v for k, v in tree.items() if k != "curate"}, tree["curate"])
    cfg = from_dict(CurateConfig, merge(data, tree))
    cfg.validate()
    return cfg


def run(args) -> int:
    from dataclasses import replace

    from lmforge.data.curate.executors import log
    from lmforge.data.curate.pipeline import curate
    from lmforge.data.curate.stats import totals

    cfg = load_curate_config(args.config, args.overrides)
    if args.workers is not None:
        cfg = replace(cfg, workers=args.workers)
    if args.executor:
        cfg = replace(cfg, executor=args.executor)
    if args.address:
        cfg = replace(cfg, ray_address=args.address, executor="ray")
    cfg.validate()
    tokenizer, shards = _shard_target(args)
    stats = curate(cfg, args.output, args.input or None)
    t = totals(stats)
    n_in, n_kept = t["input"].get("docs", 0), t["kept"].get("docs", 0)
    log(
        f"{n_in:,} documents in, {n_kept:,} kept, {n_in - n_kept:,} removed "
        f"({t['input'].get('bytes', 0) / 1e6:.2f} MB -> {t['kept'].get('bytes', 0) / 1e6:.2f} MB)"
    )
    for reason, c in list(t["removed"].items())[:8]:
        log(f"  {c['docs']:>8,}  {reason}")
    out = args.output.rstrip("/")
    log(f"kept: {out}/kept/  removed: {out}/removed/  stats: {out}/stats.json  report: {out}/report.md")
    if tokenizer is not None:
        if n_kept == 0:
            raise LmforgeError(
                "curation kept no documents, so there is nothing to encode into shards; "
                "see the removal reasons above and report.md"
            )
        _encode_shards(Path(out) / ("mixed" if cfg.mix.enabled else "kept"), tokenizer, shards, cfg.workers)
    return 0


def _shard_target(args):
    """(Tokenizer, shard folder) for --tokenizer, checked before any curation work; (None, None) without."""
    if args.shards and not args.tokenizer:
        raise LmforgeError("--shards needs --tokenizer (the tokenizer.json that encodes the documents)")
    if not args.tokenizer:
        return None, None
    from lmforge.tokenizer import Tokenizer

    if not Path(args.tokenizer).is_file():
        raise LmforgeError(
            f"--tokenizer {args.tokenizer}: no such file "
            "(a tokenizer.json, e.g. from `lmforge tokenizer train`)"
        )
    shards = Path(args.shards or Path(args.output) / "shards")
    if (shards / "meta.json").exists():
        raise LmforgeError(f"{shards} already holds token shards; choose another --shards or remove it")
    return Tokenizer.load(args.tokenizer), shards


def _encode_shards(docs_dir: Path, tokenizer, shards: Path, workers: int) -> None:
    from lmforge.data.config import DataConfig
    from lmforge.data.curate.executors import log
    from lmforge.data.documents import read_documents
    from lmforge.data.shards import encode_corpus

    meta = encode_corpus(read_documents(docs_dir), tokenizer, shards, DataConfig(workers=workers))
    for split, s in meta["splits"].items():
        log(f"{split}: {s['documents']:,} documents, {s['tokens']:,} tokens")
    log(f"shards: {shards}/ (train with data.shards={shards})")
