"""Options for the pre-training token shards (the tokenizer's are lmforge.tokenizer.TokenizerConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import ConfigError


@dataclass
class DataConfig:
    corpus: str = "embedded"  # "embedded" (the demo corpus in the package), or a file/folder of documents
    curate: bool = (
        True  # `lmforge run` curates the corpus first (the `curate` section); embedded adds raw web text
    )
    shards: str | None = None  # token shard dir; None = <run>/data
    val_fraction: float = 0.02  # share of documents held out for validation
    shard_tokens: int = 50_000_000  # tokens per shard file
    workers: int = 0  # encoding processes; 0 = all cores
    seed: int = 1234  # decides the train/val split of documents

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"data.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}"
            )
        if self.shard_tokens < 1:
            raise ConfigError(f"data.shard_tokens must be >= 1, got {self.shard_tokens}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0 (0 = all cores), got {self.workers}")
