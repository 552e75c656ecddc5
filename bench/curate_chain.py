"""CPU time of the per-document stage chain (stages.DocPipeline) over the shipped web sample.

Default recipe (decontamination index of the shipped benchmark subsets included); process CPU time
of each pass, so the figure means something on a loaded machine. Prints min and median of --passes.
    python bench/curate_chain.py [--passes 5]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

from lmforge.data.curate.config import CurateConfig
from lmforge.data.curate.pipeline import _prepare_resources
from lmforge.data.curate.stages import DocPipeline
from lmforge.data.curate.stats import Stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=5)
    args = ap.parse_args()
    sample = resources.files("lmforge") / "corpus" / "web_sample.jsonl.gz"
    with gzip.open(sample, "rt", encoding="utf-8") as f:
        docs = [
            {"id": str(r.get("id", i)), "text": r["text"], "source": "web", "meta": {}}
            for i, r in enumerate(map(json.loads, f))
        ]
    cfg = CurateConfig()
    with tempfile.TemporaryDirectory() as tmp:
        _prepare_resources(cfg, Path(tmp))
        pipe = DocPipeline(cfg, Path(tmp))
        pipe(copy.deepcopy(docs[0]), Stats())  # models loaded and warm
        times, removed = [], 0
        for _ in range(args.passes):
            batch, stats = copy.deepcopy(docs), Stats()
            t = time.process_time()
            removed = sum(1 for d in batch if pipe(d, stats))
            times.append(time.process_time() - t)
    times.sort()
    print(
        f"{len(docs)} documents, {removed} removed: CPU per pass min {times[0]:.3f} s, "
        f"median {times[len(times) // 2]:.3f} s ({args.passes} passes)"
    )


if __name__ == "__main__":
    main()
