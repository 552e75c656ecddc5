"""Results on disk (eval/results.json, eval/results.md), the summary table, and comparisons.

results.json = the dict `runner.evaluate` returns (+ when it was written); samples, if logged,
go to eval/samples_<task>.jsonl so results.json stays small. Files are written under a temporary
name and renamed, so a crash never leaves a half-written results file. A later evaluation of the
same model into the same folder adds its tasks to results.json (a task evaluated again replaces
its earlier entry; groups are recomputed); results of another model are replaced.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from lmforge.atomic import write_text_atomic
from lmforge.errors import LmforgeError
from lmforge.eval.runner import LOWER_IS_BETTER, aggregate_groups

HIDDEN_METRICS = {"token_perplexity"}  # recorded, not in the summary (tokenizer-dependent)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.4f}"


def summary_rows(results: dict, subjects: bool = False) -> list[dict]:
    """One row per (task or group, metric). Group members (MMLU subjects) only with subjects=True."""
    rows = []
    tasks, groups = results.get("tasks", {}), results.get("groups", {})
    grouped = {t for t, r in tasks.items() if r.get("group")}
    seen_groups = set()
    for name, r in tasks.items():
        if name in grouped:
            top = r["group"][0]
            if top not in seen_groups:  # the group (and its subgroups) where its first member was
                seen_groups.add(top)
                for g in [top] + [m for m in groups[top]["members"] if m in groups]:
                    rows += _rows(g, groups[g], indent=0 if g == top else 1)
            if not subjects:
                continue
        rows += _rows(name, r, indent=2 if name in grouped else 0)
    return rows


def _rows(name: str, r: dict, indent: int) -> list[dict]:
    out = []
    for m, v in r["metrics"].items():
        if m in HIDDEN_METRICS:
            continue
        out.append(
            {
                "task": name,
                "metric": m,
                "value": v,
                "stderr": r.get("stderr", {}).get(m),
                "n": r["n"],
                "shots": r.get("num_fewshot"),
                "chance": r.get("chance") if not m.endswith(("perplexity", "byte")) else None,
                "indent": indent,
                "direction": "↓" if m in LOWER_IS_BETTER else "↑",
            }
        )
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| task | shots | metric | value | ± stderr | n | chance |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "  " * r["indent"] + ("- " if r["indent"] else "") + r["task"]
        lines.append(
            f"| {name} | {r['shots'] if r['shots'] is not None else ''} | {r['metric']} {r['direction']} | "
            f"{_fmt(r['value'])} | {_fmt(r['stderr'])} | {r['n']} | {_fmt(r['chance'])} |"
        )
    return "\n".join(lines)


def text_table(rows: list[dict]) -> str:
    """The summary for a terminal: aligned plain columns."""
    head = ("task", "shots", "metric", "value", "stderr", "n", "chance")
    body = [
        (
            "  " * r["indent"] + r["task"],
            "" if r["shots"] is None else str(r["shots"]),
            f"{r['metric']} {r['direction']}",
            _fmt(r["value"]),
            _fmt(r["stderr"]),
            str(r["n"]),
            _fmt(r["chance"]),
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(
        c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body])


def to_markdown(results: dict) -> str:
    parts = [
        f"# Evaluation: {results.get('model', '?')}",
        "",
        (
            f"Context length {results.get('max_length')} tokens; {results.get('seconds', 0):.1f} s; "
            f"settings: `{json.dumps(results.get('settings', {}), default=str)}`"
        ),
        "",
        markdown_table(summary_rows(results)),
        "",
    ]
    parts += [f"Note: {n}\n" for n in results.get("notes", [])]
    tasks = results.get("tasks", {})
    if any(r.get("group") for r in tasks.values()):
        parts += [
            "## Per subject",
            "",
            markdown_table([r for r in summary_rows(results, subjects=True) if r["indent"] == 2]),
            "",
        ]
        for g, r in results.get("groups", {}).items():
            parts.append(
                f"- `{g}`: document-weighted {_fmt(r['metrics'].get('acc'))} (lm-eval); unweighted mean "
                f"of {r['num_tasks']} subjects {_fmt(r['subject_mean'].get('acc'))} (Open LLM Leaderboard v1)"
            )
        parts.append("")
    parts += ["## Data", ""] + [
        f"- `{t}`: {r['source']} ({r['n']} documents, {r['seconds']:.1f} s, "
        f"{r['docs_per_s']} docs/s"
        + (
            f"; {r['truncated_requests']} requests cut from the left to the model's context"
            if r.get("truncated_requests")
            else ""
        )
        + ")"
        for t, r in tasks.items()
    ]
    if results.get("errors"):
        parts += ["", "## Failed tasks", ""] + [f"- `{t}`: {e}" for t, e in results["errors"].items()]
    return "\n".join(parts) + "\n"


def merge_results(old: dict, new: dict) -> dict:
    """`new` on top of `old` (same model): every task keeps its latest entry, with the settings it
    was run with; a task that failed now drops its earlier score; groups are recomputed."""
    tasks = {
        k: v for k, v in old.get("tasks", {}).items() if k not in new["errors"] and k not in new["tasks"]
    }
    tasks.update(new["tasks"])
    errors = {k: v for k, v in old.get("errors", {}).items() if k not in new["tasks"]}
    errors.update(new["errors"])
    notes = list(dict.fromkeys([*old.get("notes", []), *new.get("notes", [])]))
    return {**new, "tasks": tasks, "groups": aggregate_groups(tasks), "errors": errors, "notes": notes}


def write_results(results: dict, out_dir: str | Path, merge: bool = True) -> tuple[Path, Path]:
    """Write results.json / results.md in `out_dir`; with `merge`, keep the tasks an earlier
    evaluation of the same model wrote there (see merge_results)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = dict(
        results,
        written=stamp,
        tasks={
            k: {"settings": results.get("settings", {}), "written": stamp, **v}
            for k, v in results["tasks"].items()
        },
    )
    old_path = out / "results.json"
    if merge and old_path.is_file():
        try:
            old = json.loads(old_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            old = {}
        if old.get("model") == results.get("model"):
            results = merge_results(old, results)
    slim = {**results, "tasks": {}}
    for name, r in results["tasks"].items():
        r = dict(r)
        samples = r.pop("samples", None)
        if samples is not None:
            write_text_atomic(
                out / f"samples_{name}.jsonl", "".join(json.dumps(s, default=str) + "\n" for s in samples)
            )
            r["samples_file"] = f"samples_{name}.jsonl"
        slim["tasks"][name] = r
    jp, mp = out / "results.json", out / "results.md"
    write_text_atomic(jp, json.dumps(slim, indent=2, default=str) + "\n")
    write_text_atomic(mp, to_markdown(slim))
    return jp, mp


def load_results(path: str | Path) -> dict:
    """results.json from a file, an eval folder, or a run directory."""
    p = Path(path)
    for cand in (p, p / "results.json", p / "eval" / "results.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise LmforgeError(f"{cand}: not valid JSON ({e.msg})") from None
    raise LmforgeError(f"no eval results in {p} (looked for results.json and eval/results.json)")


def compare(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Markdown table of every (task, metric) both results have: values, difference, and whether
    the difference exceeds twice its standard error (independent samples: sqrt(se_a^2 + se_b^2))."""
    ra = {(r["task"], r["metric"]): r for r in summary_rows(a, subjects=True)}
    rb = {(r["task"], r["metric"]): r for r in summary_rows(b, subjects=True)}
    lines = [
        f"| task | metric | {name_a} | {name_b} | Δ (B−A) | significant (>2σ) |",
        "|---|---|---:|---:|---:|---|",
    ]
    common = [k for k in ra if k in rb]
    if not common:
        raise LmforgeError("the two results share no task/metric to compare")
    for k in common:
        x, y = ra[k], rb[k]
        d = y["value"] - x["value"]
        se = (
            math.sqrt(x["stderr"] ** 2 + y["stderr"] ** 2)
            if x["stderr"] is not None and y["stderr"] is not None
            else None
        )
        sig = "" if se is None or math.isnan(se) else ("yes" if abs(d) > 2 * se else "no")
        better = ""
        if sig == "yes":
            better = " (B better)" if (d < 0) == (k[1] in LOWER_IS_BETTER) else " (A better)"
        lines.append(
            f"| {k[0]} | {k[1]} | {_fmt(x['value'])} | {_fmt(y['value'])} | {d:+.4f} | {sig}{better} |"
        )
    only = sorted({k[0] for k in ra} ^ {k[0] for k in rb})
    if only:
        lines += ["", f"Only in one of them: {', '.join(only)}"]
    return "\n".join(lines)


def report_section(results: dict) -> str:
    """Markdown for a run's report.md: the summary table with chance levels, and failures."""
    lines = [
        "## Evaluation",
        "",
        markdown_table(summary_rows(results)),
        "",
        (
            "Chance = the score of a uniform random guess (mean over questions of 1/choices; for "
            "truthfulqa_mc2 the mass of the true answers). Perplexities: lower is better; bits per "
            "byte of a uniform byte model is 8."
        ),
    ]
    lines += ["", *[f"Note: {n}" for n in results.get("notes", [])]] if results.get("notes") else []
    if results.get("errors"):
        lines += ["", "Failed: " + "; ".join(f"{t}: {e}" for t, e in results["errors"].items())]
    return "\n".join(lines) + "\n"
