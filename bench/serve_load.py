"""Server throughput under concurrent clients, on loopback: requests/s and generated tokens/s.

Three ways of running the same set of chat requests (greedy, fixed max_tokens, so every request
generates the same number of tokens in every mode):
  in-process   ServedModel.complete in a loop, no HTTP: the baseline
  1 client     the requests one after another through `lmforge serve` (uvicorn on 127.0.0.1)
  N clients    N threads sending them at once (default 8), streaming, as a load test would,
               once per --max-batch value (default 1 and 8: one request at a time vs dynamic batching)
Rounds alternate the three; it prints each one's median requests/s, generated tokens/s, latency
p50/p95 and time to first token, and its ratio to the baseline. Requests are bounded (rounds x
clients x requests each) and go only to 127.0.0.1.

    python bench/serve_load.py                     # a random model of lmforge's tiny shape
    python bench/serve_load.py --run runs/tiny     # a trained run
    python bench/serve_load.py --markdown bench/results/serve.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run


def prompts(n: int) -> list[list[dict]]:
    return [
        [{"role": "user", "content": f"request {i}: tell me about the quick brown fox and the lazy dog"}]
        for i in range(n)
    ]


def in_process(model: ServedModel, convs, max_tokens: int) -> dict:
    cfg = SampleConfig(max_new_tokens=max_tokens, temperature=0.0, top_k=None)
    lat, tokens = [], 0
    t0, c0 = time.perf_counter(), cpu_seconds()
    for conv in convs:
        s = time.perf_counter()
        tokens += model.complete(model.chat_ids(conv), cfg, model.chat_stop_ids()).completion_tokens
        lat.append(time.perf_counter() - s)
    return summary(time.perf_counter() - t0, cpu_seconds() - c0, len(convs), tokens, lat, [])


def over_http(url: str, model: str, convs, max_tokens: int, clients: int) -> dict:
    """Each of `clients` threads sends its share of the requests, streaming; all start together."""
    lat, ttft, tokens, errors = [], [], [0], []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(share) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            start.wait()
            for conv in share:
                body = {
                    "model": model,
                    "messages": conv,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                s = time.perf_counter()
                first, used = None, 0
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        errors.append(r.read().decode())
                        continue
                    for line in r.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if first is None and any(ch["delta"].get("content") for ch in chunk["choices"]):
                            first = time.perf_counter() - s
                        if chunk.get("usage"):
                            used = chunk["usage"]["completion_tokens"]
                with lock:
                    lat.append(time.perf_counter() - s)
                    ttft.append(first if first is not None else lat[-1])
                    tokens[0] += used

    shares = [convs[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    t0, c0 = time.perf_counter(), cpu_seconds()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    return summary(time.perf_counter() - t0, cpu_seconds() - c0, len(convs), tokens[0], lat, ttft)


def cpu_seconds() -> float:
    """CPU time of this process (server, clients and all): on a shared machine, unlike wall time, it
    does not grow when other jobs take the cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def summary(wall: float, cpu: float, n: int, tokens: int, lat: list[float], ttft: list[float]) -> dict:
    q = statistics.quantiles(lat, n=20) if len(lat) > 1 else lat * 19
    return {
        "wall_s": wall,
        "requests": n,
        "tokens": tokens,
        "req_per_s": n / wall,
        "tok_per_s": tokens / wall,
        "cpu_ms_per_token": 1000 * cpu / max(tokens, 1),
        "p50_s": statistics.median(lat),
        "p95_s": q[18],
        "ttft_p50_s": statistics.median(ttft) if ttft else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run directory to serve (default: a random model, --n-layer/--n-embd)")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2, help="requests per client and round")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    ap.add_argument(
        "--max-batch",
        type=int,
        nargs="+",
        default=[1, 8],
        help="server --max-batch values to measure N clients with (default: 1 8)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--markdown", help="also write the results table to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_tiny_run(
            Path(tmp) / "bench",
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            n_head=args.n_head,
            block_size=args.block_size,
        )
        model = ServedModel.load(str(run))
    n_params = sum(p.numel() for p in model.model.parameters())
    convs = prompts(args.clients * args.requests)
    load = os.getloadavg()
    runs: dict[str, list[dict]] = {}
    with RunningServer(create_app([model])) as srv:

        def with_batch(size: int, measure):
            def run() -> dict:
                model.max_batch = size  # read when a batch forms; the server is idle between modes
                return measure()

            return run

        modes = {
            "in-process (baseline)": with_batch(1, lambda: in_process(model, convs, args.max_tokens)),
            "HTTP, 1 client": with_batch(
                1, lambda: over_http(srv.url, model.name, convs, args.max_tokens, 1)
            ),
        }
        for size in args.max_batch:
            modes[f"HTTP, {args.clients} clients, max batch {size}"] = with_batch(
                size, lambda: over_http(srv.url, model.name, convs, args.max_tokens, args.clients)
            )
        in_process(model, convs[:2], 4)  # warm-up
        over_http(srv.url, model.name, convs[:2], 4, 1)
        # Rounds alternate the modes, so a change in machine load (a shared box) hits each alike;
        # each mode reports its median round.
        for _ in range(args.rounds):
            for name, measure in modes.items():
                runs.setdefault(name, []).append(measure())
    rows = {name: sorted(rs, key=lambda r: r["tok_per_s"])[len(rs) // 2] for name, rs in runs.items()}

    base = rows["in-process (baseline)"]["tok_per_s"]
    head = (
        f"model: {model.name}, {n_params / 1e6:.2f}M parameters, context {model.block_size}; "
        f"{len(convs)} chat requests x {args.max_tokens} generated tokens (greedy), median of "
        f"{args.rounds} rounds; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average before/after "
        f"{load[0]:.1f}/{os.getloadavg()[0]:.1f}"
    )
    lines = [
        head,
        "",
        (
            "| mode | requests/s | generated tokens/s | vs baseline | latency p50 | latency p95 | first "
            "token p50 "
            "| CPU ms / token |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        ttft = f"{r['ttft_p50_s'] * 1000:.0f} ms" if r["ttft_p50_s"] is not None else "–"
        lines.append(
            f"| {name} | {r['req_per_s']:.2f} | {r['tok_per_s']:.0f} | {r['tok_per_s'] / base:.2f}x | "
            f"{r['p50_s'] * 1000:.0f} ms | {r['p95_s'] * 1000:.0f} ms | {ttft} | "
            f"{r['cpu_ms_per_token']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
