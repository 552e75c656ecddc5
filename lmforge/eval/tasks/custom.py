"""Tasks declared in YAML, no code: data file, Jinja templates over its fields, gold, metrics.

    task: capitals                      # name in the results
    type: multiple_choice               # or generate_until, loglikelihood_rolling
    data: capitals.jsonl                # JSONL / CSV / Parquet, relative to this file;
                                        # or per split: {test: a.jsonl, train: b.jsonl}
    columns: [question, a, b, answer]   # CSV without a header row only
    description: ""                     # text before the examples
    doc_to_text: "Q: {{question}}\\nA:"
    doc_to_choice: "{{[a, b]}}"         # a list, a template evaluating to a list, or a column name
    doc_to_target: "{{answer}}"         # gold index or choice text; for generation the reference(s)
    num_fewshot: 0
    fewshot_split: train                # default: train, else validation, else test
    fewshot_sampler: random             # or first_n
    metrics: [acc, acc_norm]            # MC: acc acc_norm acc_bytes exact_match;
                                        # generation: exact_match bleu rouge1 rouge2 rougeL
    generation: {until: ["\\n"], max_gen_toks: 32, temperature: 0}

Templates follow lm-eval's conventions: a value that names a column takes that column; a template
that renders to digits is a choice index. Partial scoring (lm-eval's WinoGrande): when doc_to_text
gives an index, doc_to_choice gives the contexts and doc_to_target the continuation they share;
the gold is doc_to_text's index and each context is scored by the likelihood of that continuation:

    doc_to_text: "{{answer}}"                        # 1-based in the file? "{{answer|int - 1}}"
    doc_to_choice: "{{[prefix + option1, prefix + option2]}}"
    doc_to_target: "{{suffix}}"
 Every document is checked when the task loads, so a
template naming an absent column or a gold index out of range is reported with file, line and field.
"""

from __future__ import annotations

import ast
import contextlib
import re
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import LmforgeError
from lmforge.eval.tasks.base import Task
from lmforge.eval.tasks.data import read_jsonl

KEYS = {
    "task",
    "type",
    "data",
    "columns",
    "description",
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "target_delimiter",
    "fewshot_delimiter",
    "num_fewshot",
    "fewshot_split",
    "fewshot_sampler",
    "metrics",
    "generation",
    "version",
}
TYPES = {
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}
_SINGLE_EXPR = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


def _env():
    try:
        import jinja2
    except ImportError:
        raise LmforgeError("YAML tasks need jinja2: pip install jinja2") from None
    return jinja2, jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


class Field:
    """One templated field: a column name, a literal, a `{{ expression }}`, or a template string."""

    def __init__(self, spec: Any, name: str, where: str):
        self.spec, self.name, self.where = spec, name, where
        jinja2, env = _env()
        self.expr = self.template = None
        if isinstance(spec, str):
            m = _SINGLE_EXPR.match(spec)
            try:
                if m and "{{" not in m.group(1) and "{%" not in spec:
                    self.expr = env.compile_expression(m.group(1), undefined_to_none=False)
                elif "{{" in spec or "{%" in spec:
                    self.template = env.from_string(spec)
            except jinja2.TemplateSyntaxError as e:
                raise LmforgeError(f"{where}: field {name}: bad template ({e.message})") from None

    def __call__(self, doc: dict) -> Any:
        if isinstance(self.spec, str) and self.spec in doc:
            return doc[self.spec]  # a column name
        if self.expr is not None:
            value = self.expr(**doc)
        elif self.template is not None:
            value = self.template.render(**doc)
        else:
            return self.spec  # a literal (a list of choices, an int, plain text)
        if hasattr(value, "_undefined_name"):  # StrictUndefined is only raised when used
            raise LmforgeError(f"names {value._undefined_name!r}")
        return value


def _read(path: Path, columns: list[str] | None) -> list[dict]:
    if not path.is_file():
        raise LmforgeError(f"data file not found: {path}")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json")):
        docs = read_jsonl(path)
    elif name.endswith(".csv"):
        import csv

        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        header = columns or (rows.pop(0) if rows else [])
        for i, r in enumerate(rows, 1 if columns else 2):
            if len(r) != len(header):
                raise LmforgeError(
                    f"{path}:{i}: {len(r)} fields, expected {len(header)} ({', '.join(header)})"
                )
        docs = [dict(zip(header, r)) for r in rows]
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        docs = pq.read_table(path).to_pylist()
    else:
        raise LmforgeError(f"{path}: unsupported data format (use .jsonl, .csv or .parquet)")
    if not docs:
        raise LmforgeError(f"{path}: no records")
    return docs


def load_task_file(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"task file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LmforgeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise LmforgeError(f"{path}: expected a mapping of task fields")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise LmforgeError(f"{path}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(KEYS))})")
    kind = spec.get("type", "multiple_choice")
    if kind not in TYPES:
        raise LmforgeError(f"{path}: type {kind!r} is not one of {', '.join(TYPES)}")
    need = ["task", "data", "doc_to_target"] + (["doc_to_text"] if kind != "loglikelihood_rolling" else [])
    need += ["doc_to_choice"] if kind == "multiple_choice" else []
    for key in need:
        if key not in spec:
            raise LmforgeError(f"{path}: missing field {key!r}")
    files = spec["data"] if isinstance(spec["data"], dict) else {"test": spec["data"]}
    files = {s: (path.parent / f) for s, f in files.items()}
    where = str(path)
    text = Field(spec.get("doc_to_text", ""), "doc_to_text", where)
    target = Field(spec["doc_to_target"], "doc_to_target", where)
    choice = Field(spec["doc_to_choice"], "doc_to_choice", where) if kind == "multiple_choice" else None
    desc = Field(spec.get("description", ""), "description", where)

    def to_choices(doc):
        v = choice(doc)
        if isinstance(v, str):
            try:
                v = ast.literal_eval(v)  # a template that rendered a list literal
            except (ValueError, SyntaxError):
                pass
        if not isinstance(v, (list, tuple)) or not v:
            raise LmforgeError(f"doc_to_choice gave {type(v).__name__} {str(v)[:40]!r}, not a non-empty list")
        return [str(c) for c in v]

    def to_text(doc):
        v = text(doc)
        if kind == "multiple_choice" and isinstance(v, str) and v.isdigit() and text.spec not in doc:
            return int(v)  # a template rendering digits is an index: partial scoring (see above)
        return v if isinstance(v, int) and kind == "multiple_choice" else str(v)

    def to_target(doc):
        v = target(doc)
        if kind == "multiple_choice" and isinstance(v, str) and v.strip().isdigit():
            return int(v)
        return v

    task = Task(
        name=str(spec["task"]),
        output_type=kind,
        load_split=lambda s: None,
        doc_to_text=to_text,
        doc_to_target=to_target,
        doc_to_choice=to_choices if kind == "multiple_choice" else None,
        description=lambda d: str(desc(d)),
        target_delimiter=spec.get("target_delimiter", " "),
        fewshot_delimiter=spec.get("fewshot_delimiter", "\n\n"),
        test_split="test",
        validation_split="validation",
        training_split="train",
        fewshot_split=spec.get("fewshot_split"),
        fewshot_sampler=spec.get("fewshot_sampler", "random"),
        num_fewshot=int(spec.get("num_fewshot", 0)),
        metrics=tuple(spec.get("metrics", TYPES[kind])),
        generation=dict(spec.get("generation", {})),
        source=", ".join(f"{s}: {f}" for s, f in files.items()),
        version=str(spec.get("version", "1.0")),
    )
    if kind == "loglikelihood_rolling":
        task.doc_to_target = lambda d: str(target(d))

    def load(split: str):
        if split not in files:
            return None
        docs = _read(files[split], spec.get("columns"))
        if task.partial is None and kind == "multiple_choice":  # lm-eval decides from one document too
            # a failure here is reported with file and line by the checks below
            with contextlib.suppress(Exception):
                task.partial = isinstance(task.doc_to_text(docs[0]), int)
        for i, d in enumerate(docs, 1):  # validate every document now, naming file, line and field
            line = i + (1 if files[split].name.lower().endswith(".csv") and not spec.get("columns") else 0)
            for field, fn in (
                ("doc_to_text", task.doc_to_text),
                ("description", task.description),
                ("doc_to_target", task.doc_to_target),
                ("doc_to_choice", task.doc_to_choice or (lambda d: None)),
            ):
                try:
                    fn(d)
                except LmforgeError as e:
                    raise LmforgeError(f"{files[split]}:{line}: field {field}: {e}") from None
                except Exception as e:  # noqa: BLE001 -- jinja2 UndefinedError, TypeError, ... from a user template
                    cols = ", ".join(d) if isinstance(d, dict) else "?"
                    raise LmforgeError(
                        f"{files[split]}:{line}: field {field}: {e} (columns: {cols})"
                    ) from None
            if kind == "multiple_choice":
                try:
                    task.gold(d)
                except LmforgeError as e:
                    raise LmforgeError(f"{files[split]}:{line}: field doc_to_target: {e}") from None
        return docs

    task.load_split = load
    return task
