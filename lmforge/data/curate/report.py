"""report.md for a curation run: what came in, what each stage removed and why, what went out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.atomic import write_text_atomic
from lmforge.data.curate.stages import run_order
from lmforge.data.curate.stats import totals


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def report_section(stats: dict[str, Any]) -> str:
    """Markdown for the curation part of a run's report.md."""
    t = totals(stats)
    inp, kept = t["input"], t["kept"]
    summary = (
        f"{inp.get('docs', 0):,} documents in, **{kept.get('docs', 0):,} kept** "
        f"({_pct(kept.get('docs', 0), inp.get('docs', 0))}), "
        f"{sum(c['docs'] for c in t['removed'].values()):,} removed; "
        f"{_mb(inp.get('bytes', 0))} MB -> {_mb(kept.get('bytes', 0))} MB; "
        f"{inp.get('words', 0):,} -> {kept.get('words', 0):,} words (whitespace tokens). "
        f"{stats.get('shards', '?')} shards in {stats.get('seconds', '?')} s."
    )
    lines = [
        "## Data curation",
        "",
        summary,
        "",
        "| source | docs in | docs kept | kept | words in | words kept |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in sorted(stats["sources"].items()):
        i, k = s["input"], s["kept"]
        lines.append(
            f"| {name} | {i.get('docs', 0):,} | {k.get('docs', 0):,} | "
            f"{_pct(k.get('docs', 0), i.get('docs', 0))} "
            f"| {i.get('words', 0):,} | {k.get('words', 0):,} |"
        )
    lines += ["", "### Stages", "", "| stage | docs in | removed | removed % |", "|---|---:|---:|---:|"]
    for st in run_order():
        c = stats["stages"].get(st)
        if c:
            lines.append(
                f"| {st} | {c.get('in', 0):,} | {c.get('removed', 0):,} | "
                f"{_pct(c.get('removed', 0), c.get('in', 0))} |"
            )
    lines += ["", "### Removal reasons", "", "| reason | docs | MB |", "|---|---:|---:|"]
    for reason, c in t["removed"].items():
        lines.append(f"| `{reason}` | {c['docs']:,} | {_mb(c.get('bytes', 0))} |")
    lines += _extras(stats)
    return "\n".join(lines) + "\n"


def _extras(stats: dict[str, Any]) -> list[str]:
    out: list[str] = []
    d = stats.get("dedup")
    if d:
        out += [
            "",
            (
                f"De-duplication: {d['exact_removed']:,} exact duplicates, "
                f"{d['near_removed']:,} near duplicates "
                f"({d['candidate_pairs']:,} candidate pairs, {d['verified_pairs']:,} after verification, "
                f"{d['clusters']:,} clusters)."
            ),
        ]
    c = stats["counters"]
    if c.get("boilerplate"):
        b = c["boilerplate"]
        out += [
            "",
            (
                f"Boilerplate: {(d or {}).get('boilerplate_lines', 0):,} lines shared by many documents; "
                f"{b.get('lines_removed', 0):,} line copies removed from {b.get('documents_changed', 0):,} "
                "documents."
            ),
        ]
    if c.get("pii"):
        out += ["", "PII redacted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c["pii"].items())) + "."]
    if c.get("c4_lines_dropped"):
        out += [
            "",
            "C4 lines dropped: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(c["c4_lines_dropped"].items()))
            + ".",
        ]
    res = stats.get("resources", {})
    if "decontamination" in res:
        hits = c.get("decontamination", {})
        out += ["", "| benchmark | items | 13-grams indexed | documents matching |", "|---|---:|---:|---:|"]
        for name, info in res["decontamination"].items():
            out.append(f"| {name} | {info['items']:,} | {info['ngrams']:,} | {hits.get(name, 0):,} |")
    if res.get("classifier"):
        m = res["classifier"]
        out += [
            "",
            (
                f"Quality classifier (held-out {m.get('heldout', '?')} docs): precision "
                f"{m.get('precision')}, "
                f"recall {m.get('recall')}, F1 {m.get('f1')}, accuracy {m.get('accuracy')}."
            ),
        ]
    if stats.get("labels"):
        out += [
            "",
            "### Agreement with the human quality labels",
            "",
            "Share of label-0 (low quality) documents among those each reason removed, and among those kept.",
            "",
            "| reason | labelled docs | label 0 | label 1 | share label 0 |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, cnt in sorted(stats["labels"].items(), key=lambda kv: (kv[0] != "kept", kv[0])):
            n0, n1 = cnt.get("0", 0), cnt.get("1", 0)
            out.append(f"| {key} | {n0 + n1:,} | {n0:,} | {n1:,} | {_pct(n0, n0 + n1)} |")
    mix = stats.get("mix")
    if mix:
        out += [
            "",
            f"### Domain mix ({mix['unit']}, budget {mix['budget']:,})",
            "",
            "| domain | weight | available | target | written | epochs | share |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in mix["domains"].items():
            out.append(
                f"| {name} | {m['weight']} | {m['available_tokens']:,} | {m['target_tokens']:,} | "
                f"{m['tokens']:,} "
                f"| {m['epochs']} | {m['share']} |"
            )
    ex = stats.get("examples") or {}
    if ex:
        out += ["", "### Removed examples", ""]
        for reason in sorted(ex):
            out.append(f"<details><summary><code>{reason}</code></summary>\n")
            for e in ex[reason]:
                text = (e.get("text") or "").replace("\n", " ")[:300]
                out.append(f"- `{e.get('id')}`: {text}")
            out.append("\n</details>")
    return out


def write_report(out: Path, stats: dict[str, Any]) -> Path:
    path = Path(out) / "report.md"
    body = "# Curation report\n\n" + report_section(stats).split("\n", 2)[2]
    return write_text_atomic(path, body)
