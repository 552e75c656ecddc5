"""The evaluation stage of `lmforge run`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.errors import ConfigError


@dataclass
class EvalConfig:
    enabled: bool = True  # run the benchmarks after pre-training (`lmforge run` only)
    tasks: list[str] = field(
        default_factory=lambda: [
            "arc_easy",
            "arc_challenge",
            "hellaswag",
            "mmlu",
            "truthfulqa_mc1",
            "truthfulqa_mc2",
        ]
    )
    limit: int | None = 100  # documents per task (per subject for MMLU); None = all
    data_dir: str | None = (
        None  # benchmark folder; None = $LMFORGE_EVAL_DATA, else lmforge/benchmarks/ subsets
    )
    batch_size: int = 16

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"eval.limit must be at least 1 (or null for all), got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be at least 1, got {self.batch_size}")
