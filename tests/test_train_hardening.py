"""Damage in training inputs is found before it trains (issue 13, items 11 and 13).

Checkpoints carry a sha256 manifest: bytes changed inside model.safetensors are reported and the
previous intact checkpoint resumes (or an error, train.on_damaged_checkpoint=error). Token shards
record their largest id: an id outside the vocabulary is one clear error, never an IndexError.
"""

from __future__ import annotations

import json
import re
from itertools import islice

import numpy as np
import pytest

from lmforge.config import RunConfig, from_dict
from lmforge.data.config import DataConfig
from lmforge.data.documents import embedded_corpus
from lmforge.data.loader import TokenLoader
from lmforge.data.shards import check_vocab, encode_corpus, load_meta
from lmforge.errors import LmforgeError
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train import checkpoint as ckpt
from lmforge.train.loop import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    docs = list(islice(embedded_corpus(), 60))
    tok = train_tokenizer([d["text"] for d in docs], TokenizerConfig(vocab_size=300))
    encode_corpus(docs, tok, root / "shards", DataConfig(workers=1, val_fraction=0.1, shard_tokens=8192))
    return root / "shards", tok


def make_cfg(tok, **train) -> RunConfig:
    m = {"vocab_size": tok.vocab_size, "n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32}
    t = {
        "max_steps": 6,
        "batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 1,
        "log_every": 1,
        "eval_every": 2,
        "eval_tokens": 256,
        "ckpt_every": 2,
        "keep_last": 3,
        "threads": 1,
        "tensorboard": False,
        **train,
    }
    return from_dict(RunConfig, {"model": m, "train": t})


def copy_shards(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def damage_bytes(path, offset: int, n: int = 4096) -> None:
    """Random bytes over [offset, offset + n): same size, other content (as a failing disk leaves it)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(
            np.random.default_rng(0)
            .integers(0, 256, min(n, path.stat().st_size - offset), np.uint8)
            .tobytes()
        )


# ---- item 13: token ids outside the vocabulary


def test_meta_records_the_largest_id_of_each_shard(data):
    shards, tok = data
    meta = load_meta(shards)
    for split in ("train", "val"):
        for sh in meta["splits"][split]["shards"]:
            ids = np.fromfile(shards / sh["file"], dtype=meta["dtype"])
            assert sh["max_id"] == int(ids.max()) < tok.vocab_size
    check_vocab(meta, tok.vocab_size)


def test_a_shard_with_ids_outside_the_vocabulary_is_one_clear_error(data, tmp_path):
    shards, tok = data
    bad = copy_shards(shards, tmp_path / "bad")
    first = bad / "train_000000.bin"
    first.write_bytes(b"\xff" * first.stat().st_size)  # the size meta.json expects, ids 65535
    with pytest.raises(LmforgeError, match=r"train_000000\.bin holds token id 65535 .*vocabulary of \d+"):
        train(make_cfg(tok), bad, tok, tmp_path / "run")
    with pytest.raises(LmforgeError, match="outside the vocabulary"):  # validation batches too
        TokenLoader(bad, "train", 16, 0).next_batch(64)


def test_meta_without_max_id_is_scanned_and_a_recorded_one_is_checked(data, tmp_path):
    shards, tok = data
    old = copy_shards(shards, tmp_path / "old")
    meta = json.loads((old / "meta.json").read_text())
    for split in meta["splits"].values():
        for sh in split["shards"]:
            del sh["max_id"]  # shards encoded before max_id was recorded
    (old / "meta.json").write_text(json.dumps(meta))
    check_vocab(load_meta(old), tok.vocab_size)  # computed from the data: fine
    last = old / meta["splits"]["val"]["shards"][-1]["file"]
    ids = np.fromfile(last, dtype=meta["dtype"])
    ids[-1] = tok.vocab_size
    ids.tofile(last)
    with pytest.raises(LmforgeError, match=f"{last.name} holds token id {tok.vocab_size}"):
        train(make_cfg(tok), old, tok, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    meta["splits"]["train"]["shards"][0]["max_id"] = tok.vocab_size + 7
    with pytest.raises(LmforgeError, match=f"holds token id {tok.vocab_size + 7}"):
        check_vocab({**meta, "dir": str(old)}, tok.vocab_size)


# ---- item 11: damaged checkpoints


def test_checkpoints_carry_a_manifest_and_load_checks_it(data, tmp_path):
    shards, tok = data
    run = tmp_path / "run"
    train(make_cfg(tok), shards, tok, run)
    newest = ckpt.latest_checkpoint(run)
    files = ckpt.manifest(newest)
    assert set(files) == {"model.safetensors", "optimizer.pt", "state.json", "config.yaml"}
    assert ckpt.damage(newest) is None
    weights = newest / "model.safetensors"
    damage_bytes(weights, weights.stat().st_size // 2)  # inside the tensor data: safetensors parses it
    assert "model.safetensors does not match its sha256" in ckpt.damage(newest)
    with pytest.raises(
        LmforgeError,
        match=r"step_000006 is damaged: model\.safetensors .*previous complete "
        r"checkpoint is .*step_000004",
    ):
        ckpt.load_model(run)
    ckpt.load_model(run / "checkpoints" / "step_000004")  # an intact one still loads


def test_resume_skips_a_damaged_newest_checkpoint(data, tmp_path, capsys):
    shards, tok = data
    run, cfg = tmp_path / "run", make_cfg(tok, max_steps=8)
    reference = train(cfg, shards, tok, tmp_path / "ref")
    train(cfg, shards, tok, run)
    weights = run / "checkpoints" / "step_000008" / "model.safetensors"
    damage_bytes(weights, weights.stat().st_size // 2)
    with pytest.raises(LmforgeError, match="step_000008 is damaged.*on_damaged_checkpoint=previous"):
        train(make_cfg(tok, max_steps=8, on_damaged_checkpoint="error"), shards, tok, run)
    capsys.readouterr()
    result = train(cfg, shards, tok, run)
    out, err = capsys.readouterr()
    assert "step_000008 is damaged" in err and "moved to damaged_step_000008" in err
    assert "resuming from" in out and "step_000006 (step 6)" in out
    assert result.steps == 8 and result.final_train_loss == reference.final_train_loss  # as if never damaged
    assert result.val_loss == reference.val_loss
    assert (run / "checkpoints" / "damaged_step_000008").is_dir()  # kept for a look, never loaded
    assert ckpt.damage(ckpt.latest_checkpoint(run)) is None


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(data, tmp_path):
    shards, tok = data
    run = tmp_path / "run"
    train(make_cfg(tok, max_steps=2), shards, tok, run)
    (run / "checkpoints" / "step_000002" / "optimizer.pt").write_bytes(b"x")
    with pytest.raises(LmforgeError, match="every checkpoint .* is damaged"):
        train(make_cfg(tok, max_steps=4), shards, tok, run)


def test_checkpoints_from_before_manifests_still_load(data, tmp_path):
    shards, tok = data
    run = tmp_path / "run"
    train(make_cfg(tok, max_steps=2), shards, tok, run)
    (run / "checkpoints" / "step_000002" / "COMPLETE").write_text("step 2\n")  # the old marker
    assert ckpt.manifest(run / "checkpoints" / "step_000002") is None
    ckpt.load_model(run)
    assert train(make_cfg(tok, max_steps=4), shards, tok, run).steps == 4


def test_a_diverged_run_says_it_failed_and_which_step_its_figures_are_from(data, tmp_path):
    shards, tok = data
    run = tmp_path / "run"
    train(make_cfg(tok, max_steps=4), shards, tok, run)
    result = train(
        make_cfg(tok, max_steps=20, lr=1e30, warmup_steps=0, max_bad_steps=2, ckpt_every=0), shards, tok, run
    )
    assert result.diverged and result.stopped_early and result.val_step == 4
    assert "the held-out figures are from step 4, before it diverged" in result.stop_reason


def test_lmforge_train_exits_non_zero_when_the_run_diverges(tmp_path, monkeypatch, capsys):
    from lmforge.cli import main

    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"text": d["text"]}) + "\n" for d in islice(embedded_corpus(), 40)),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    status = main(
        [
            "train",
            "--config",
            "tiny",
            "model.n_layer=1",
            "model.n_embd=32",
            "model.n_head=2",
            "model.block_size=32",
            "tokenizer.vocab_size=300",
            "train.batch_size=4",
            "train.warmup_steps=1",
            "train.eval_tokens=256",
            "train.tensorboard=false",
            "train.threads=1",
            "data.workers=1",
            "data.val_fraction=0.1",
            "data.corpus=a.jsonl",
            "train.max_bad_steps=2",
            "train.max_steps=40",
            "train.eval_every=1",
            "train.lr=1e30",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 2
    error = [x for x in err.splitlines() if x.startswith("lmforge: error:")]
    assert len(error) == 1 and "non-finite losses" in error[0], err[-2000:]
    assert re.search(r"the held-out figures are from step \d+, before it diverged", error[0])
    assert "held-out loss" in out  # those figures, printed above the error
