"""Tiny random models for tests and the parity benchmark, built locally (nothing is downloaded).

One byte-level BPE tokenizer trained on the embedded demo corpus serves both an lmforge
Transformer and a Hugging Face GPT-2 (`transformers.GPT2LMHeadModel`), which lm-eval's `hf` model
type can load from a folder.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice
from pathlib import Path

import torch

from lmforge.eval.lm import HFCausalLM, LmforgeLM


@lru_cache(maxsize=4)  # tests in one process share it
def tiny_tokenizer(vocab_size: int = 1024, documents: int = 400):
    from lmforge.data.config import TokenizerConfig
    from lmforge.data.documents import embedded_corpus
    from lmforge.tokenizer import train_tokenizer

    texts = [d["text"] for d in islice(embedded_corpus(), documents)]
    return train_tokenizer(texts, TokenizerConfig(vocab_size=vocab_size, min_frequency=2))


def tiny_lmforge(tokenizer, block_size: int = 128, n_layer: int = 2, n_embd: int = 32, seed: int = 0,
                 init_std: float = 0.1) -> LmforgeLM:
    from lmforge.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2,
                      n_embd=n_embd, init_std=init_std)
    return LmforgeLM(Transformer(cfg), tokenizer, name=f"tiny-lmforge-{n_layer}x{n_embd}")


def random_run(run_dir: str | Path, tokenizer, model_cfg, seed: int = 0) -> Path:
    """A run directory (tokenizer.json, a step-0 checkpoint) of a randomly initialised model: what
    `lmforge export`, `eval`, `generate` and `serve` load, for benchmarks that need no training."""
    from lmforge.config import RunConfig
    from lmforge.model import Transformer
    from lmforge.train.checkpoint import save_checkpoint

    run = Path(run_dir)
    torch.manual_seed(seed)
    model = Transformer(model_cfg)
    run.mkdir(parents=True)
    tokenizer.save(run / "tokenizer.json")
    save_checkpoint(run, 0, model, {}, {"step": 0}, RunConfig(name=run.name, out_dir=str(run.parent), model=model_cfg), 1)
    return run


def hf_tokenizer(tokenizer):
    """The lmforge tokenizer as a transformers fast tokenizer (GPT-2 style: no BOS, eos = eot)."""
    from tokenizers import Tokenizer as Raw
    from transformers import PreTrainedTokenizerFast

    raw = Raw.from_str(tokenizer.to_str())
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   bos_token=None, unk_token=None, model_max_length=1_000_000)


def tiny_gpt2(tokenizer, n_positions: int = 128, n_layer: int = 2, n_embd: int = 32, seed: int = 0,
              init_std: float = 0.1, save_to: str | Path | None = None) -> HFCausalLM:
    """A random GPT-2 over `tokenizer`; with `save_to`, also written as a folder lm-eval can load."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=2, initializer_range=init_std, bos_token_id=tokenizer.eot_id,
                     eos_token_id=tokenizer.eot_id, pad_token_id=tokenizer.pad_id)
    model = GPT2LMHeadModel(cfg).eval()
    tok = hf_tokenizer(tokenizer)
    if save_to is not None:
        model.save_pretrained(save_to)
        tok.save_pretrained(save_to)
    return HFCausalLM(model, tok, name=f"tiny-gpt2-{n_layer}x{n_embd}")
