"""Rebuild lmforge/benchmarks/: the benchmark subsets shipped inside the package.

    python scripts/build_benchmark_subsets.py --src path/to/benchmarks

--src is a folder in the layout `lmforge eval --data-dir` reads (the files as AI2, Rowan Zellers,
Dan Hendrycks and Stephanie Lin published them; see lmforge/benchmarks/README.md). Each
subset is the *first* N records of a file, so scoring the subset equals `--limit N` on the full set;
files keep their names and formats, gzip-compressed (mtime 0, so a rebuild is byte-identical).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "lmforge" / "benchmarks"
N_TEST = 300  # ARC test, HellaSwag validation, TruthfulQA questions
N_DEV = 100  # ARC dev (few-shot examples)
N_MMLU = 5  # test questions per MMLU subject (57 subjects: 285); dev keeps all 5 (the 5-shot examples)


def write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f,
    ):
        f.write(text.encode("utf-8"))


def first_lines(src: Path, n: int) -> str:
    lines = [ln for ln in src.read_text(encoding="utf-8").split("\n") if ln.strip()]
    return "".join(ln + "\n" for ln in lines[:n])


def first_csv_rows(src: Path, n: int, header: bool) -> str:
    with open(src, encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows[: n + header])
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--src", required=True, type=Path, help="full benchmark folder (arc/, hellaswag/, mmlu/, truthfulqa/)"
    )
    src = ap.parse_args().src
    for cfg in ("ARC-Easy", "ARC-Challenge"):
        for split, n in (("Test", N_TEST), ("Dev", N_DEV)):
            rel = f"arc/{cfg}/{cfg}-{split}.jsonl"
            write_gz(OUT / (rel + ".gz"), first_lines(src / rel, n))
    write_gz(
        OUT / "hellaswag/hellaswag_val.jsonl.gz", first_lines(src / "hellaswag/hellaswag_val.jsonl", N_TEST)
    )
    for f in sorted((src / "mmlu" / "test").glob("*_test.csv")):
        write_gz(OUT / "mmlu/test" / (f.name + ".gz"), first_csv_rows(f, N_MMLU, header=False))
    for f in sorted((src / "mmlu" / "dev").glob("*_dev.csv")):
        write_gz(OUT / "mmlu/dev" / (f.name + ".gz"), first_csv_rows(f, N_MMLU, header=False))
    mc = json.loads((src / "truthfulqa/v0/mc_task.json").read_text(encoding="utf-8"))[:N_TEST]
    write_gz(OUT / "truthfulqa/v0/mc_task.json.gz", json.dumps(mc, ensure_ascii=False, indent=1) + "\n")
    write_gz(
        OUT / "truthfulqa/v0/TruthfulQA.csv.gz",
        first_csv_rows(src / "truthfulqa/v0/TruthfulQA.csv", N_TEST, header=True),
    )
    total = sum(p.stat().st_size for p in OUT.rglob("*.gz"))
    print(f"wrote {OUT} ({total / 1024:.0f} KiB compressed)")


if __name__ == "__main__":
    main()
