"""The parallel package's parts in one process: mesh and layout checks, data positions across
layouts, pipeline stages that chain back into the model, activation checkpointing."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest
import torch

from lmforge.config import RunConfig, from_dict
from lmforge.data.config import DataConfig
from lmforge.data.documents import embedded_corpus
from lmforge.data.loader import TokenLoader
from lmforge.data.shards import encode_corpus
from lmforge.errors import ConfigError
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.config import ParallelConfig
from lmforge.train.loop import train
from lmforge.train.parallel.dist import Layout, rank_zero_first, resolve_layout
from lmforge.train.parallel.parallelize import check_layout
from lmforge.train.parallel.pipeline_parallel import StageModule, split_layers
from lmforge.train.parallel.recompute import checkpoint_blocks
from lmforge.train.state import loader_state_for


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("units_data")
    docs = list(islice(embedded_corpus(), 60))
    tok = train_tokenizer([d["text"] for d in docs], TokenizerConfig(vocab_size=300))
    encode_corpus(docs, tok, root / "shards", DataConfig(workers=1, val_fraction=0.1))
    return root / "shards", tok


def run_cfg(model=None, train_=None, parallel=None) -> RunConfig:
    m = {"vocab_size": 300, "n_layer": 4, "n_embd": 32, "n_head": 4, "block_size": 32, **(model or {})}
    t = {
        "max_steps": 3,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_steps": 1,
        "log_every": 1,
        "eval_every": 0,
        "eval_tokens": 256,
        "ckpt_every": 0,
        "threads": 1,
        "tensorboard": False,
        **(train_ or {}),
    }
    return from_dict(RunConfig, {"model": m, "train": t, "parallel": parallel or {}})


# ---- the mesh


def test_layout_fills_dp_and_names_mismatches():
    assert resolve_layout(ParallelConfig(), 1) == Layout(1, 1, 1)
    assert resolve_layout(ParallelConfig(), 8) == Layout(pp=1, dp=8, tp=1)  # dp=-1: the rest
    assert resolve_layout(ParallelConfig(tp=2, pp=2), 8) == Layout(pp=2, dp=2, tp=2)
    assert resolve_layout(ParallelConfig(dp=2, tp=2, pp=2), 8) == Layout(2, 2, 2)
    with pytest.raises(ConfigError, match=r"tp \* parallel.pp = 3 \* 1 does not divide the 8 processes"):
        resolve_layout(ParallelConfig(tp=3), 8)
    with pytest.raises(ConfigError, match=r"1 \* 2 \* 2 = 4 processes, but 8 were started"):
        resolve_layout(ParallelConfig(dp=2, tp=2), 8)
    with pytest.raises(ConfigError, match=r"single process; launch it with `torchrun --nproc_per_node 4"):
        resolve_layout(ParallelConfig(dp=2, tp=2), 1)


def test_parallel_config_rejects_bad_values_and_keys():
    for bad, msg in [
        ({"tp": 0}, "parallel.tp must be >= 1"),
        ({"dp": 0}, "parallel.dp must be >= 1"),
        ({"ac_every": 0}, "parallel.ac_every"),
        ({"timeout_s": 0}, "parallel.timeout_s"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            ParallelConfig(**bad).validate()
    with pytest.raises(
        ConfigError, match=r"unknown config key 'parallel.tpp' \(did you mean 'parallel.tp'\?\)"
    ):
        from_dict(RunConfig, {"parallel": {"tpp": 2}})
    with pytest.raises(ConfigError, match="parallel.pp_schedule"):
        from_dict(RunConfig, {"parallel": {"pp_schedule": "zb"}})


@pytest.mark.parametrize(
    "model,train_,parallel,layout,message",
    [
        ({"n_head": 6}, {}, {}, Layout(tp=4), r"parallel.tp=4 does not divide model.n_head=6"),
        ({"n_kv_head": 1}, {}, {}, Layout(tp=2), r"does not divide model.n_kv_head .*=1"),
        ({"vocab_size": 301}, {}, {}, Layout(tp=2), r"does not divide model.vocab_size=301"),
        ({"tie_embeddings": False}, {}, {}, Layout(pp=8), r"parallel.pp=8 stages but .* model.n_layer=4"),
        ({}, {}, {}, Layout(pp=2), r"set model.tie_embeddings=false"),
        ({"kind": "encoder-decoder", "tie_embeddings": False}, {}, {}, Layout(pp=2), r"encoder-decoder"),
        ({}, {"batch_size": 6}, {}, Layout(dp=4), r"train.batch_size=6 .* not a multiple of parallel.dp=4"),
        (
            {"tie_embeddings": False},
            {"batch_size": 8},
            {"pp_microbatches": 3},
            Layout(pp=2),
            r"do not split into parallel.pp_microbatches=3",
        ),
        (
            {"tie_embeddings": False},
            {"batch_size": 8},
            {"pp_microbatches": 2},
            Layout(pp=4),
            r"1F1B schedule needs at least as many micro-batches as stages",
        ),
        ({}, {}, {"dp_mode": "ddp"}, Layout(dp=2, tp=2), r"dp_mode=ddp cannot be combined with parallel.tp"),
        ({}, {"precision": "fp16"}, {}, Layout(dp=2), r"fp16 .* single-process only"),
        (
            {},
            {"compile": True},
            {},
            Layout(tp=2),
            r"train.compile=true is not supported with parallel.tp > 1",
        ),
    ],
)
def test_impossible_layouts_are_named(model, train_, parallel, layout, message):
    cfg = run_cfg(model, train_, parallel)
    with pytest.raises(ConfigError, match=message):
        check_layout(cfg, layout, seq_len=32)


def test_possible_layouts_pass():
    check_layout(run_cfg({"n_kv_head": 2}), Layout(pp=1, dp=2, tp=2), seq_len=32)
    check_layout(
        run_cfg({"tie_embeddings": False}, {}, {"sequence_parallel": True}), Layout(2, 2, 2), seq_len=32
    )


def test_a_single_process_asked_for_a_mesh_says_how_to_launch(data, tmp_path):
    shards, tok = data
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
        train(run_cfg(parallel={"tp": 2}), shards, tok, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_rank_zero_first_is_a_no_op_alone():
    ran = []
    with rank_zero_first(ParallelConfig()):
        ran.append(1)
    assert ran == [1]


# ---- the data position is layout-free


def test_loader_position_moves_between_layouts(data):
    shards, _ = data
    one = TokenLoader(shards, "train", 16, seed=3)
    two = [TokenLoader(shards, "train", 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):  # a global batch of 8 windows: all 8 on one rank, or 4 on each of two
        x1, _ = one.next_batch(8)
        x2 = torch.cat([two[r].next_batch(4)[0] for r in range(2)])
        assert sorted(map(tuple, x1.tolist())) == sorted(map(tuple, x2.tolist()))  # the same windows
    # one process -> two ranks, and back: each continues with the same next global batch
    moved = [TokenLoader(shards, "train", 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for r in range(2):
        moved[r].load_state_dict(loader_state_for(one.state_dict(), r, 2))
    back = TokenLoader(shards, "train", 16, seed=3)
    back.load_state_dict(loader_state_for(two[0].state_dict(), 0, 1))
    x1, _ = one.next_batch(8)
    assert sorted(map(tuple, x1.tolist())) == sorted(
        map(tuple, torch.cat([m.next_batch(4)[0] for m in moved]).tolist())
    )
    x2 = torch.cat([two[r].next_batch(4)[0] for r in range(2)])
    assert sorted(map(tuple, back.next_batch(8)[0].tolist())) == sorted(map(tuple, x2.tolist()))


def test_loader_position_past_an_epoch_end_starts_the_next_epoch():
    saved = {
        "version": 1,
        "split": "train",
        "seq_len": 16,
        "seed": 0,
        "rank": 0,
        "world_size": 1,
        "num_windows": 11,
        "epoch": 2,
        "position": 10,
    }
    moved = loader_state_for(saved, 1, 2)  # 10 consumed; 5 per rank of 2 is a whole epoch there
    assert (moved["epoch"], moved["position"], moved["rank"], moved["world_size"]) == (3, 0, 1, 2)
    assert loader_state_for(saved, 0, 1) == saved  # same layout: unchanged


# ---- pipeline stages


def test_split_layers_is_balanced_and_complete():
    assert split_layers(4, 2) == [range(2), range(2, 4)]
    assert split_layers(7, 3) == [range(3), range(3, 5), range(5, 7)]
    assert [len(r) for r in split_layers(5, 5)] == [1] * 5
    with pytest.raises(ConfigError, match="parallel.pp=3 stages"):
        split_layers(2, 3)


@pytest.mark.parametrize(
    "model",
    [
        {"pos": "rope", "norm": "rmsnorm", "activation": "swiglu"},
        {"pos": "learned"},
        {"pos": "alibi", "kind": "encoder"},
        {"pos": "sinusoidal", "norm_position": "post"},
        {
            "pos": "rope",
            "norm": "rmsnorm",
            "qk_norm": True,
            "activation": "relu2",
            "logit_softcap": 0.05,
        },  # capped
    ],
)
def test_stages_chained_are_the_model(model):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, n_layer=5, n_embd=16, n_head=2, block_size=16, tie_embeddings=False, **model
    )
    full = Transformer(cfg).eval()
    ranges = split_layers(cfg.n_layer, 3)
    stages = [StageModule(full, r, first=i == 0, last=i == 2) for i, r in enumerate(ranges)]
    x = torch.randint(0, 64, (2, 16))
    h = x
    for stage in stages:
        h = stage(h)
    torch.testing.assert_close(h, full(x)[0], rtol=0, atol=0)
    names = [n for s in stages for n, _ in s.named_parameters()]
    assert sorted(names) == sorted(n for n, _ in full.named_parameters())  # every weight once, same name


# ---- activation checkpointing


def test_activation_checkpointing_changes_memory_not_math(data, tmp_path):
    shards, tok = data
    dropout = {"resid_dropout": 0.1, "attn_dropout": 0.1}  # recomputation must redraw the same masks
    losses = {}
    for mode in ("none", "full", "selective"):
        run = tmp_path / mode
        train(run_cfg(dropout, parallel={"activation_checkpoint": mode, "ac_every": 3}), shards, tok, run)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        losses[mode] = [(r["loss"], r["grad_norm"]) for r in map(json.loads, lines) if r["kind"] == "train"]
    assert losses["full"] == losses["none"] and losses["selective"] == losses["none"]
    blocks = list(enumerate(Transformer(ModelConfig(vocab_size=64, n_layer=7, n_embd=16, n_head=2)).blocks))
    assert checkpoint_blocks(blocks, "selective", every=3) == 3  # layers 0, 3, 6
    assert checkpoint_blocks(blocks, "none") == 0
    assert np.isfinite(losses["none"][-1][0])
