"""Byte-level BPE tokenizer: exact round trip for any str, fixed special ids, bytes per token."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.data.documents import embedded_corpus
from lmforge.errors import ConfigError, LmforgeError
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerConfig, train_tokenizer

# Any str that UTF-8 can encode: everything but lone surrogates (category Cs).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
# ... mixed with special-token strings and their fragments, which must stay plain text.
TEXT_WITH_SPECIALS = st.lists(st.one_of(TEXT, st.sampled_from(SPECIAL_TOKENS + ["<|", "|>", "<|end"]))).map(
    "".join
)

SAMPLES = [
    "",
    "\n",
    "\t\t\n\n\r\n",
    "  two leading spaces",
    "héllo wörld",
    "e\u0301 a\u0308\u0323",  # combining marks
    "日本語のテキスト、中文文本",
    "👩‍👩‍👧 family 🏳️‍🌈 flag",
    "\x00\x01\x1b[31mred\x7f",
    "<|endoftext|>",
    "a<|user|>b<|assistant|>c<|end|>",
    "<|endoftext|><|endoftext|>",
    "x" * 1000,
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [d["text"][:3000] for d in itertools.islice(embedded_corpus(), 0, 360, 30)] + SAMPLES
    return train_tokenizer(texts, TokenizerConfig(vocab_size=400))


def test_special_tokens_have_ids_0_to_6(tok):
    assert [tok.decode([i]) for i in range(7)] == SPECIAL_TOKENS
    assert (tok.eot_id, tok.pad_id, tok.mask_id) == (0, 1, 2)
    assert (tok.system_id, tok.user_id, tok.assistant_id, tok.end_id) == (3, 4, 5, 6)
    assert tok.vocab_size == 400


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_samples(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(TEXT_WITH_SPECIALS)
def test_round_trip_any_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)  # user text never yields a special id
    assert int(tok.token_bytes()[ids].sum()) == len(text.encode("utf-8"))


def test_special_strings_in_text_are_plain_bytes(tok):
    ids = tok.encode("<|endoftext|>")
    assert tok.eot_id not in ids and len(ids) > 1
    assert tok.encode_batch(["<|user|>hi"]) == [tok.encode("<|user|>hi")]
    # code inserts specials by id; they render as their text
    assert tok.decode([tok.user_id, *tok.encode("hi"), tok.end_id]) == "<|user|>hi<|end|>"


def test_token_bytes(tok):
    tb = tok.token_bytes()
    assert tb.dtype == np.int32 and tb.shape == (tok.vocab_size,)
    assert (tb[:7] == 0).all() and (tb[7:] >= 1).all()
    text = " ".join(SAMPLES)
    assert int(tb[tok.encode(text)].sum()) == len(text.encode("utf-8"))


def test_save_load_keeps_hash_and_ids(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path)  # a folder holding tokenizer.json works too
    assert again.hash == tok.hash and again.vocab_size == tok.vocab_size
    assert again.encode("<|endoftext|> and text") == tok.encode("<|endoftext|> and text")
    # the hash does not depend on the file's layout
    (tmp_path / "compact.json").write_text(json.dumps(json.loads(tok.to_str())), encoding="utf-8")
    assert Tokenizer.load(tmp_path / "compact.json").hash == tok.hash
    assert pickle.loads(pickle.dumps(tok)).hash == tok.hash
    assert len(tok.hash) == 64


def test_hash_depends_on_the_vocabulary(tok):
    other = train_tokenizer(["some other text entirely"] * 10, TokenizerConfig(vocab_size=300))
    assert other.hash != tok.hash


def test_load_errors(tmp_path, tok):
    with pytest.raises(LmforgeError, match="not found"):
        Tokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LmforgeError, match="cannot read tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")
    spec = json.loads(tok.to_str())
    spec["added_tokens"][0]["content"] = "<|bos|>"
    spec["model"]["vocab"]["<|bos|>"] = spec["model"]["vocab"].pop("<|endoftext|>")
    (tmp_path / "renamed.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(LmforgeError, match="<\\|endoftext\\|>"):
        Tokenizer.load(tmp_path / "renamed.json")


def test_train_errors():
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(["abc"], TokenizerConfig(vocab_size=100))
    with pytest.raises(LmforgeError, match="no text"):
        train_tokenizer([], TokenizerConfig(vocab_size=300))


def test_transformers_can_load_it(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path / "tokenizer.json")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    text = "Hello, world! 日本"
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text
