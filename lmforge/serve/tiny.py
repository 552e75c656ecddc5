"""A tiny random run directory: a throwaway tokenizer and an untrained model, saved as a real run.

For tests, the serving benchmark and trying the server without training anything. The weights are
random, so the text is gibberish, but every code path (checkpoint loading, chat template, KV-cache
generation, streaming) is the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch

# A few lines of plain text are enough for a byte-level BPE with a few dozen merges.
_TEXT = ("the quick brown fox jumps over the lazy dog. a model reads text and writes text. "
         "hello world, how are you today? fine, thank you. numbers: 1 2 3 4 5 6 7 8 9 10. ") * 20


def make_tiny_run(run_dir: str | Path, *, seed: int = 0, block_size: int = 128, n_layer: int = 2,
                  n_embd: int = 32, n_head: int = 2, vocab_size: int = 320) -> Path:
    """Write `run_dir` (tokenizer.json, config.yaml, checkpoints/step_000000) and return it."""
    from lmforge.config import RunConfig, to_yaml
    from lmforge.data.config import TokenizerConfig
    from lmforge.model import ModelConfig, Transformer
    from lmforge.tokenizer import SPECIAL_TOKENS, train_tokenizer
    from lmforge.train.checkpoint import save_checkpoint

    run_dir = Path(run_dir)
    tok = train_tokenizer([_TEXT], TokenizerConfig(vocab_size=vocab_size, min_frequency=2))
    mcfg = ModelConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_embd=n_embd,
                       n_head=n_head, tie_embeddings=False)
    torch.manual_seed(seed)
    model = Transformer(mcfg)
    with torch.no_grad():
        # A token's row of the (untied) output head sets its logit. Rows of printable ASCII
        # tokens get N(0, 0.6) rows and all others (special tokens, control and partial UTF-8
        # bytes) zero: the gibberish is readable, and answers end at max_tokens rather than at a
        # random end token.
        head = model.lm_head.weight
        readable = torch.tensor([i >= len(SPECIAL_TOKENS) and _readable(tok.decode([i]))
                                 for i in range(tok.vocab_size)])
        head[readable] = torch.randn(int(readable.sum()), n_embd) * 0.6
        head[~readable] = 0.0
    cfg = RunConfig(name=run_dir.name, out_dir=str(run_dir.parent), model=mcfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    tok.save(run_dir / "tokenizer.json")
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    save_checkpoint(run_dir, 0, model, {}, {"step": 0, "tokens": 0}, cfg, keep_last=1)
    return run_dir


def _readable(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable()
