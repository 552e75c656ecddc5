"""MinHash signature throughput per core: lmforge (NumPy, batched) vs datasketch and rensa, same documents.

112 permutations, 5-word shingles of the same simplified text; the shared web sample repeated to
~10 MB. Prints MB/s and docs/s of each and the ratio to lmforge (installed libraries only).
    python bench/curate_minhash.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmforge.data.curate.minhash import MinHasher, simplify

WEB = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora" / "web"


def shingle_strings(text: str) -> list[str]:
    w = simplify(text).decode("utf-8", "replace").split()
    return [" ".join(w[i : i + 5]) for i in range(max(1, len(w) - 4))]


def main() -> None:
    texts = [json.loads(x)["text"] for f in sorted(WEB.glob("*.jsonl")) for x in f.read_text().splitlines()]
    texts = texts * 2
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} documents, {mb:.2f} MB, 112 permutations, 5-word shingles, one core")
    results = {}
    mh = MinHasher(112, 5, seed=1)
    mh.signatures(texts[:50])
    t0 = time.perf_counter()
    mh.signatures(texts)
    results["lmforge"] = time.perf_counter() - t0
    try:
        from datasketch import MinHash

        t0 = time.perf_counter()
        for t in texts:
            m = MinHash(num_perm=112, seed=1)
            m.update_batch([s.encode() for s in shingle_strings(t)])
        results["datasketch"] = time.perf_counter() - t0
    except ImportError:
        pass
    try:
        from rensa import RMinHash

        t0 = time.perf_counter()
        for t in texts:
            m = RMinHash(num_perm=112, seed=1)
            m.update(shingle_strings(t))
            m.digest()
        results["rensa"] = time.perf_counter() - t0
    except ImportError:
        pass
    base = results["lmforge"]
    print(f"{'library':12s} {'MB/s':>8s} {'docs/s':>8s} {'lmforge speed-up':>17s}")
    for name, s in results.items():
        print(f"{name:12s} {mb / s:8.2f} {len(texts) / s:8.0f} {s / base:17.2f}")
    print("(datasketch and rensa timings include building their shingle strings, as a user would)")


if __name__ == "__main__":
    main()
