"""TokenLoader: windows of the concatenated split, seeded epochs, exact resume, disjoint ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmforge.data.config import DataConfig
from lmforge.data.loader import TokenLoader
from lmforge.data.shards import encode_corpus
from lmforge.errors import LmforgeError
from lmforge.tokenizer import TokenizerConfig, train_tokenizer

T = 16  # seq_len


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wizards",
        "quietly",
        "hex",
        "jolly",
        "boxers",
    ]
    rng = np.random.default_rng(0)
    docs = [{"id": str(i), "text": " ".join(rng.choice(words, 40))} for i in range(60)]
    tok = train_tokenizer((d["text"] for d in docs), TokenizerConfig(vocab_size=300))
    out = tmp_path_factory.mktemp("loader") / "shards"
    encode_corpus(docs, tok, out, DataConfig(val_fraction=0.1, shard_tokens=500, workers=1))  # many shards
    return out


def windows(shard_dir, split="train") -> dict[tuple, int]:
    """Every window of the split's concatenated stream, by content -> index."""
    meta = json.loads((shard_dir / "meta.json").read_text())
    stream = np.concatenate(
        [np.fromfile(shard_dir / s["file"], dtype="<u2") for s in meta["splits"][split]["shards"]]
    )
    n = len(stream) // (T + 1)
    return {tuple(w): i for i, w in enumerate(stream[: n * (T + 1)].reshape(n, T + 1).tolist())}


def batch_windows(x: torch.Tensor, y: torch.Tensor, index: dict[tuple, int]) -> list[int]:
    full = torch.cat([x, y[:, -1:]], dim=1)
    return [index[tuple(row)] for row in full.tolist()]


def test_batches_are_windows_and_an_epoch_visits_each_once(shard_dir):
    index = windows(shard_dir)
    loader = TokenLoader(shard_dir, "train", T, seed=1)
    assert loader.num_windows == len(index) and len(index) > 10
    x, y = loader.next_batch(4)
    assert x.shape == y.shape == (4, T) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    seen = batch_windows(x, y, index)
    while loader.epoch == 0:
        seen += batch_windows(*loader.next_batch(3), index)
    n = loader.num_windows
    assert sorted(seen[:n]) == list(range(n))  # one epoch: each window once (windows span shards)
    assert seen[:n] != sorted(seen[:n])  # in shuffled order


def test_same_seed_same_batches(shard_dir):
    a, b, c = (TokenLoader(shard_dir, "train", T, seed=s) for s in (7, 7, 8))
    for _ in range(5):
        xa, _ = a.next_batch(5)
        assert torch.equal(xa, b.next_batch(5)[0])
    assert not torch.equal(a.next_batch(5)[0], c.next_batch(5)[0])


def test_resume_gives_the_same_batches(shard_dir):
    a = TokenLoader(shard_dir, "train", T, seed=3)
    for _ in range(7):
        a.next_batch(4)
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON
    sizes = (4, 9, 4, a.num_windows)  # variable batch size, on past the end of the epoch
    expected = [a.next_batch(bs) for bs in sizes]
    assert a.epoch >= 1
    b = TokenLoader(shard_dir, "train", T, seed=999)
    b.next_batch(2)
    b.load_state_dict(state)
    for (xe, ye), bs in zip(expected, sizes):
        xb, yb = b.next_batch(bs)
        assert torch.equal(xe, xb) and torch.equal(ye, yb)
    with pytest.raises(LmforgeError, match="seq_len"):
        TokenLoader(shard_dir, "train", T + 1, seed=3).load_state_dict(state)


def test_ranks_are_disjoint(shard_dir):
    index = windows(shard_dir)
    per_rank = []
    for rank in range(3):
        loader = TokenLoader(shard_dir, "train", T, seed=5, rank=rank, world_size=3)
        per_rank.append(set(batch_windows(*loader.next_batch(loader.windows_per_rank), index)))
        assert loader.epoch == 1 and loader.position == 0
    assert all(len(s) == len(index) // 3 for s in per_rank)
    assert not (per_rank[0] & per_rank[1] or per_rank[0] & per_rank[2] or per_rank[1] & per_rank[2])


def test_val_split_and_errors(shard_dir):
    val = TokenLoader(shard_dir, "val", T, seed=0)
    assert val.tokens > 0
    with pytest.raises(
        LmforgeError, match=rf"has {val.tokens} tokens, fewer than one window of seq_len \+ 1 = 100001"
    ):
        TokenLoader(shard_dir, "val", 100_000, seed=0)
    with pytest.raises(LmforgeError, match="too few to give each of"):
        TokenLoader(shard_dir, "val", T, seed=0, rank=0, world_size=val.num_windows + 1)
    with pytest.raises(LmforgeError, match="no 'test' split"):
        TokenLoader(shard_dir, "test", T, seed=0)
    with pytest.raises(LmforgeError, match="meta.json is missing"):
        TokenLoader(shard_dir / "nope", "train", T, seed=0)
