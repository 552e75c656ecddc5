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
    loader: dict[str, Any] = field(default_factory=dict)  # TokenLoader.state_dict()
    rng: dict[str, Any] = field(default_factory=dict)  # see capture_rng()

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
