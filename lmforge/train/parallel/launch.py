"""What the launcher told this process, read from the environment without importing torch.

torchrun (or Slurm's srun with the same variables exported) sets RANK, WORLD_SIZE and LOCAL_RANK;
without them a process is rank 0 of a world of one. Cheap enough for the CLI's log and error
printing (`is_main_process()`), which must not pay torch's import time. It imports no other
lmforge module, so dist.py (the process group, `rank_zero_first`) builds on it, not the reverse.
"""

from __future__ import annotations

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
