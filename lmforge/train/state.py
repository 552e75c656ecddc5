"""TrainState: everything besides weights and optimizer moments that a run needs to resume exactly.

One explicit object (after lingua's TrainState): counters, the data loader's position and the
random number generators. Saved as state.json in each checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done (skipped non-finite steps included)
    tokens: int = 0  # training tokens consumed
    bad_steps: int = 0  # non-finite losses in a row
    elapsed: float = 0.0  # training wall seconds before this process (for elapsed/ETA across resumes)
    last_loss: float | None = None  # last finite training loss
    val_loss: float | None = None  # last validation results
    val_bpb: float | None = None
    val_step: int | None = None  # the step they are from
    loader: dict[str, Any] = field(default_factory=dict)  # TokenLoader.state_dict()
    rng: dict[str, Any] = field(default_factory=dict)  # see capture_rng()
    # Distributed runs: the (pp, dp, tp) layout that saved the state, and every rank's own loader
    # position and RNG states, by global rank ([] for a single process: `loader` and `rng` hold them).
    layout: dict[str, int] = field(default_factory=dict)
    ranks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states, JSON-serializable."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if not state:
        return
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def loader_state_for(saved: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """A TokenLoader state saved by a data-parallel rank, re-expressed for `rank` of `world_size`.

    Ranks take strided windows of one permutation and move in step, so after n windows per rank
    on w ranks the run has consumed the first n * w windows of the epoch, whatever the layout; a
    new layout continues from there. (At an epoch's end the epoch lengths of two layouts can
    differ by up to world_size windows, which are then skipped or seen twice.)"""
    consumed = int(saved["position"]) * int(saved["world_size"])
    per_rank = int(saved["num_windows"]) // world_size
    epoch, position = int(saved["epoch"]), consumed // world_size
    if position >= per_rank:
        epoch, position = epoch + 1, 0
    return {**saved, "rank": rank, "world_size": world_size, "epoch": epoch, "position": position}
