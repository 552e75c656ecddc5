"""Decoding options."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SampleConfig:
    prompt: str = "\n"  # text the sample continues
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 = greedy
    top_k: int | None = 200  # keep the k most likely tokens; None = all
    top_p: float | None = None  # nucleus sampling: smallest set with this much mass; None = off
    seed: int | None = 1337  # None = nondeterministic
    num_samples: int = 1
    stop: list[str] = field(default_factory=list)  # stop strings (end-of-text always stops)
