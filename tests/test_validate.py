"""Held-out loss is a fixed token budget: the same validation loss whatever the batching.

train.eval_tokens picks the windows; batch_size and grad_accum only change how they are cut
into batches. With lr=0 every configuration holds the initial weights after its one step, so
their validation losses must agree to float rounding (1e-6 relative, fp32). Before eval_tokens,
validation scored eval_batches x batch_size windows, and halving batch_size changed the set.
The same check across world sizes and layouts is in test_parallel_dist.py.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from lmforge.config import RunConfig, from_dict
from lmforge.data.config import DataConfig
from lmforge.data.documents import embedded_corpus
from lmforge.data.loader import TokenLoader
from lmforge.data.shards import encode_corpus
from lmforge.errors import ConfigError
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.loop import train
from lmforge.train.validate import val_windows

SEQ = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("val_data")
    docs = list(islice(embedded_corpus(), 60))
    tok = train_tokenizer([d["text"] for d in docs], TokenizerConfig(vocab_size=300))
    encode_corpus(docs, tok, root / "shards", DataConfig(workers=1, val_fraction=0.1))
    return root / "shards", tok


def val_loss(data, run_dir: Path, model: dict | None = None, **train_) -> float:
    shards, tok = data
    m = {
        "vocab_size": tok.vocab_size,
        "n_layer": 1,
        "n_embd": 32,
        "n_head": 2,
        "block_size": SEQ,
        **(model or {}),
    }
    t = {
        "max_steps": 1,
        "batch_size": 4,
        "lr": 0.0,
        "warmup_steps": 0,
        "log_every": 1,
        "eval_every": 0,
        "eval_tokens": 7 * SEQ - 5,
        "ckpt_every": 0,
        "threads": 1,
        "tensorboard": False,
        "progress": "lines",
        "precision": "fp32",
        "device": "cpu",
        **train_,
    }
    result = train(from_dict(RunConfig, {"model": m, "train": t}), shards, tok, run_dir)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in logged if r["kind"] == "val"] == [result.val_loss]
    return result.val_loss


@pytest.mark.parametrize(
    "model",
    [{}, {"kind": "encoder", "pos": "alibi"}, {"kind": "encoder-decoder"}],
    ids=["decoder", "encoder", "encoder-decoder"],
)
def test_validation_loss_does_not_depend_on_batch_size_or_grad_accum(data, tmp_path, model):
    # 7 windows: batches of 4 leave a padded last batch of 3; of 3, one of 1; of 8, one short batch
    base = val_loss(data, tmp_path / "a", model, batch_size=4)
    for i, (bs, ga) in enumerate([(2, 2), (3, 1), (8, 1), (1, 4)]):
        assert val_loss(data, tmp_path / f"b{i}", model, batch_size=bs, grad_accum=ga) == pytest.approx(
            base, rel=1e-6
        )


def test_the_budget_is_rounded_to_windows_and_capped_at_the_split(data, tmp_path):
    shards, _ = data
    split = TokenLoader(shards, "val", SEQ, 0).num_windows
    assert val_windows(1, SEQ, split) == 1 and val_windows(SEQ + 1, SEQ, split) == 2
    assert val_windows(10**9, SEQ, split) == split
    # more than the split: the whole split, in any batching
    whole = val_loss(data, tmp_path / "whole", eval_tokens=split * SEQ)
    assert val_loss(data, tmp_path / "more", eval_tokens=10**9, batch_size=5) == pytest.approx(
        whole, rel=1e-6
    )
    # a different budget is a different set (the test above could not pass by ignoring the budget)
    assert val_loss(data, tmp_path / "one", eval_tokens=SEQ) != pytest.approx(whole, rel=1e-6)


def test_eval_tokens_zero_turns_validation_off_and_negative_is_refused(data, tmp_path):
    shards, tok = data
    cfg = {
        "model": {"vocab_size": tok.vocab_size, "n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": SEQ},
        "train": {"max_steps": 1, "batch_size": 2, "eval_tokens": 0, "threads": 1, "tensorboard": False},
    }
    assert train(from_dict(RunConfig, cfg), shards, tok, tmp_path / "off").val_loss is None
    with pytest.raises(ConfigError, match="train.eval_tokens must be >= 0"):
        from_dict(RunConfig, {"train": {"eval_tokens": -1}}).train.validate()
