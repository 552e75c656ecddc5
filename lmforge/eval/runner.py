"""Run tasks on a model and aggregate: per task, per group (MMLU categories), with stderr.

A task that fails (bad data, a prompt longer than the model's context, ...) is recorded under
`errors` and the others still run, so one bad task never loses the rest.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence

from tqdm import tqdm

from lmforge.errors import LmforgeError
from lmforge.eval.generation import cut_at_stops, generate_until, reference_metrics
from lmforge.eval.lm import LM
from lmforge.eval.loglik import Encoder, loglikelihood, loglikelihood_tokens
from lmforge.eval.metrics import mean, mean_stderr, multiple_choice, pooled_stderr, unweighted_stderr
from lmforge.eval.perplexity import perplexity_of_texts
from lmforge.eval.tasks.base import Task

LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity", "perplexity"}


def _progress(total: int, desc: str, enabled: bool, unit: str = "req"):
    """A progress bar on a terminal, on rank 0 only (torchrun sets RANK); nothing in logs and CI."""
    rank0 = os.environ.get("RANK", "0") in ("", "0")
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled or not rank0 or not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )


class WindowBar:
    """Progress of a perplexity evaluation, counted in context windows: the scorer learns their
    number only after tokenising (loglik.loglikelihood_rolling_tokens calls set_total)."""

    def __init__(self, desc: str, enabled: bool = True):
        self.bar = _progress(0, desc, enabled, unit="window")

    def set_total(self, n: int) -> None:
        self.bar.reset(total=n)

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def run_task(
    lm: LM,
    task: Task,
    *,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 1234,
    system_prompt: str | None = None,
    cache=None,
    share_prefix: bool = True,
    log_samples: bool = False,
    progress: bool = True,
    apply_chat_template: bool = False,
) -> dict:
    """Evaluate one task; returns {metrics, stderr, n, num_fewshot, ...} (+ samples).

    apply_chat_template: each context is rendered in the chat template (Task.build_chat_messages,
    lmforge/chat/template.py) and scored by token ids; the continuation follows <|assistant|>."""
    t0 = time.perf_counter()
    docs = task.eval_docs()
    docs = list(docs[:limit] if limit is not None else docs)
    if not docs:
        raise LmforgeError(f"task {task.name}: no documents to evaluate")
    k = task.num_fewshot if num_fewshot is None else num_fewshot
    if task.output_type == "loglikelihood_rolling" and k:
        raise LmforgeError(f"task {task.name} scores whole documents; it takes no few-shot examples")
    per_doc: list[dict[str, float]] = []
    samples: list[dict] = []
    extra: dict = {}
    stats: dict = {}  # filled by the log-likelihood engine

    chat_ids: list[list[int]] | None = None
    if apply_chat_template and task.output_type in ("multiple_choice", "generate_until"):
        contexts, chat_ids = chat_contexts(lm, task, docs, k, seed, system_prompt)

    if task.output_type == "multiple_choice":
        if chat_ids is None:
            contexts = task.build_contexts(docs, k, seed, system_prompt)
        if chat_ids is not None and task.multiple_inputs(docs):
            raise LmforgeError(
                f"task {task.name} scores one continuation after several contexts; "
                "--apply-chat-template does not support that"
            )
        choices = [task.choices(d) for d in docs]
        golds = [task.gold(d) for d in docs]
        requests = [r for rs in task.mc_requests(contexts, docs) for r in rs]
        with _progress(len(requests), task.name, progress) as bar:
            if chat_ids is None:
                scored = loglikelihood(
                    lm,
                    requests,
                    batch_size,
                    share_prefix=share_prefix,
                    cache=cache,
                    progress=bar.update,
                    encoder=Encoder(lm),
                    stats=stats,
                )
            else:  # the context ends in <|assistant|>, a token boundary: encode the continuation alone
                conts = sorted({x for _, x in requests})
                cont_ids = dict(zip(conts, lm.encode_batch(conts)))
                pairs = [
                    (ids, cont_ids[task.target_delimiter + c])
                    for ids, ch in zip(chat_ids, choices)
                    for c in ch
                ]
                if any(not x for _, x in pairs):
                    raise LmforgeError(f"task {task.name}: empty continuation: nothing to score")
                stats["truncated"] = sum(len(c) + len(x) > lm.max_length + 1 for c, x in pairs)
                scored = loglikelihood_tokens(
                    lm,
                    pairs,
                    batch_size,
                    share_prefix=share_prefix,
                    cache=cache,
                    progress=bar.update,
                    stats=stats,
                )
        if stats["truncated"]:  # lm-eval cuts such prompts from the left too; say so, don't hide it
            extra["truncated_requests"] = stats["truncated"]
            if progress:  # else the caller summarises; one line per MMLU subject would drown the output
                print(
                    f"lmforge eval: {task.name}: {stats['truncated']} of {len(requests)} requests are "
                    f"longer than the model's context ({lm.max_length} tokens) and were cut from the left",
                    file=sys.stderr,
                )
        pos = 0
        for d, ctx, ch, gold in zip(docs, contexts, choices, golds):
            s = scored[pos : pos + len(ch)]
            pos += len(ch)
            if task.process_results is not None:
                m = task.process_results(d, s)
            else:
                m = multiple_choice([x.ll for x in s], [x.greedy for x in s], ch, gold, task.metrics)
            per_doc.append(m)
            if log_samples:
                samples.append(
                    {
                        "context": ctx,
                        "choices": ch,
                        "gold": gold,
                        "loglikelihoods": [x.ll for x in s],
                        "greedy": [x.greedy for x in s],
                        **m,
                    }
                )
        chance = task.chance(docs) if task.chance else mean([1.0 / len(ch) for ch in choices])
        extra["chance"] = chance

    elif task.output_type == "loglikelihood":  # one continuation per document (lm-eval's LAMBADA)
        if chat_ids is not None:
            raise LmforgeError(f"task {task.name}: --apply-chat-template scores choices or generations only")
        contexts = task.build_contexts(docs, k, seed, system_prompt)
        requests = [
            (ctx, str(task.doc_to_target(d))) for ctx, d in zip(contexts, docs)
        ]  # no delimiter, as lm-eval
        with _progress(len(requests), task.name, progress) as bar:
            scored = loglikelihood(
                lm,
                requests,
                batch_size,
                share_prefix=share_prefix,
                cache=cache,
                progress=bar.update,
                encoder=Encoder(lm),
                stats=stats,
            )
        if stats["truncated"]:
            extra["truncated_requests"] = stats["truncated"]
        for d, (ctx, cont), s in zip(docs, requests, scored):
            if task.process_results is not None:
                m = task.process_results(d, [s])
            else:  # perplexity is aggregated below as exp(-mean log-likelihood)
                m = {name: (s.ll if name == "perplexity" else float(s.greedy)) for name in task.metrics}
            per_doc.append(m)
            if log_samples:
                samples.append(
                    {"context": ctx, "continuation": cont, "loglikelihood": s.ll, "greedy": s.greedy, **m}
                )

    elif task.output_type == "generate_until":
        if chat_ids is None:
            contexts = task.build_contexts(docs, k, seed, system_prompt)
        g = task.generation
        with _progress(len(docs), task.name, progress) as bar:
            for i, (d, ctx) in enumerate(zip(docs, contexts)):
                args = (
                    g.get("until", [task.fewshot_delimiter]),
                    g.get("max_gen_toks", 256),
                    g.get("temperature", 0.0),
                    seed + i,
                )
                out = (
                    generate_until(lm, ctx, *args)
                    if chat_ids is None
                    else chat_generate_until(lm, chat_ids[i], *args)
                )
                if task.process_results is not None:
                    m = task.process_results(d, out)
                else:
                    m = reference_metrics(task.doc_to_target(d), out, task.metrics)
                per_doc.append(m)
                if log_samples:
                    samples.append({"context": ctx, "completion": out, **m})
                bar.update(1)

    elif task.output_type == "loglikelihood_rolling":
        texts = [task.doc_to_target(d) for d in docs]
        counted = [task.count_text(d) for d in docs] if task.count_text else texts
        with WindowBar(task.name, progress) as bar:
            summary, lls = perplexity_of_texts(lm, texts, counted, batch_size, bar)
        metrics = {m: summary[m] for m in (*task.metrics, "token_perplexity")}
        if log_samples:
            samples = [{"loglikelihood": ll, "text_chars": len(t)} for ll, t in zip(lls, texts)]
        seconds = time.perf_counter() - t0
        res = {
            "metrics": metrics,
            "stderr": {m: None for m in metrics},
            "n": len(docs),
            "num_fewshot": 0,
            "counts": {c: summary[c] for c in ("words", "bytes", "tokens")},
        }
        return _finish(res, task, seconds, samples if log_samples else None)
    else:
        raise LmforgeError(f"task {task.name}: unknown output_type {task.output_type!r}")

    names = list(per_doc[0])
    metrics = {m: mean([p[m] for p in per_doc]) for m in names}
    stderr = {m: mean_stderr([p[m] for p in per_doc]) for m in names}
    if task.output_type == "loglikelihood" and "perplexity" in metrics and task.process_results is None:
        metrics["perplexity"] = math.exp(-metrics["perplexity"])  # lm-eval bootstraps its stderr: none here
        stderr["perplexity"] = None
    if "model_seconds" in stats:  # model compute, and how much of it was padding (loglik._Meter)
        extra["model_seconds"] = round(stats["model_seconds"], 3)
        extra["model_cpu_seconds"] = round(stats["model_cpu_seconds"], 3)
        extra["positions"] = {"real": stats["positions_real"], "padded": stats["positions_padded"]}
    res = {"metrics": metrics, "stderr": stderr, "n": len(docs), "num_fewshot": k, **extra}
    return _finish(res, task, time.perf_counter() - t0, samples if log_samples else None)


def chat_contexts(
    lm: LM,
    task: Task,
    docs,
    k: int,
    seed: int,
    system_prompt: str | None,
) -> tuple[list[str], list[list[int]]]:
    """(display text, token ids) of every document's context in the chat template, ending in
    <|assistant|>. Needs an lmforge run: the role tokens are its tokenizer's."""
    from lmforge.chat.template import render_chat, render_chat_text

    tok = getattr(lm, "tok", None)
    if not all(hasattr(tok, a) for a in ("user_id", "assistant_id", "system_id", "end_id", "eot_id")):
        raise LmforgeError(
            "--apply-chat-template needs an lmforge run (its tokenizer has the chat template's "
            "role tokens); a --hf-model has its own template, which lmforge eval does not apply"
        )
    messages = task.build_chat_messages(docs, k, seed, system_prompt)
    return (
        [render_chat_text(m, add_generation_prompt=True) for m in messages],
        [render_chat(m, tok, add_generation_prompt=True) for m in messages],
    )


def chat_generate_until(
    lm: LM, ids: list[int], until, max_gen_toks: int, temperature: float, seed: int
) -> str:
    """generate_until from chat-template token ids: the reply also ends at <|end|>."""
    if max_gen_toks >= lm.max_length:
        raise LmforgeError(
            f"max_gen_toks={max_gen_toks} must be less than the model's context ({lm.max_length})"
        )
    stops = [s for s in until if s]
    end_ids = {lm.tok.end_id, lm.tok.eot_id}
    longest = max((len(s) for s in stops), default=0)
    out: list[int] = []
    for t in lm.generate_tokens(ids[-(lm.max_length - max_gen_toks) :], max_gen_toks, temperature, seed):
        if t in end_ids:
            break
        out.append(t)
        if stops and any(s in lm.decode(out[-(longest + 8) :]) for s in stops):
            break
    return cut_at_stops(lm.decode(out), stops)


def _finish(res: dict, task: Task, seconds: float, samples) -> dict:
    res.update(
        {
            "output_type": task.output_type,
            "source": task.source,
            "version": task.version,
            "group": list(task.group),
            "seconds": round(seconds, 3),
            "docs_per_s": round(res["n"] / seconds, 2) if seconds > 0 else None,
        }
    )
    if samples is not None:
        res["samples"] = samples
    return res


def aggregate_groups(tasks: dict[str, dict]) -> dict[str, dict]:
    """Size-weighted group means with pooled stderr, bottom up (lm-eval's `weight_by_size: True`),
    plus `subject_mean`: the unweighted mean of the members (Open LLM Leaderboard v1's MMLU)."""
    members: dict[str, list[str]] = {}  # group -> direct members (task or subgroup names)
    for name, r in tasks.items():
        path = r.get("group") or []
        for i, g in enumerate(path):
            child = path[i + 1] if i + 1 < len(path) else name
            members.setdefault(g, [])
            if child not in members[g]:
                members[g].append(child)
    out: dict[str, dict] = {}

    def agg(g: str) -> dict:
        if g in out:
            return out[g]
        parts = [tasks[m] if m in tasks else agg(m) for m in members[g]]
        sizes = [p["n"] for p in parts]
        metrics, stderr = {}, {}
        for m in parts[0]["metrics"]:
            vals = [p["metrics"][m] for p in parts]
            metrics[m] = sum(v * n for v, n in zip(vals, sizes)) / sum(sizes)
            ses = [p["stderr"].get(m) for p in parts]
            stderr[m] = (
                pooled_stderr(ses, sizes)
                if all(s is not None for s in ses) and sum(sizes) > len(sizes)
                else None
            )
        leaves = _leaves(g, members, tasks)
        sub = {m: mean([tasks[t]["metrics"][m] for t in leaves]) for m in metrics}
        sub_se = {m: unweighted_stderr([tasks[t]["stderr"][m] for t in leaves]) for m in metrics}
        out[g] = {
            "metrics": metrics,
            "stderr": stderr,
            "n": sum(sizes),
            "members": members[g],
            "subject_mean": sub,
            "subject_mean_stderr": sub_se,
            "num_tasks": len(leaves),
            "num_fewshot": parts[0].get("num_fewshot"),
            "chance": (
                sum(p.get("chance", 0) * p["n"] for p in parts) / sum(sizes)
                if all("chance" in p for p in parts)
                else None
            ),
        }
        return out[g]

    for g in members:
        agg(g)
    return out


def _leaves(g: str, members: dict[str, list[str]], tasks: dict) -> list[str]:
    out = []
    for m in members[g]:
        out.extend([m] if m in tasks else _leaves(m, members, tasks))
    return out


def evaluate(lm: LM, tasks: Sequence[Task], **kw) -> dict:
    """Run every task; returns {"model", "tasks", "groups", "errors", "settings"}."""
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    for task in tasks:
        try:
            results[task.name] = run_task(lm, task, **kw)
        except LmforgeError as e:
            errors[task.name] = str(e)
            if kw.get("progress", True):
                print(f"lmforge eval: {task.name} failed: {e}", file=sys.stderr)
    settings = {k: v for k, v in kw.items() if k not in ("cache", "progress")}
    return {
        "model": lm.name,
        "max_length": lm.max_length,
        "tasks": results,
        "groups": aggregate_groups(results),
        "errors": errors,
        "settings": settings,
        "seconds": round(time.perf_counter() - t0, 3),
    }
