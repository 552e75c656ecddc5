"""The run configuration: every stage's section gathered into one RunConfig, loaded and validated.

A recipe YAML sets any subset of the fields; `section.key=value` overrides on the command line
win over the recipe; unknown keys and wrong types are rejected with the key's name and the
closest valid key, so a typo never silently becomes a default. The machinery for that (recipes,
overrides, checked construction, YAML) is lmforge/typed_config.py, below every stage package, so a
stage can load its own section without importing this aggregate; it is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.config import DataConfig
from lmforge.data.curate.config import CurateConfig
from lmforge.errors import ConfigError, LmforgeError
from lmforge.eval.config import EvalConfig
from lmforge.model.config import ModelConfig
from lmforge.serve.config import SampleConfig
from lmforge.tokenizer import TokenizerConfig
from lmforge.train.config import ParallelConfig, TrainConfig
from lmforge.typed_config import (
    from_dict,
    merge,
    parse_overrides,
    read_recipe,
    read_yaml_mapping,
    recipe_names,
    to_dict,
    to_yaml,
)

__all__ = [
    "DPOStageConfig",
    "RunConfig",
    "SFTStageConfig",
    "from_dict",
    "load_config",
    "merge",
    "parse_overrides",
    "read_config",
    "read_recipe",
    "recipe_names",
    "to_dict",
    "to_yaml",
    "validate",
]


@dataclass
class SFTStageConfig:
    """The supervised fine-tuning stage of `lmforge run` (the shipped instruction set). The stage
    toggles live here, with the run, not in tune: tune builds RunConfigs, so config must not import it."""

    enabled: bool = True
    max_steps: int | None = None  # None = 1/8 of the pre-training steps, between 2 and 80

    def validate(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"sft.max_steps must be at least 1 (or null), got {self.max_steps}")


@dataclass
class DPOStageConfig:
    """`lmforge run`'s optional DPO stage: the SFT stage's chat model tuned on synthetic preference
    pairs (tune/dpo_demo.py: a reply beats the same reply plus a stock sign-off)."""

    enabled: bool = False  # off in the demo: it costs more than the 10 s budget (bench/RESULTS.md, DPO)
    max_steps: int = 10  # of 8 pairs each

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"dpo.max_steps must be at least 1, got {self.max_steps}")


@dataclass
class RunConfig:
    name: str = "tiny"  # the run directory is <out_dir>/<name>
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def load_config(config: str | None = None, overrides: list[str] | None = None, cls: type = RunConfig) -> Any:
    """Build a typed config from an optional recipe plus overrides, then validate it."""
    data = read_recipe(config) if config else {}
    data = merge(data, parse_overrides(overrides or []))
    cfg = from_dict(cls, data)
    if isinstance(cfg, RunConfig):
        validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Each section's own checks, then those that span sections."""
    for section in (
        cfg.model,
        cfg.curate,
        cfg.tokenizer,
        cfg.data,
        cfg.train,
        cfg.parallel,
        cfg.sample,
        cfg.eval,
        cfg.sft,
        cfg.dpo,
    ):
        section.validate()
    seq_len = cfg.train.seq_len
    if seq_len is not None and seq_len > cfg.model.block_size:
        raise ConfigError(f"train.seq_len={seq_len} is longer than model.block_size={cfg.model.block_size}")


def read_config(ckpt_dir: Path) -> RunConfig:
    """The RunConfig a checkpoint was saved with (its config.yaml)."""
    path = Path(ckpt_dir) / "config.yaml"
    data = read_yaml_mapping(path)
    if isinstance(data.get("train"), dict):  # checkpoints from before train.eval_tokens replaced it
        data["train"].pop("eval_batches", None)
    try:
        return from_dict(RunConfig, data)
    except LmforgeError as e:
        raise LmforgeError(f"cannot read {path}: {e}") from None
