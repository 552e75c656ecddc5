"""Run independent jobs over shards: in this process, a local process pool, or Ray tasks.

Every job writes its own files and returns a small dict; results come back in job order, so the
run is identical for any number of workers. Ray is optional: `--executor ray --address auto`
joins a running cluster (the output folder must be on storage every node can reach); with no
address a local Ray instance is started.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from tqdm import tqdm

from lmforge.errors import LmforgeError


def log(msg: str) -> None:
    print(f"[curate] {msg}", flush=True)


class Progress:
    """A tqdm bar on a terminal; elsewhere (logs, CI, Ray drivers) tqdm's meter as a plain line at
    most every `every` seconds and at the end, so a log shows rate and ETA without carriage returns.
    Only the driver counts jobs (workers report nothing), and only on rank 0 if RANK is set."""

    def __init__(self, label: str, total: int, workers: str, every: float = 10.0):
        self.prefix = f"[curate] {label} ({workers})"
        self.total, self.done, self.every = total, 0, every
        self.t0 = self.last = time.monotonic()
        self.on = os.environ.get("RANK", "0") in ("", "0")
        self.bar = (
            tqdm(total=total, desc=self.prefix, unit="job", file=sys.stdout, dynamic_ncols=True, leave=True)
            if self.on and sys.stdout.isatty()
            else None
        )

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.done == self.total:
                self.bar.close()
            return
        now = time.monotonic()
        if self.on and (self.done == self.total or now - self.last >= self.every):
            self.last = now
            print(
                tqdm.format_meter(
                    self.done, self.total, now - self.t0, ncols=0, unit="job", prefix=self.prefix
                ),
                flush=True,
            )


def run_jobs(
    fn: Callable[..., dict], jobs: list[tuple], executor: str, workers: int, label: str, ray_address: str = ""
) -> list[dict]:
    if not jobs:
        return []
    procs = min(workers or os.cpu_count() or 1, len(jobs))
    bar = Progress(label, len(jobs), "Ray" if executor == "ray" else f"{procs} process{'es' * (procs > 1)}")
    results = []
    for r in _iter(fn, jobs, executor, workers, ray_address):
        results.append(r)
        bar.step()
    return results


def _iter(fn, jobs, executor, workers, ray_address) -> Iterator[Any]:
    if executor == "ray":
        yield from _ray(fn, jobs, workers, ray_address)
        return
    n = workers or os.cpu_count() or 1
    if n == 1 or len(jobs) == 1:
        for job in jobs:
            yield fn(*job)
        return
    # fork shares what the parent already loaded (the language-id model) copy-on-write
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(n, len(jobs))) as pool:
        yield from pool.imap(_star, [(fn, job) for job in jobs], chunksize=1)


def _star(arg):
    fn, job = arg
    return fn(*job)


def _ray(fn, jobs, workers, address) -> Iterator[Any]:
    try:
        import ray
    except ImportError:
        raise LmforgeError("--executor ray needs Ray: pip install 'lmforge[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "log_to_driver": True,
        }
        if address:
            kwargs["address"] = address
        elif workers:
            kwargs["num_cpus"] = workers
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise LmforgeError(f"cannot start or join Ray (address={address or 'local'}): {e}") from None
    remote = ray.remote(num_cpus=1)(fn)
    refs = [remote.remote(*job) for job in jobs]
    for ref in refs:
        yield ray.get(ref)
