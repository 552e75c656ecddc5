"""Token shards: layout, meta counts, the document split, parallel == serial, safe writes."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lmforge.data import shards
from lmforge.data.config import DataConfig
from lmforge.data.documents import embedded_corpus
from lmforge.data.shards import check_tokenizer, encode_corpus, is_val, load_meta, shard_dtype
from lmforge.errors import ConfigError, LmforgeError
from lmforge.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    # 60 short real documents (slices of the demo corpus) and one that looks like a special token
    out = [dict(d, text=d["text"][:400]) for d in itertools.islice(embedded_corpus(), 0, 357, 6)]
    return out + [{"id": "tricky", "text": "<|endoftext|> is text here"}]


@pytest.fixture(scope="module")
def tok(docs) -> Tokenizer:
    return train_tokenizer((d["text"] for d in docs), TokenizerConfig(vocab_size=320))


def split_docs(path, eot: int, dtype) -> list[np.ndarray]:
    stream = np.concatenate([np.fromfile(f, dtype=dtype) for f in path])
    assert stream[-1] == eot
    cuts = np.flatnonzero(stream == eot)
    return np.split(stream, cuts + 1)[:-1]


def test_layout_and_meta(tok, docs, tmp_path):
    cfg = DataConfig(val_fraction=0.2, shard_tokens=2000, workers=1)
    meta = encode_corpus(docs, tok, tmp_path / "sh", cfg)
    assert meta == load_meta(tmp_path / "sh")
    assert meta["dtype"] == "uint16" and meta["eot_id"] == 0 and meta["vocab_size"] == 320
    assert meta["tokenizer_hash"] == tok.hash
    assert Tokenizer.load(tmp_path / "sh").hash == tok.hash  # the shards carry their tokenizer
    texts = {}
    for split in ("train", "val"):
        info = meta["splits"][split]
        files = [tmp_path / "sh" / s["file"] for s in info["shards"]]
        assert [f.name for f in files] == [f"{split}_{i:06d}.bin" for i in range(len(files))]
        assert [s["tokens"] for s in info["shards"][:-1]] == [2000] * (len(files) - 1)  # full shards
        assert sum(f.stat().st_size for f in files) == 2 * info["tokens"]
        per_doc = split_docs(files, tok.eot_id, np.dtype("<u2"))  # every document ends with eot
        texts[split] = [tok.decode(ids[:-1]) for ids in per_doc]
        assert info["documents"] == len(texts[split])
        assert info["bytes"] == sum(len(t.encode("utf-8")) for t in texts[split])
    assert len(meta["splits"]["train"]["shards"]) > 1
    # train + val is every document, each split in input order, chosen by the id hash
    want = {s: [d["text"] for d in docs if is_val(d["id"], cfg.seed, 0.2) == (s == "val")] for s in texts}
    assert texts == want
    assert 0 < len(texts["val"]) < len(texts["train"])
    assert json.loads((tmp_path / "sh" / "meta.json").read_text()) == {
        k: v for k, v in meta.items() if k != "dir"
    }


def test_two_workers_write_identical_shards(tok, docs, tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "BATCH_CHARS", 3000)  # many small batches in flight at once
    cfg = DataConfig(val_fraction=0.2, shard_tokens=1500, workers=1)
    encode_corpus(docs * 3, tok, tmp_path / "one", cfg)
    cfg.workers = 2
    encode_corpus(iter(docs * 3), tok, tmp_path / "two", cfg)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_always_a_val_document(tok, tmp_path):
    two = [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}]
    assert not any(is_val(d["id"], 1234, 1e-6) for d in two)
    meta = encode_corpus(two, tok, tmp_path / "sh", DataConfig(val_fraction=1e-6, workers=1))
    assert meta["splits"]["val"]["documents"] == 1 and meta["splits"]["train"]["documents"] == 1


def test_dtype_by_vocab_size():
    assert shard_dtype(65_536) == np.dtype("<u2")
    assert shard_dtype(65_537) == np.dtype("<u4")


def test_check_tokenizer(tok, docs, tmp_path):
    meta = encode_corpus(docs, tok, tmp_path / "sh", DataConfig(workers=1))
    check_tokenizer(load_meta(tmp_path / "sh"), tok)
    other = train_tokenizer(["completely different words"] * 5, TokenizerConfig(vocab_size=300))
    with pytest.raises(LmforgeError, match=f"made by tokenizer {tok.hash[:8]}, not {other.hash[:8]}"):
        check_tokenizer(meta, other)


def test_refuses_to_clobber(tok, docs, tmp_path):
    out = tmp_path / "sh"
    first = encode_corpus(docs[:10], tok, out, DataConfig(workers=1))
    with pytest.raises(LmforgeError, match="already holds token shards"):
        encode_corpus(docs, tok, out, DataConfig(workers=1))
    assert load_meta(out) == first  # untouched
    second = encode_corpus(docs, tok, out, DataConfig(workers=1), overwrite=True)
    assert load_meta(out) == second != first
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(LmforgeError, match="not empty"):
        encode_corpus(docs, tok, other, DataConfig(workers=1), overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "sh"]  # no temp folders left


def test_failure_leaves_nothing(tok, docs, tmp_path):
    bad = docs[:5] + [{"id": "x", "body": "no text"}]
    with pytest.raises(LmforgeError, match="document #5"):
        encode_corpus(iter(bad), tok, tmp_path / "sh", DataConfig(workers=1))
    with pytest.raises(LmforgeError, match="no documents"):
        encode_corpus([], tok, tmp_path / "sh", DataConfig(workers=1))
    with pytest.raises(ConfigError, match="val_fraction"):
        encode_corpus(docs, tok, tmp_path / "sh", DataConfig(val_fraction=0.0))
    assert list(tmp_path.iterdir()) == []


def test_load_meta_errors(tok, docs, tmp_path):
    with pytest.raises(LmforgeError, match="meta.json is missing"):
        load_meta(tmp_path)
    encode_corpus(docs, tok, tmp_path / "sh", DataConfig(workers=1))
    shard = tmp_path / "sh" / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated
    with pytest.raises(LmforgeError, match="train_000000.bin should hold"):
        load_meta(tmp_path / "sh")
    (tmp_path / "sh" / "meta.json").write_text("{}")
    with pytest.raises(LmforgeError, match="not a valid shard meta"):
        load_meta(tmp_path / "sh")


def test_shards_do_not_depend_on_batching_or_workers(tok, docs, tmp_path, monkeypatch):
    """Issue 14: every batch size (down to one document per batch) and worker count writes the same
    bytes, with empty, whitespace-only, one-character, emoji and non-Latin documents among them."""
    odd = [
        {"id": "empty", "text": ""},
        {"id": "ws", "text": " \n\t "},
        {"id": "one", "text": "a"},
        {"id": "emoji", "text": "🙂 👍🏽 🎉"},
        {"id": "cjk", "text": "日本語のテキスト"},
        {"id": "cyr", "text": "Съешь ещё"},
    ]
    corpus = [d for pair in itertools.zip_longest(docs[:24], odd) for d in pair if d]
    files = []
    for workers, batch_chars in itertools.product([1, 2], [shards.BATCH_CHARS, 1]):
        monkeypatch.setattr(shards, "BATCH_CHARS", batch_chars)
        out = tmp_path / f"{workers}-{batch_chars}"
        encode_corpus(corpus, tok, out, DataConfig(val_fraction=0.2, shard_tokens=700, workers=workers))
        files.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert len(files[0]) > 3 and all(f == files[0] for f in files[1:])
