"""Figures for bench/RESULTS.md "Reliability / Server": how fast the server refuses big requests
and whether /health stays responsive meanwhile, on loopback with a tiny random run served by
`lmforge serve` in a process of its own (the client's work does not share the server's GIL).

    python bench/serve_reliability.py

Prints, for a 10 MB prompt under the default 8 MiB limit (413) and an 8 MB prompt with the limit
raised to 64 MiB (refused by its length, before tokenizing): the time to the answer and the
slowest /health round trip while it was in flight; then, for 16 concurrent streams, when the last
first chunk arrived and when the first stream ended.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmforge.tiny import make_tiny_run


def serve(run: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmforge.serve.cli",
            "serve",
            "--run",
            f"alpha={run}",
            "--port",
            "0",
            "--log-level",
            "warning",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        m = re.search(r"serving on (http://\S+?)\s", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the server did not start")


def refuse(url: str, size: int) -> tuple[int, float, float]:
    """POST a prompt of `size` bytes; (status, seconds to the answer, slowest /health meanwhile)."""
    body = json.dumps({"model": "alpha", "prompt": "the quick brown fox " * (size // 20)}).encode()
    answer: dict = {}

    def send() -> None:
        t0 = time.perf_counter()
        answer["status"] = httpx.post(
            f"{url}/v1/completions", content=body, timeout=600, headers={"Content-Type": "application/json"}
        ).status_code
        answer["seconds"] = time.perf_counter() - t0

    worker = threading.Thread(target=send)
    slowest = 0.0
    with httpx.Client(base_url=url, timeout=600) as c:
        c.get("/health")
        worker.start()
        while worker.is_alive():
            t0 = time.perf_counter()
            c.get("/health")
            slowest = max(slowest, time.perf_counter() - t0)
    worker.join()
    return answer["status"], answer["seconds"], slowest


def streams(url: str, n: int = 16) -> tuple[float, float]:
    """(seconds until every stream had a first chunk, seconds until the first stream ended)."""
    firsts = [threading.Event() for _ in range(n)]
    ended: list[float] = []

    def stream(i: int) -> None:
        body = {
            "model": "alpha",
            "messages": [{"role": "user", "content": f"s{i}"}],
            "stream": True,
            "max_tokens": 48,
        }
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    firsts[i].set()
        ended.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for e in firsts:
        e.wait(600)
    all_first = time.perf_counter() - t0
    for t in threads:
        t.join()
    return all_first, min(ended)


def main() -> None:
    run = make_tiny_run(Path(tempfile.mkdtemp()) / "alpha", block_size=64)
    for size, flags in ((10 * 2**20, ()), (8 * 2**20, ("--max-request-bytes", str(64 * 2**20)))):
        proc, url = serve(run, "--max-batch", "16", *flags)
        try:
            status, seconds, slowest = refuse(url, size)
            print(
                f"{size / 2**20:.0f} MiB prompt, {' '.join(flags) or 'default limit'}: {status} in "
                f"{seconds * 1000:.0f} ms; slowest /health meanwhile {slowest * 1000:.1f} ms"
            )
            if not flags:
                all_first, first_end = streams(url)
                print(
                    f"16 streams: every first chunk by {all_first * 1000:.0f} ms, first stream ended at "
                    f"{first_end * 1000:.0f} ms"
                )
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
