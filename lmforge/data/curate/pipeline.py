"""`curate(cfg, output)`: read every source, filter, de-duplicate, write kept/ and removed/, account.

Three phases over shards (one shard = one input file or byte range of a large JSONL file):
1. filter (parallel): read -> per-document stages (stages.py) -> removed/part-N.filtered.*
   for documents a stage drops; survivors go to work/ with their exact key and LSH band keys;
2. de-duplicate (parallel by partition, then union-find over candidate pairs; dedup.py), then,
   if enabled, count lines shared by many kept documents (boilerplate.py);
3. write (parallel): survivors minus duplicates, boilerplate lines stripped -> kept/part-N.*;
   duplicates (and documents that were nothing but boilerplate) -> removed/part-N.dedup.*.
Each job leaves a completion marker, so a rerun with the same config skips finished shards.
inputs.json records every input file's size and mtime when a run starts: a rerun (resume or
finished) whose inputs differ is refused, naming the files, instead of reusing stale results.
Then stats.json (input = kept + sum of removed, per source: checked), report.md, errors.jsonl,
and the optional domain mix (mixed/).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.atomic import write_atomic, write_text_atomic
from lmforge.data.curate import boilerplate, dedup
from lmforge.data.curate.classifier_training import prepare_classifier
from lmforge.data.curate.config import CurateConfig, SourceConfig
from lmforge.data.curate.decontam import build_index
from lmforge.data.curate.executors import log, run_jobs
from lmforge.data.curate.minhash import MinHasher, band_keys, exact_key
from lmforge.data.curate.mix import mix
from lmforge.data.curate.report import write_report
from lmforge.data.curate.shards import ShardWriter, read_shard
from lmforge.data.curate.sources import WEB_FORMATS, ReadError, Task, fingerprint, plan_tasks, read_task
from lmforge.data.curate.stages import DocPipeline
from lmforge.data.curate.stats import Stats, check_invariant, merge
from lmforge.errors import LmforgeError
from lmforge.typed_config import from_dict, read_recipe, to_dict, to_yaml

RUN_KEYS = ("workers", "executor", "ray_address")  # may change between a run and its resume
_PIPE: dict[str, Any] = {}  # per process: the DocPipeline for a work dir


def _pipeline(cfg: CurateConfig, work: Path) -> DocPipeline:
    key = str(work)
    if key not in _PIPE:
        _PIPE.clear()
        _PIPE[key] = DocPipeline(cfg, work)
    return _PIPE[key]


def _save_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    write_atomic(path, lambda tmp: np.save(tmp, arr), suffix=".npy")


def filter_shard(cfg: CurateConfig, task: Task, out: str) -> dict:
    """Phase 1 for one shard; returns its stats (also saved as the completion marker)."""
    out_dir, work = Path(out), Path(out) / "work"
    done = work / "a" / f"{task.index:05d}.done.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    src = cfg.sources[task.source]
    pipe = _pipeline(cfg, work)
    stats = Stats(cfg.examples_per_reason, cfg.label_field)
    stem = f"{task.index:05d}"
    removed = ShardWriter(out_dir / "removed" / f"part-{stem}.filtered", cfg.output_format)
    passed = ShardWriter(work / "a" / f"{stem}.pass", "jsonl")
    err_tmp = work / "a" / f"{stem}.errors.jsonl.tmp"
    d = cfg.dedup
    hasher = MinHasher(d.bands * d.rows, d.shingle_words, d.seed) if d.minhash else None
    exact, bands, sigs, batch, line_keys, dedup_texts = [], [], [], [], [], []
    error_label = src.domain or ("web" if task.format in WEB_FORMATS else "unknown")

    def flush() -> None:
        if hasher is not None and batch:
            sig = hasher.signatures(dedup_texts)
            bands.append(band_keys(sig, d.bands, d.rows))
            if d.verify_threshold > 0:
                sigs.append(sig)
        for doc in batch:
            passed.write(doc)
        batch.clear()
        dedup_texts.clear()

    with open(err_tmp, "w", encoding="utf-8") as errors:
        for rec in read_task(task, src, cfg.length.max_record_bytes):
            if isinstance(rec, ReadError):
                doc = {
                    "id": f"{rec.file}:{rec.line}",
                    "text": rec.raw,
                    "source": error_label,
                    "meta": {"file": rec.file, "line": rec.line, "detail": rec.detail},
                    "reason": rec.reason,
                }
                stats.input(error_label, "")
                stats.stage("read")
                stats.removed(error_label, rec.reason, doc)
                removed.write(doc)
                errors.write(
                    json.dumps(
                        {"file": rec.file, "line": rec.line, "reason": rec.reason, "detail": rec.detail},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                continue
            stats.input(rec["source"], rec["text"])
            reason = pipe(rec, stats)
            if reason:
                stats.removed(rec["source"], reason, rec)
                removed.write({**rec, "reason": reason})
                continue
            dedup_texts.append(pipe.normalized if d.signature_text == "original" else rec["text"])
            if d.exact:
                exact.append(exact_key(dedup_texts[-1]))
            if d.boilerplate_min_docs:
                line_keys.append(boilerplate.document_keys(rec["text"]))
            batch.append(rec)
            if len(batch) >= 512:
                flush()
        flush()
    n = passed.count
    _save_npy(work / "a" / f"{stem}.exact.npy", np.array(exact, dtype=np.uint64))
    _save_npy(
        work / "a" / f"{stem}.bands.npy",
        np.concatenate(bands) if bands else np.zeros((0, d.bands), dtype=np.uint64),
    )
    if sigs:
        _save_npy(work / "a" / f"{stem}.sig.npy", np.concatenate(sigs))
    if d.boilerplate_min_docs:
        boilerplate.save_keys(work / "a" / f"{stem}.lines.npz", line_keys)
    passed.close()
    if removed.close() and removed.count == 0:
        removed.path.unlink()
    err_tmp.replace(work / "a" / f"{stem}.errors.jsonl")
    result = {"task": task.index, "passed": n, **stats.to_dict()}
    _save_json(done, result)
    return result


def write_shard(cfg: CurateConfig, index: int, out: str) -> dict:
    """Phase 3 for one shard: split its survivors into kept/ and removed duplicates; strip boilerplate."""
    out_dir, work = Path(out), Path(out) / "work"
    done = work / "c" / f"{index:05d}.done.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    rm = np.load(work / "b" / f"remove-{index:05d}.npz")
    codes = dict(zip(rm["index"].tolist(), rm["code"].tolist()))
    stats = Stats(cfg.examples_per_reason, cfg.label_field)
    kept = ShardWriter(out_dir / "kept" / f"part-{index:05d}", cfg.output_format)
    dups = ShardWriter(out_dir / "removed" / f"part-{index:05d}.dedup", cfg.output_format)
    parts = cfg.dedup.partitions
    shared = boilerplate.load_boilerplate(work, parts) if cfg.dedup.boilerplate_min_docs else None
    for i, doc in enumerate(read_shard(work / "a" / f"{index:05d}.pass.jsonl")):
        code = codes.get(i)
        if cfg.dedup.exact:
            stats.stage("exact_dedup")
        if cfg.dedup.minhash and code != dedup.EXACT:
            stats.stage("minhash_dedup")
        if code:
            reason = dedup.REASONS[code]
            stats.removed(doc["source"], reason, doc)
            dups.write({**doc, "reason": reason})
            continue
        if shared is not None:
            stats.stage("boilerplate")
            text, n = boilerplate.strip_lines(doc["text"], shared)
            if n:
                stats.counters["boilerplate"]["lines_removed"] += n
                stats.counters["boilerplate"]["documents_changed"] += 1
                if not text:
                    stats.removed(doc["source"], "boilerplate", doc)
                    dups.write({**doc, "reason": "boilerplate"})
                    continue
                doc = {**doc, "text": text}
        stats.kept(doc["source"], doc)
        kept.write(doc)
    for w in (kept, dups):
        w.close()
        if w.count == 0:
            w.path.unlink()
    result = stats.to_dict()
    (work / "c").mkdir(parents=True, exist_ok=True)
    _save_json(done, result)
    return result


def _prepare_output(cfg: CurateConfig, out: Path) -> dict | None:
    """Check the output folder; return the stats of a finished identical run, else None."""
    record = out / "curate.yaml"
    if out.exists() and any(out.iterdir()):
        if not record.exists():
            raise LmforgeError(f"output folder {out} exists and is not a curate run; choose a new --output")
        old = from_dict(CurateConfig, read_recipe(str(record)))
        if _identity(old) != _identity(cfg):
            raise LmforgeError(
                f"{out} holds a curate run with a different config or inputs; use a new --output "
                "(a rerun with the same config resumes it)"
            )
        if (out / "stats.json").exists():
            return json.loads((out / "stats.json").read_text(encoding="utf-8"))
        log(f"resuming the unfinished run in {out}")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(to_yaml(cfg), encoding="utf-8")
    return None


def _check_inputs(out: Path, now: dict[str, list[int]], finished: bool) -> None:
    """Refuse a rerun whose input files differ from the ones the run in `out` started with; record
    them for a new run. (Outputs from before inputs.json are not checked: nothing to compare with.)"""
    path = out / "inputs.json"
    if not path.exists():
        if finished:
            log(f"note: {out} predates input fingerprints (inputs.json); its inputs cannot be checked")
        else:
            _save_json(path, now)
        return
    then = json.loads(path.read_text(encoding="utf-8"))
    if then == now:
        return
    added = [f for f in now if f not in then]
    gone = [f for f in then if f not in now]
    changed = [f for f in now if f in then and now[f] != then[f]]
    parts = [
        f"{what} {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}"
        for what, files in (("new:", added), ("changed:", changed), ("gone:", gone))
        if files
    ]
    raise LmforgeError(
        f"the inputs changed since the run in {out} ({'; '.join(parts)}); use a new --output, "
        "or remove it to redo the run"
    )


def _identity(cfg: CurateConfig) -> dict:
    d = to_dict(cfg)
    for k in RUN_KEYS:
        d.pop(k, None)
    return d


def _prepare_resources(cfg: CurateConfig, work: Path) -> dict:
    info: dict[str, Any] = {}
    work.mkdir(parents=True, exist_ok=True)
    dc = cfg.decontamination
    if dc.enabled and dc.benchmarks:
        path = work / "decontam_index.npz"
        if not path.exists() or not (work / "decontam_index.json").exists():
            _save_json(work / "decontam_index.json", build_index(dc.benchmarks, dc.ngram, path))
        info["decontamination"] = json.loads((work / "decontam_index.json").read_text())
        items = sum(v["items"] for v in info["decontamination"].values())
        where = (
            "the subsets shipped with lmforge; set decontamination.benchmarks=DIR for the full sets"
            if dc.benchmarks == "bundled"
            else dc.benchmarks
        )
        log(f"decontamination: {items:,} items of {', '.join(info['decontamination'])} ({where})")
    elif dc.enabled:
        log("decontamination: off (decontamination.benchmarks is empty)")
    if cfg.classifier.enabled:
        info["classifier"] = prepare_classifier(cfg, work / "classifier.npz")
    return info


def curate(cfg: CurateConfig, output: str | Path, inputs: list[str] | None = None) -> dict:
    """Run the whole curation; returns the stats written to <output>/stats.json."""
    t0 = time.time()
    if inputs:
        if cfg.sources:
            raise LmforgeError("give the inputs either as --input or as the recipe's sources, not both")
        cfg = replace(cfg, sources=[SourceConfig(path=str(p)) for p in inputs])
    if not cfg.sources:
        raise LmforgeError("nothing to curate: pass --input PATH or list sources in the recipe")
    cfg.validate()
    out = Path(output)
    finished = _prepare_output(cfg, out)
    _check_inputs(out, fingerprint(cfg.sources), finished is not None)
    if finished is not None:
        log(f"{out} already holds this finished run; nothing to do")
        return finished
    work = out / "work"
    resources = _prepare_resources(cfg, work)
    tasks = plan_tasks(cfg.sources, cfg.shard_bytes)
    plan = [[t.path, t.start, t.end] for t in tasks]
    if (work / "tasks.json").exists() and json.loads((work / "tasks.json").read_text()) != plan:
        raise LmforgeError(f"the input files changed since the unfinished run in {out}; use a new --output")
    _save_json(work / "tasks.json", plan)
    (work / "a").mkdir(parents=True, exist_ok=True)
    log(f"{len(tasks)} shards from {len(cfg.sources)} source(s) -> {out}")
    if cfg.executor == "local" and (cfg.workers or 2) > 1:
        _pipeline(cfg, work)  # load models once; forked workers share them
    s = str(out)
    part_a = run_jobs(
        filter_shard, [(cfg, t, s) for t in tasks], cfg.executor, cfg.workers, "filter", cfg.ray_address
    )
    dedup_info = _dedup(cfg, work, len(tasks))
    part_c = run_jobs(
        write_shard, [(cfg, t.index, s) for t in tasks], cfg.executor, cfg.workers, "write", cfg.ray_address
    )
    stats = merge(part_a + part_c, cfg.examples_per_reason)
    check_invariant(stats)
    stats["dedup"] = dedup_info
    stats["resources"] = resources
    stats["shards"] = len(tasks)
    stats["seconds"] = round(time.time() - t0, 2)
    _concat_errors(work, out, len(tasks))
    if cfg.mix.enabled:
        stats["mix"] = mix(cfg.mix, stats, out, cfg.output_format)
    if (work / "classifier.npz").exists():
        shutil.copyfile(work / "classifier.npz", out / "classifier.npz")
    _save_json(out / "stats.json", stats)
    write_report(out, stats)
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _dedup(cfg: CurateConfig, work: Path, n_tasks: int) -> dict:
    d = cfg.dedup
    marker = work / "b" / "cluster.json"
    (work / "b").mkdir(parents=True, exist_ok=True)
    if marker.exists():
        return json.loads(marker.read_text())
    ids = list(range(n_tasks))
    jobs: list[tuple] = []
    if d.exact:
        jobs += [(work, ids, "exact", None, p, d.partitions) for p in range(d.partitions)]
    if d.minhash:
        jobs += [
            (work, ids, "bands", b, p, d.partitions) for b in range(d.bands) for p in range(d.partitions)
        ]
    files = run_jobs(dedup.bucket_job, jobs, cfg.executor, cfg.workers, "dedup partitions", cfg.ray_address)
    exact_files = [f for f, j in zip(files, jobs) if j[2] == "exact"]
    near_files = [f for f, j in zip(files, jobs) if j[2] == "bands"]
    info = dedup.cluster(work, near_files, exact_files, n_tasks, d.verify_threshold)
    if d.boilerplate_min_docs:
        jobs = [(work, ids, p, d.partitions, d.boilerplate_min_docs) for p in range(d.partitions)]
        files = run_jobs(
            boilerplate.count_job, jobs, cfg.executor, cfg.workers, "boilerplate lines", cfg.ray_address
        )
        info["boilerplate_lines"] = int(sum(len(np.load(f)) for f in files))
    _save_json(marker, info)
    return info


def _concat_errors(work: Path, out: Path, n_tasks: int) -> None:
    with open(out / "errors.jsonl", "w", encoding="utf-8") as dst:
        for t in range(n_tasks):
            f = work / "a" / f"{t:05d}.errors.jsonl"
            if f.exists():
                dst.write(f.read_text(encoding="utf-8"))
