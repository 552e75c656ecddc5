"""Rebuild lmforge/corpus/web_sample.jsonl.gz, the noisy web text `lmforge run` curates.

    python scripts/build_web_sample.py [--data ../shared/data] [--out lmforge/corpus/web_sample.jsonl.gz]

Real crawled pages from shared/data/corpora/web, so every curation stage has something to do:
the first 300 documents of the C4 sample (already C4-filtered, still SEO/boilerplate-ish), the
first 150 DCLM pages with their human quality labels (raw extraction: link lists, dictionary
dumps), and the DCLM "agreement" copies of those pages (exact duplicates). Byte-for-byte
reproducible (fixed order, gzip mtime 0).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
C4_DOCS, DCLM_DOCS = 300, 150


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build(data: Path) -> list[dict]:
    web = data / "corpora" / "web"
    rows = []
    for i, r in enumerate(read_jsonl(web / "c4_en_sample_1000.jsonl")[:C4_DOCS]):
        rows.append(
            {
                "id": f"c4-{i:04d}",
                "text": r["text"],
                "source": "web",
                "meta": {"url": r["url"], "origin": "c4_en_sample_1000"},
            }
        )
    majority = read_jsonl(web / "dclm_majority_data.jsonl")[:DCLM_DOCS]
    for i, r in enumerate(majority):
        rows.append(
            {
                "id": f"dclm-{i:04d}",
                "text": r["text"],
                "source": "web",
                "meta": {"label": r["label"], "origin": "dclm_majority_data"},
            }
        )
    chosen = {r["text"] for r in majority}
    for i, r in enumerate(read_jsonl(web / "dclm_agreement_data.jsonl")):
        if r["text"] in chosen:
            rows.append(
                {
                    "id": f"dclm-agree-{i:04d}",
                    "text": r["text"],
                    "source": "web",
                    "meta": {"label": r["label"], "origin": "dclm_agreement_data"},
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "lmforge" / "corpus" / "web_sample.jsonl.gz"))
    args = ap.parse_args()
    rows = build(Path(args.data))
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    Path(args.out).write_bytes(buf.getvalue())
    print(f"{len(rows)} documents -> {args.out} ({len(buf.getvalue()):,} bytes)")


if __name__ == "__main__":
    main()
