"""What the launcher told this process, read from the environment without importing torch.

torchrun (or Slurm's srun with the same variables exported) sets RANK, WORLD_SIZE and LOCAL_RANK;
without them a process is rank 0 of a world of one. Cheap enough for the CLI's log and error
printing (`is_main_process()`), which must not pay torch's import time.
"""

from __future__ import annotations

import contextlib
import os


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0, or a single process: the one that prints and writes run-directory files."""
    return launched_rank() == 0


@contextlib.contextmanager
def rank_zero_first(pc):
    """Rank 0 runs the block first (e.g. training the tokenizer, encoding shards); the others run it
    after rank 0 finished, when its files exist and they only read them. A no-op in a world of one.
    The others wait at most pc.timeout_s (pc: the run's ParallelConfig)."""
    if launched_world_size() == 1:
        yield
        return
    import torch.distributed as dist

    from lmforge.train.parallel.dist import init_process_group

    init_process_group(pc)
    if not is_main_process():
        dist.barrier()
    yield
    if is_main_process():
        dist.barrier()
