"""Byte-level BPE tokenizer (GPT-2 style), trained and run by Hugging Face `tokenizers`.

Byte-level BPE (Radford et al. 2019, GPT-2 §2.2) starts from the 256 byte values, so every string
has an encoding and `decode(encode(s)) == s` for every Python str without surrogates. The 7 special
tokens take ids 0..6; user text that happens to contain a special token's string (say
"<|endoftext|>") is encoded as plain bytes, never as the special id, so a document can't forge a
document boundary or a chat turn. Special ids are inserted only by code, by id.

The file is the standard `tokenizer.json`, loadable by `transformers.PreTrainedTokenizerFast`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmforge.atomic import write_atomic
from lmforge.errors import ConfigError, LmforgeError

SPECIAL_TOKENS: list[str] = [
    "<|endoftext|>",  # 0: document boundary (GPT-2's name)
    "<|pad|>",  # 1
    "<|mask|>",  # 2: MLM / infilling
    "<|system|>",  # 3: chat roles
    "<|user|>",  # 4
    "<|assistant|>",  # 5
    "<|end|>",  # 6: end of a chat turn
]

# The special tokens + the 256 byte tokens of byte-level BPE come before any merge.
MIN_VOCAB = len(SPECIAL_TOKENS) + 256


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096  # including the special tokens
    min_frequency: int = 2  # a merge needs at least this many occurrences
    path: str | None = None  # use this tokenizer.json instead of training one

    def validate(self) -> None:
        if not MIN_VOCAB <= self.vocab_size <= 2**32:
            raise ConfigError(
                f"tokenizer.vocab_size must be at least {MIN_VOCAB} (7 special + 256 byte tokens) "
                f"and at most 2**32, got {self.vocab_size}"
            )
        if self.min_frequency < 1:
            raise ConfigError(f"tokenizer.min_frequency must be >= 1, got {self.min_frequency}")


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer`; ids 0..6 are SPECIAL_TOKENS."""

    def __init__(self, hf: HFTokenizer) -> None:
        for i, tok in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(tok) != i:
                raise LmforgeError(f"tokenizer has {tok!r} at id {hf.token_to_id(tok)}, expected {i}")
        # Treat special-token strings inside text as ordinary text (tokenizers' "split special
        # tokens" switch; it is not stored in tokenizer.json, so it is set on every load).
        hf.encode_special_tokens = True
        spec = json.loads(hf.to_str())
        if (spec.get("decoder") or {}).get("type") != "ByteLevel":
            raise LmforgeError("not a byte-level BPE tokenizer (its decoder is not ByteLevel)")
        self._hf = hf
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.eot_id, self.pad_id, self.mask_id = 0, 1, 2
        self.system_id, self.user_id, self.assistant_id, self.end_id = 3, 4, 5, 6
        self.hash: str = _canonical_hash(spec)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer.json (or a folder holding one, e.g. a run dir)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise LmforgeError(f"tokenizer file not found: {path}")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception on bad files)
            raise LmforgeError(f"cannot read tokenizer {path}: {str(e).splitlines()[0]}") from None
        try:
            return cls(hf)
        except LmforgeError as e:
            raise LmforgeError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json atomically (temp name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: self._hf.save(str(tmp), pretty=True))

    def to_str(self) -> str:
        return self._hf.to_str()

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # encode_batch_fast skips character offsets; it runs on tokenizers' thread pool.
        return [e.ids for e in self._hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        """int32[vocab_size]: UTF-8 bytes each token stands for (0 for specials), for bits per byte."""
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for tok, i in self._hf.get_vocab(with_added_tokens=False).items():
            out[i] = len(tok)  # byte-level BPE spells every byte as exactly one character
        out[: len(SPECIAL_TOKENS)] = 0
        return out

    def __getstate__(self) -> str:  # picklable, for worker processes
        return self._hf.to_str()

    def __setstate__(self, state: str) -> None:
        self.__init__(HFTokenizer.from_str(state))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, hash={self.hash[:8]})"


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train byte-level BPE on `texts`. The vocabulary can come out smaller than cfg.vocab_size
    when the text has fewer distinct pairs than that; `Tokenizer.vocab_size` is the real size."""
    cfg.validate()
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2 regex split
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=SPECIAL_TOKENS,  # added first, so they get ids 0..6
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    hf.train_from_iterator(_checked(texts), trainer)
    return Tokenizer(hf)


def vocab_shortfall(tok: Tokenizer, cfg: TokenizerConfig) -> str | None:
    """A warning when the corpus gave fewer tokens than tokenizer.vocab_size asked for (BPE stops
    when no pair is left that occurs min_frequency times), else None."""
    if tok.vocab_size >= cfg.vocab_size:
        return None
    return (
        f"warning: tokenizer.vocab_size={cfg.vocab_size:,} asked for, but this corpus gives only "
        f"{tok.vocab_size:,} tokens (no pair left that occurs tokenizer.min_frequency={cfg.min_frequency} "
        f"times); the run uses {tok.vocab_size:,}. More text, or a smaller vocab_size, removes this warning"
    )


def _checked(texts: Iterable[str]) -> Iterable[str]:
    n = 0
    for t in texts:
        if not isinstance(t, str):
            raise LmforgeError(f"tokenizer training text #{n} is {type(t).__name__}, not str")
        n += 1
        yield t
    if n == 0:
        raise LmforgeError("no text to train the tokenizer on")


def _canonical_hash(d: dict) -> str:
    """sha256 of what decides the ids: vocab, merges, added tokens and the text pipeline, as
    canonical JSON (sorted keys, no whitespace). Merges are normalized to pairs because
    tokenizers >= 0.20 writes them as [a, b] where older versions wrote "a b"."""
    model = d["model"]
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    canon = {
        "model": {"type": model.get("type"), "vocab": model.get("vocab"), "merges": merges},
        "added_tokens": [[t["id"], t["content"], t.get("special", False)] for t in d["added_tokens"]],
        "normalizer": d.get("normalizer"),
        "pre_tokenizer": d.get("pre_tokenizer"),
        "decoder": d.get("decoder"),
    }
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
