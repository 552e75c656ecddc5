"""Tiny random runs and models for tests, benchmarks and trying a stage without training first.

Everything is built locally (nothing is downloaded) and goes through the real code paths: a run
directory holds a real tokenizer.json, config.yaml and step-0 checkpoint, so loading, the chat
template, KV-cache generation, serving, export and evaluation run as they would on a trained run.
The weights are random, so the text is gibberish.

- `make_tiny_run`: a 2-layer decoder over a throwaway BPE, its output head tuned so the gibberish
  is printable ASCII and answers run to `max_tokens` (for the server, chat and inspection).
- `random_run`: a run directory for any tokenizer and `ModelConfig` (encoders, benchmark shapes).
- `tiny_tokenizer`, `tiny_lmforge`, `tiny_gpt2`: one BPE over the embedded corpus shared by an
  lmforge model and a Hugging Face GPT-2, for the evaluation engine and its parity tests.

It sits above every stage package (it imports `eval`'s model wrappers and `train`'s checkpoints),
and nothing in lmforge imports it.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice
from pathlib import Path

import torch

from lmforge.config import RunConfig, to_yaml
from lmforge.data.documents import embedded_corpus
from lmforge.eval.lm import HFCausalLM, LmforgeLM
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import save_checkpoint

# A few lines of plain text are enough for a byte-level BPE with a few dozen merges.
_TEXT = (
    "the quick brown fox jumps over the lazy dog. a model reads text and writes text. "
    "hello world, how are you today? fine, thank you. numbers: 1 2 3 4 5 6 7 8 9 10. "
) * 20


def make_tiny_run(
    run_dir: str | Path,
    *,
    seed: int = 0,
    block_size: int = 128,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    vocab_size: int = 320,
) -> Path:
    """Write `run_dir` (tokenizer.json, config.yaml, checkpoints/step_000000) and return it."""
    tok = train_tokenizer([_TEXT], TokenizerConfig(vocab_size=vocab_size, min_frequency=2))
    mcfg = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=block_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        tie_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Transformer(mcfg)
    with torch.no_grad():
        # A token's row of the (untied) output head sets its logit. Rows of printable ASCII
        # tokens get N(0, 0.6) rows and all others (special tokens, control and partial UTF-8
        # bytes) zero: the gibberish is readable, and answers end at max_tokens rather than at a
        # random end token.
        head = model.lm_head.weight
        readable = torch.tensor(
            [i >= len(SPECIAL_TOKENS) and _readable(tok.decode([i])) for i in range(tok.vocab_size)]
        )
        head[readable] = torch.randn(int(readable.sum()), n_embd) * 0.6
        head[~readable] = 0.0
    return _save_run(run_dir, tok, model)


def random_run(run_dir: str | Path, tokenizer: Tokenizer, model_cfg: ModelConfig, seed: int = 0) -> Path:
    """A run directory of a randomly initialised `model_cfg` model over `tokenizer`: what
    `lmforge export`, `eval`, `generate` and `serve` load, for benchmarks that need no training."""
    torch.manual_seed(seed)
    return _save_run(run_dir, tokenizer, Transformer(model_cfg))


def _save_run(run_dir: str | Path, tokenizer: Tokenizer, model: Transformer) -> Path:
    run_dir = Path(run_dir)
    cfg = RunConfig(name=run_dir.name, out_dir=str(run_dir.parent), model=model.cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer.json")
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    save_checkpoint(run_dir, 0, model, {}, {"step": 0, "tokens": 0}, cfg, keep_last=1)
    return run_dir


def _readable(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable()


@lru_cache(maxsize=4)  # tests in one process share it
def tiny_tokenizer(vocab_size: int = 1024, documents: int = 400) -> Tokenizer:
    texts = [d["text"] for d in islice(embedded_corpus(), documents)]
    return train_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size, min_frequency=2))


def tiny_lmforge(
    tokenizer: Tokenizer,
    block_size: int = 128,
    n_layer: int = 2,
    n_embd: int = 32,
    seed: int = 0,
    init_std: float = 0.1,
) -> LmforgeLM:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        block_size=block_size,
        n_layer=n_layer,
        n_head=2,
        n_embd=n_embd,
        init_std=init_std,
    )
    return LmforgeLM(Transformer(cfg), tokenizer, name=f"tiny-lmforge-{n_layer}x{n_embd}")


def hf_tokenizer(tokenizer: Tokenizer):
    """The lmforge tokenizer as a transformers fast tokenizer (GPT-2 style: no BOS, eos = eot)."""
    # transformers is the optional `hf` extra: imported only when a Hugging Face twin is asked for.
    from tokenizers import Tokenizer as Raw
    from transformers import PreTrainedTokenizerFast

    raw = Raw.from_str(tokenizer.to_str())
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
        model_max_length=1_000_000,
    )


def tiny_gpt2(
    tokenizer: Tokenizer,
    n_positions: int = 128,
    n_layer: int = 2,
    n_embd: int = 32,
    seed: int = 0,
    init_std: float = 0.1,
    save_to: str | Path | None = None,
) -> HFCausalLM:
    """A random GPT-2 over `tokenizer`; with `save_to`, also written as a folder lm-eval can load."""
    from transformers import GPT2Config, GPT2LMHeadModel  # the optional `hf` extra

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        initializer_range=init_std,
        bos_token_id=tokenizer.eot_id,
        eos_token_id=tokenizer.eot_id,
        pad_token_id=tokenizer.pad_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    tok = hf_tokenizer(tokenizer)
    if save_to is not None:
        model.save_pretrained(save_to)
        tok.save_pretrained(save_to)
    return HFCausalLM(model, tok, name=f"tiny-gpt2-{n_layer}x{n_embd}")
