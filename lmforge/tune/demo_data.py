"""The small instruction set `lmforge run` fine-tunes on: lmforge/corpus/sft_demo.jsonl.gz.

Rebuild it byte for byte with `python -m lmforge.tune.demo_data` (reads ../shared/data/instruct).
Short conversations only (at most MAX_CHARS characters of content), so they fit the tiny
model's 256-token context whole: every Self-Instruct seed instance, every OpenAssistant
root-to-leaf path, and the first GSM8K train problems that are short enough. Sources and
licenses are in lmforge/corpus/README_sft.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

from lmforge.tune.formats import load_conversations

MAX_CHARS = 600  # content characters per conversation; ~150-250 tokens with the tiny 2K vocab
GSM8K_COUNT = 300  # GSM8K would outnumber the rest 20:1; take the first short ones
DEMO_PATH = Path(__file__).resolve().parent.parent / "corpus" / "sft_demo.jsonl.gz"


def build(instruct_dir: Path) -> list[dict]:
    records = []
    for source, path, kw, limit in [
        ("self_instruct", "self_instruct/seed_tasks.jsonl", {}, None),
        ("oasst", "oasst/en_100_tree.jsonl", {"oasst_paths": "all"}, None),
        ("gsm8k", "gsm8k/train.jsonl", {}, GSM8K_COUNT),
    ]:
        convs = load_conversations(instruct_dir / path, on_bad="error", **kw).conversations
        short = [c for c in convs if sum(len(m["content"]) for m in c) <= MAX_CHARS]
        records += [{"messages": c, "source": source} for c in short[:limit]]
    return records


def write(records: list[dict], out: Path) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:  # mtime=0: the same bytes every build
        for r in records:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    out.write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--instruct", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "instruct")
    )
    ap.add_argument("--out", default=str(DEMO_PATH))
    args = ap.parse_args()
    records = build(Path(args.instruct))
    write(records, Path(args.out))
    counts = {s: sum(r["source"] == s for r in records) for s in ("self_instruct", "oasst", "gsm8k")}
    print(f"{len(records)} conversations {counts} -> {args.out}")


if __name__ == "__main__":
    main()
