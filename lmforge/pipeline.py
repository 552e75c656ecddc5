"""The stages of a run, chained through files in the run directory.

Each stage reuses what an earlier invocation already wrote (tokenizer.json, the token shards,
the latest checkpoint), so re-running a command resumes instead of starting over, and nothing a
user already has is overwritten.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from lmforge.config import RunConfig
from lmforge.data.curate.pipeline import curate
from lmforge.data.curate.report import report_section as curation_section
from lmforge.data.curate.stats import totals
from lmforge.errors import LmforgeError
from lmforge.eval import report_section as eval_section
from lmforge.eval.cli import evaluate_run
from lmforge.eval.results import summary_rows, text_table
from lmforge.export import apply_init
from lmforge.inputs import fit_model_to_tokenizer, log, prepare_shards, prepare_tokenizer
from lmforge.inspect.report import SECTION as INSIDE_SECTION
from lmforge.inspect.report import inside_the_model
from lmforge.plan.report import report_section as compute_report
from lmforge.report import read_metrics, update_report_section, write_report
from lmforge.serve.generate import generate
from lmforge.train.checkpoint import load_model
from lmforge.train.loop import train
from lmforge.train.parallel.dist import rank_zero_first
from lmforge.train.parallel.launch import is_main_process
from lmforge.tune import stage


def embedded_raw_sources() -> list[str]:
    """The embedded corpus as raw input for curation: the clean books plus real, noisy web pages
    with exact duplicates (lmforge/corpus/README.md), so every curation stage has work to do."""
    from importlib import resources

    folder = resources.files("lmforge") / "corpus"
    return [str(folder / "demo.jsonl.gz"), str(folder / "web_sample.jsonl.gz")]


def curate_stage(cfg: RunConfig) -> tuple[Path, str] | None:
    """Curate data.corpus into <run>/curated and point data.corpus at the kept documents."""
    from dataclasses import replace

    if not cfg.data.curate or cfg.data.shards:
        return None
    out = cfg.run_dir / "curated"
    inputs = embedded_raw_sources() if cfg.data.corpus == "embedded" else [cfg.data.corpus]
    if not Path(inputs[0]).exists() and cfg.data.corpus != "embedded":
        raise LmforgeError(f"data.corpus not found: {cfg.data.corpus}")
    t0 = time.time()
    ccfg = replace(cfg.curate, sources=[]) if cfg.curate.sources else cfg.curate
    stats = curate(ccfg, out, inputs=None if cfg.curate.sources else inputs)
    cfg.data.corpus = str(out / "kept")
    tot = totals(stats)
    n_in, n_kept = tot["input"].get("docs", 0), tot["kept"].get("docs", 0)
    if n_in == 0:
        raise LmforgeError(f"no documents in {', '.join(inputs)} (data.corpus={cfg.data.corpus})")
    if n_kept == 0:
        raise LmforgeError(
            f"curation kept none of the {n_in} documents of data.corpus={cfg.data.corpus}; "
            f"see {out / 'report.md'} for the reasons"
        )
    log(
        f"curate: {tot['input'].get('docs', 0):,} documents in, {tot['kept'].get('docs', 0):,} kept "
        f"in {time.time() - t0:.1f}s -> {out}"
    )
    return out, curation_section(stats)


# What decides a run's tokens: a run directory keeps training on what it was made from.
INPUTS_FILE = "inputs.yaml"
INPUT_KEYS = (
    ("data", "corpus"),
    ("data", "shards"),
    ("data", "val_fraction"),
    ("data", "seed"),
    ("tokenizer", "vocab_size"),
    ("tokenizer", "min_frequency"),
    ("tokenizer", "path"),
)


def run_inputs(cfg: RunConfig, corpus: str | None = None) -> dict:
    """The data and tokenizer settings of this command (corpus: the one asked for, before curation)."""
    values = {f"{s}.{k}": getattr(getattr(cfg, s), k) for s, k in INPUT_KEYS}
    if corpus is not None:
        values["data.corpus"] = corpus
    return values


def check_run_inputs(cfg: RunConfig, inputs: dict) -> None:
    """Refuse to reuse a run directory made from another corpus or tokenizer: its tokenizer and
    shards would be silently reused (and the new data never trained on)."""
    import yaml

    path = cfg.run_dir / INPUTS_FILE
    if not path.is_file():
        return
    before = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    changed = [
        f"{k}={inputs[k]} (the run has {before[k]})" for k in inputs if k in before and before[k] != inputs[k]
    ]
    if changed:
        raise LmforgeError(
            f"{cfg.run_dir} was made from other data: {', '.join(changed)}; its tokenizer and "
            f"shards would be reused as they are, so start a new run with name={_free_name(cfg)} "
            "(or another unused name)"
        )


def record_run_inputs(cfg: RunConfig, inputs: dict) -> None:
    import yaml

    path = cfg.run_dir / INPUTS_FILE
    if is_main_process() and not path.exists():
        path.write_text(yaml.safe_dump(inputs, sort_keys=False), encoding="utf-8")


def _free_name(cfg: RunConfig) -> str:
    i = 2
    while (Path(cfg.out_dir) / f"{cfg.name}-{i}").exists():
        i += 1
    return f"{cfg.name}-{i}"


def train_stage(cfg: RunConfig, inputs: dict | None = None):
    """Tokenizer, shards and pre-training; returns (TrainResult, tokenizer). `inputs`: run_inputs()
    taken before curation rewrote data.corpus (default: taken now)."""
    run_dir = cfg.run_dir
    # Under torchrun, rank 0 writes the tokenizer and shards; the other ranks then read them.
    with rank_zero_first(cfg.parallel):
        if cfg.train.init_from:
            apply_init(cfg)  # continued training: the initial model's shape and tokenizer become the run's
        inputs = inputs or run_inputs(cfg)
        check_run_inputs(cfg, inputs)
        fresh = not (run_dir / "tokenizer.json").exists()  # a run made now records what it is made from
        tok = prepare_tokenizer(cfg, run_dir)
        fit_model_to_tokenizer(cfg, tok.vocab_size)
        shard_dir = prepare_shards(cfg, tok, run_dir)
        if fresh:
            record_run_inputs(cfg, inputs)
    n = cfg.model.num_params()
    log(
        f"model: {cfg.model.kind}, {n / 1e6:.2f}M parameters, "
        f"{cfg.model.n_layer} layers x {cfg.model.n_embd} wide, "
        f"{cfg.model.flops_per_token(cfg.train.seq_len or cfg.model.block_size) / 1e6:.1f} MFLOPs/token"
    )
    result = train(cfg, shard_dir, tok, run_dir)
    return result, tok


def sample_stage(cfg: RunConfig, tok, stream: bool = True) -> list[str]:

    if cfg.model.kind != "decoder":
        return []
    model, _ = load_model(cfg.run_dir)
    samples = []
    for i in range(cfg.sample.num_samples):
        sc = cfg.sample
        if sc.seed is not None:
            sc = type(sc)(**{**sc.__dict__, "seed": sc.seed + i})
        print(f"--- sample {i + 1} ---", flush=True)
        if stream:
            sys.stdout.write(sc.prompt)
        text = generate(
            model,
            tok,
            sc.prompt,
            sc,
            on_text=(lambda s: (sys.stdout.write(s), sys.stdout.flush())) if stream else None,
        )
        print("\n", flush=True)
        samples.append(sc.prompt + text)
    return samples


def eval_stage(cfg: RunConfig) -> dict | None:
    """Benchmarks on the trained model (skipped for the encoder kinds); results go to <run>/eval/
    and a section of report.md."""

    ec = cfg.eval
    if not ec.enabled or cfg.model.kind != "decoder":
        return None
    t0 = time.time()
    shard_dir = Path(cfg.data.shards) if cfg.data.shards else cfg.run_dir / "data"
    results = evaluate_run(
        cfg.run_dir,
        tuple(ec.tasks),
        limit=ec.limit,
        shard_dir=shard_dir,
        data_dir=ec.data_dir,
        batch_size=ec.batch_size,
    )
    update_report_section(cfg.run_dir, "Evaluation", eval_section(results))
    tasks = results.get("tasks", {})
    truncated = sum(t.get("truncated_requests", 0) for t in tasks.values())
    if truncated:
        log(
            f"eval: {truncated} requests were longer than the {cfg.model.block_size}-token context "
            "and were cut from the left (as lm-evaluation-harness does)"
        )
    for name in results.get("errors", {}):
        log(f"eval: {name} not scored (see {cfg.run_dir / 'eval' / 'results.md'})")

    print(text_table(summary_rows(results)), flush=True)
    for note in results.get("notes", []):
        log(f"eval: {note}")
    log(f"eval: {len(tasks)} tasks in {time.time() - t0:.1f}s -> {cfg.run_dir / 'eval'}")
    return results


def sft_stage(cfg: RunConfig, tok) -> dict | None:
    """Instruction/dialog fine-tuning on the shipped set, ending with a chat exchange."""

    if not cfg.sft.enabled:
        return None
    overrides = {"max_steps": cfg.sft.max_steps} if cfg.sft.max_steps else {}
    result = stage.sft_stage(cfg, cfg.run_dir, tok, **overrides)
    if not result.get("skipped"):
        update_report_section(cfg.run_dir, stage.SECTION, stage.report_section(result))
    return result


def dpo_stage(cfg: RunConfig) -> dict | None:
    """Optional (dpo.enabled): preference tuning of the SFT model on a synthetic rule."""
    from lmforge.tune import dpo_demo  # work in progress (issue 17): loaded only when asked for

    if not cfg.dpo.enabled:
        return None
    result = dpo_demo.dpo_stage(cfg, cfg.run_dir, steps=cfg.dpo.max_steps)
    if not result.get("skipped"):
        update_report_section(cfg.run_dir, dpo_demo.SECTION, dpo_demo.report_section(result))
    return result


def run_all(cfg: RunConfig) -> dict:
    """`lmforge run`: every stage that exists, on the configured corpus."""
    t0 = time.time()
    run_dir = cfg.run_dir
    log(f"run directory: {run_dir}")
    inputs = run_inputs(cfg)
    check_run_inputs(cfg, inputs)  # before curation, which would curate the new corpus for nothing
    with rank_zero_first(cfg.parallel):
        curated = curate_stage(cfg)
    result, tok = train_stage(cfg, inputs)
    if not is_main_process():
        return result_dict(result)  # sampling, evaluation, fine-tuning and the report run once, on rank 0
    if result.stopped_early:
        # Interrupted or diverged: the checkpoint is saved; sampling/reporting a half-run would mislead.
        print_summary(result_dict(result))
        raise LmforgeError(result.stop_reason or "training stopped early")
    samples = sample_stage(cfg, tok)
    summary = result_dict(result)
    report = write_training_report(cfg, summary, samples)
    if curated is not None:
        update_report_section(run_dir, "Data curation", curated[1])
    update_report_section(run_dir, INSIDE_SECTION, inside_the_model(run_dir))  # attention, surprise, lens
    eval_stage(cfg)
    sft_stage(cfg, tok)
    dpo_stage(cfg)
    summary["total_s"] = time.time() - t0
    print_summary(summary)
    log(f"report: {report}")
    return summary


def write_training_report(cfg: RunConfig, summary: dict, samples: list[str] | None = None) -> Path:
    """report.md's training sections, loss.png and the compute section; returns the report's path."""
    report = write_report(cfg.run_dir, cfg, summary, samples or [])
    update_report_section(cfg.run_dir, "Compute", compute_section(cfg, summary))
    return report


def compute_section(cfg: RunConfig, summary: dict) -> str:
    """N, D, C of the run against the compute-optimal frontier, with its measured MFU."""
    mfus = [r["mfu"] for r in read_metrics(cfg.run_dir / "metrics.jsonl") if r.get("mfu")]
    extra = {"mfu": sorted(mfus)[len(mfus) // 2]} if mfus else {}
    return compute_report(cfg, {**summary, **extra})


def result_dict(result) -> dict:
    return dict(result.__dict__) if hasattr(result, "__dict__") else dict(result)


def print_summary(s: dict) -> None:
    if s.get("val_loss") is not None and math.isfinite(s["val_loss"]):
        print(f"held-out loss: {s['val_loss']:.4f} nats/token")
        print(f"perplexity: {s['val_ppl']:.2f}")
    if s.get("val_bpb") is not None:
        print(f"bits per byte: {s['val_bpb']:.4f}")
    if s.get("tokens_per_s"):
        print(f"throughput: {s['tokens_per_s']:,.0f} tokens/s")
    if s.get("total_s"):
        print(f"time: {s['total_s']:.1f}s")
