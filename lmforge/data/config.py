"""Options for the tokenizer and the pre-training token shards."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096  # including the special tokens
    min_frequency: int = 2  # a merge needs at least this many occurrences
    path: str | None = None  # use this tokenizer.json instead of training one


@dataclass
class DataConfig:
    corpus: str = "embedded"  # "embedded" (the demo corpus in the package), or a file/folder of documents
    shards: str | None = None  # token shard dir; None = <run>/data
    val_fraction: float = 0.02  # share of documents held out for validation
    shard_tokens: int = 50_000_000  # tokens per shard file
    workers: int = 0  # encoding processes; 0 = all cores
    seed: int = 1234  # decides the train/val split of documents
