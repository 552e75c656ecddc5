"""lm-evaluation-harness task folders as they ship: `lmforge eval --include-path DIR --tasks NAME`.

Every `*.yaml` under DIR is indexed as lm-eval's TaskManager does (a `task:` name, a `group:` with
a task list, or a `tag:`), `include:` templates are merged (the including file wins), and a task's
config becomes an lmforge `Task` (base.py), so prompts, few-shot sampling and scoring run through
the same engine as the built-in tasks. Field semantics follow `lm_eval/api/task.py:
ConfigurableTask.doc_to_text/doc_to_target/doc_to_choice` (a column name takes the column; a
template is rendered, digits become an index, a list literal becomes a list; `doc_to_text` giving
an index means partial scoring, as WinoGrande).

`!function module.fn` imports `module.py` from beside the YAML file that names it, which runs
that Python as lm-eval does; only files inside the folder the user gave are imported. A key this
module does not implement is one error naming it, never silently ignored. Reading the files and
their fields is lmeval_fields.py, their documents lmeval_docs.py; this module maps keys to a Task.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.eval.tasks.base import Task
from lmforge.eval.tasks.lmeval_docs import Documents
from lmforge.eval.tasks.lmeval_fields import (
    FunctionRef,
    Resolver,
    choice_field,
    load_config,
    target_field,
    text_field,
)

# Keys of lm-eval's TaskConfig that map onto lmforge; the rest raise. Decontamination keys and
# aliases only change lm-eval's reports, so they are accepted and have no effect.
TASK_KEYS = {
    "task",
    "task_alias",
    "tag",
    "dataset_path",
    "dataset_name",
    "dataset_kwargs",
    "training_split",
    "validation_split",
    "test_split",
    "fewshot_split",
    "process_docs",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "process_results",
    "description",
    "target_delimiter",
    "fewshot_delimiter",
    "fewshot_config",
    "num_fewshot",
    "metric_list",
    "output_type",
    "generation_kwargs",
    "repeats",
    "should_decontaminate",
    "doc_to_decontamination_query",
    "metadata",
    "unsafe_code",
}
GROUP_KEYS = {"group", "group_alias", "task", "aggregate_metric_list", "metadata"}
GENERATION_KEYS = {"until", "max_gen_toks", "do_sample", "temperature"}
FEWSHOT_KEYS = {"sampler", "split"}
# metric -> the aggregation lm-eval uses for it, per output type (lm_eval/api/registry.py defaults)
METRICS = {
    "multiple_choice": {"acc": "mean", "acc_norm": "mean", "acc_bytes": "mean", "exact_match": "mean"},
    "loglikelihood": {"perplexity": "perplexity", "acc": "mean"},
    "loglikelihood_rolling": {
        "word_perplexity": "weighted_perplexity",
        "byte_perplexity": "weighted_perplexity",
        "bits_per_byte": "bits_per_byte",
    },
    "generate_until": {"exact_match": "mean"},
}
DEFAULT_METRICS = {
    "multiple_choice": ("acc", "acc_norm"),
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "generate_until": ("exact_match",),
}
EXACT_MATCH_KWARGS = {"ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore"}


# ---------------------------------------------------------------- metrics lm-eval computes its own way


def exact_match_hf(
    reference: str,
    prediction: str,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
    regexes_to_ignore: list[str] | None = None,
) -> float:
    """lm-eval's exact_match (HF evaluate's): no stripping; regexes removed, then the options."""
    a, b = str(reference), str(prediction)
    for rx in regexes_to_ignore or []:
        a, b = re.sub(rx, "", a), re.sub(rx, "", b)
    if ignore_case:
        a, b = a.lower(), b.lower()
    for chars, flag in ((string.punctuation, ignore_punctuation), (string.digits, ignore_numbers)):
        if flag:
            table = str.maketrans("", "", chars)
            a, b = a.translate(table), b.translate(table)
    return float(a == b)


def _metrics(cfg: dict, kind: str, where: Path) -> tuple[tuple[str, ...], dict[str, dict]]:
    entries = cfg.get("metric_list")
    if entries is None:
        return DEFAULT_METRICS[kind], {}
    names, kwargs = [], {}
    for e in entries:
        name = e.get("metric") if isinstance(e, dict) else None
        if not isinstance(name, str):
            raise LmforgeError(f"{where}: metric_list: {e!r}: lmforge runs named metrics only")
        if name not in METRICS[kind]:
            raise LmforgeError(
                f"{where}: metric {name!r} is not one lmforge computes for {kind} "
                f"(it has: {', '.join(METRICS[kind])})"
            )
        agg = e.get("aggregation", METRICS[kind][name])
        if agg != METRICS[kind][name]:
            raise LmforgeError(
                f"{where}: metric {name}: aggregation {agg!r} is not supported "
                f"(lmforge aggregates {name} by {METRICS[kind][name]})"
            )
        extra = {k: v for k, v in e.items() if k not in ("metric", "aggregation", "higher_is_better")}
        allowed = EXACT_MATCH_KWARGS if (kind == "generate_until" and name == "exact_match") else set()
        bad = sorted(set(extra) - allowed)
        if bad:
            raise LmforgeError(f"{where}: metric {name}: key {bad[0]!r} is not supported")
        names.append(name)
        kwargs[name] = extra
    return tuple(names), kwargs


# ---------------------------------------------------------------- task configs -> Task


def build_task(cfg: dict, where: Path, resolver: Resolver, group: tuple[str, ...] = ()) -> Task:
    name = cfg.get("task")
    if not isinstance(name, str):
        raise LmforgeError(f"{where}: a task needs a `task:` name")
    bad = sorted(set(cfg) - TASK_KEYS)
    if bad:
        raise LmforgeError(
            f"{where}: task {name}: key {bad[0]!r} is not supported by lmforge "
            f"(supported: {', '.join(sorted(TASK_KEYS - {'task'}))})"
        )
    kind = cfg.get("output_type", "generate_until")
    if kind not in METRICS:
        raise LmforgeError(f"{where}: task {name}: output_type {kind!r} is not one of {', '.join(METRICS)}")
    if cfg.get("repeats", 1) != 1:
        raise LmforgeError(f"{where}: task {name}: repeats {cfg['repeats']} is not supported (only 1)")
    if cfg.get("unsafe_code"):
        raise LmforgeError(f"{where}: task {name}: unsafe_code (running generated code) is not supported")
    fs = cfg.get("fewshot_config") or {}
    bad = sorted(set(fs) - FEWSHOT_KEYS)
    if bad:
        raise LmforgeError(
            f"{where}: task {name}: fewshot_config key {bad[0]!r} is not supported "
            f"(supported: {', '.join(sorted(FEWSHOT_KEYS))})"
        )
    sampler = {"default": "random", "first_n": "first_n"}.get(fs.get("sampler", "default"))
    if sampler is None:
        raise LmforgeError(
            f"{where}: task {name}: few-shot sampler {fs['sampler']!r} is not supported (default, first_n)"
        )

    def fn(key):
        v = cfg.get(key)
        return resolver.function(v, where) if isinstance(v, FunctionRef) else v

    has_choices = cfg.get("doc_to_choice") is not None
    text = _guard(
        text_field(fn("doc_to_text") if cfg.get("doc_to_text") is not None else "", has_choices, resolver),
        name,
        "doc_to_text",
    )
    target = _guard(
        target_field(
            fn("doc_to_target") if cfg.get("doc_to_target") is not None else "", has_choices, resolver
        ),
        name,
        "doc_to_target",
    )
    choice = (
        _guard(choice_field(fn("doc_to_choice"), resolver), name, "doc_to_choice") if has_choices else None
    )
    desc = cfg.get("description", "") or ""
    description = (
        _guard(lambda d: resolver.render(desc, d), name, "description")
        if ("{{" in desc or "{%" in desc)
        else desc
    )
    metrics, metric_kwargs = _metrics(cfg, kind, where)
    docs = Documents(cfg, where, resolver)
    gen = dict(cfg.get("generation_kwargs") or {})
    bad = sorted(set(gen) - GENERATION_KEYS)
    if bad:
        raise LmforgeError(
            f"{where}: task {name}: generation_kwargs key {bad[0]!r} is not supported "
            f"(supported: {', '.join(sorted(GENERATION_KEYS))})"
        )
    fewshot_delim = cfg.get("fewshot_delimiter", "\n\n")
    if kind == "generate_until":  # lm-eval: without generation_kwargs, stop at the few-shot delimiter
        until = gen.get("until", [fewshot_delim] if "generation_kwargs" not in cfg else [])
        gen = {
            "until": [until] if isinstance(until, str) else list(until),
            "max_gen_toks": int(gen.get("max_gen_toks", 256)),
            "temperature": float(gen.get("temperature", 1.0)) if gen.get("do_sample") else 0.0,
        }

    def doc_target(d):
        t = target(d)
        if isinstance(t, list) and kind == "multiple_choice" and not task.partial:
            raise LmforgeError(
                f"task {name}: several gold answers (doc_to_target gave a list) are not supported"
            )
        if kind == "generate_until" and choice is not None:  # lm-eval: the target indexes the choices
            return choice(d)[t]
        return t

    task = Task(
        name=name,
        output_type=kind,
        load_split=docs.split,
        doc_to_text=text,
        doc_to_target=doc_target,
        doc_to_choice=(lambda d: [str(c) for c in choice(d)])
        if choice is not None and kind == "multiple_choice"
        else None,
        description=description,
        target_delimiter=cfg.get("target_delimiter", " "),
        fewshot_delimiter=fewshot_delim,
        test_split=cfg.get("test_split"),
        validation_split=cfg.get("validation_split"),
        training_split=cfg.get("training_split"),
        fewshot_split=cfg.get("fewshot_split", fs.get("split")),
        fewshot_sampler=sampler,
        num_fewshot=int(cfg.get("num_fewshot") or 0),
        metrics=metrics,
        generation=gen,
        group=group,
        version=str((cfg.get("metadata") or {}).get("version", "1.0")),
        source=_source(cfg, where),
    )
    if kind == "loglikelihood_rolling":
        task.doc_to_target = lambda d: str(target(d))
    process = fn("process_results")
    if process is not None:
        if kind == "loglikelihood_rolling" or not all(METRICS[kind][m] == "mean" for m in metrics):
            raise LmforgeError(
                f"{where}: task {name}: process_results is supported for metrics averaged "
                "over documents (aggregation: mean) only"
            )
        task.process_results = _wrap_process(process, kind, name)
    elif kind == "generate_until":
        em = metric_kwargs.get("exact_match", {})
        task.process_results = lambda d, out: {
            "exact_match": exact_match_hf(task.doc_to_target(d), out, **em)
        }
    return task


def _guard(field: Callable, task: str, key: str) -> Callable:
    """A field's template or the user's function failing on a document: one error naming both."""

    def call(doc):
        try:
            return field(doc)
        except LmforgeError:
            raise
        except Exception as e:  # noqa: BLE001 -- jinja2 UndefinedError, KeyError from a user function, ...
            cols = ", ".join(doc) if isinstance(doc, dict) else type(doc).__name__
            raise LmforgeError(
                f"task {task}: {key} failed on a document: {type(e).__name__}: {e} (columns: {cols})"
            ) from None

    return call


def _wrap_process(process: Callable, kind: str, name: str) -> Callable:
    """lm-eval passes results as a list: (ll, is_greedy) tuples, or one generated string."""

    def call(doc, results):
        args = [results] if kind == "generate_until" else [tuple(r) for r in results]
        try:
            out = process(doc, args)
        except Exception as e:  # noqa: BLE001 -- the user's function
            raise LmforgeError(f"task {name}: process_results failed: {type(e).__name__}: {e}") from None
        return {k: float(v) for k, v in out.items()}

    return call


def _source(cfg: dict, where: Path) -> str:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    data = (
        f"{cfg.get('dataset_path')}:{files}"
        if files
        else f"hub:{cfg.get('dataset_path')}" + (f"/{cfg['dataset_name']}" if cfg.get("dataset_name") else "")
    )
    return f"{where} ({data})"


class TaskFolder:
    """The lm-eval task configs under one or more folders: tasks, groups and tags by name."""

    def __init__(self, roots: list[str | Path]):
        self.tasks: dict[str, tuple[dict, Path, Resolver]] = {}
        self.groups: dict[str, tuple[dict, Path, Resolver]] = {}
        self.tags: dict[str, list[str]] = {}
        for root in roots:
            root = Path(root)
            if not root.is_dir():
                raise LmforgeError(f"--include-path: no folder {root}")
            resolver = Resolver(root)
            for path in sorted(root.rglob("*.yaml")):
                try:
                    cfg = load_config(path)
                except LmforgeError:
                    continue  # templates that are not tasks on their own may not parse alone; named if asked
                self._index(cfg, path, resolver)

    def _index(self, cfg: dict, path: Path, resolver: Resolver) -> None:
        if "group" in cfg and "task" in cfg and isinstance(cfg["group"], str):
            self.groups[cfg["group"]] = (cfg, path, resolver)
        elif isinstance(cfg.get("task"), str):
            self.tasks[cfg["task"]] = (cfg, path, resolver)
            tags = cfg.get("tag") or []
            for t in [tags] if isinstance(tags, str) else tags:
                self.tags.setdefault(t, []).append(cfg["task"])

    def __contains__(self, name: str) -> bool:
        return name in self.tasks or name in self.groups or name in self.tags

    def names(self) -> list[str]:
        return sorted(set(self.tasks) | set(self.groups) | set(self.tags))

    def get(self, name: str, group: tuple[str, ...] = (), overrides: dict | None = None) -> list[Task]:
        if name in self.groups:
            cfg, path, resolver = self.groups[name]
            bad = sorted(set(cfg) - GROUP_KEYS)
            if bad:
                raise LmforgeError(f"{path}: group {name}: key {bad[0]!r} is not supported by lmforge")
            members = cfg["task"] if isinstance(cfg["task"], list) else [cfg["task"]]
            out: list[Task] = []
            for m in members:
                if isinstance(m, str):
                    out += self.get(m, group + (name,))
                elif isinstance(m, dict) and isinstance(m.get("task"), str):
                    if m["task"] in self.tasks or m["task"] in self.groups:
                        out += self.get(
                            m["task"], group + (name,), {k: v for k, v in m.items() if k != "task"}
                        )
                    else:  # a task defined inline in the group file
                        out.append(build_task(m, path, resolver, group + (name,)))
                else:
                    raise LmforgeError(f"{path}: group {name}: member {m!r} is not a task name or config")
            return out
        if name in self.tasks:
            cfg, path, resolver = self.tasks[name]
            return [build_task({**cfg, **(overrides or {})}, path, resolver, group)]
        if name in self.tags:  # a tag selects its tasks; unlike a group it is not aggregated
            return [t for n in self.tags[name] for t in self.get(n, group)]
        raise LmforgeError(f"no task, group or tag {name!r} in the --include-path folders")
