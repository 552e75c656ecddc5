"""A run's inputs: the tokenizer and token shards it trains on, made once and reused.

`lmforge run`/`train` (lmforge/pipeline.py) and `lmforge plan sweep` prepare them the same way;
this module sits below both, so plan's sweeps do not import the pipeline that writes plan's report
section.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lmforge.config import RunConfig
from lmforge.data.documents import embedded_corpus, read_documents
from lmforge.data.shards import check_tokenizer, encode_corpus, load_meta
from lmforge.errors import LmforgeError
from lmforge.tokenizer import Tokenizer, train_tokenizer, vocab_shortfall
from lmforge.train.parallel.launch import is_main_process


def log(msg: str) -> None:
    if is_main_process():  # under torchrun only rank 0 speaks
        print(f"[lmforge] {msg}", flush=True)


def warn(msg: str | None) -> None:
    if msg and is_main_process():
        print(msg, file=sys.stderr, flush=True)


def documents(corpus: str) -> Iterator[dict]:
    return embedded_corpus() if corpus == "embedded" else read_documents(corpus)


def prepare_tokenizer(cfg: RunConfig, run_dir: Path):
    """The run's tokenizer: a given one, the one already in the run dir, or a newly trained one."""
    target = run_dir / "tokenizer.json"
    if cfg.tokenizer.path:
        tok = Tokenizer.load(cfg.tokenizer.path)
        if target.exists() and Tokenizer.load(target).hash != tok.hash:
            raise LmforgeError(
                f"{target} holds a different tokenizer than tokenizer.path={cfg.tokenizer.path}; "
                "use a new run name"
            )
        if not target.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            tok.save(target)
        return tok
    if target.exists():
        log(f"tokenizer: reusing {target}")
        return Tokenizer.load(target)
    t0 = time.time()
    texts = (d["text"] for d in documents(cfg.data.corpus))
    tok = train_tokenizer(texts, cfg.tokenizer)
    warn(vocab_shortfall(tok, cfg.tokenizer))
    run_dir.mkdir(parents=True, exist_ok=True)
    tok.save(target)
    log(f"tokenizer: trained byte-level BPE, vocab {tok.vocab_size}, in {time.time() - t0:.1f}s -> {target}")
    return tok


def prepare_shards(cfg: RunConfig, tok, run_dir: Path) -> Path:
    """Token shards for training: given ones (checked against the tokenizer) or encoded now."""
    shard_dir = Path(cfg.data.shards) if cfg.data.shards else run_dir / "data"
    if (shard_dir / "meta.json").exists():
        check_tokenizer(load_meta(shard_dir), tok)
        log(f"data: reusing token shards in {shard_dir}")
        return shard_dir
    if cfg.data.shards:
        raise LmforgeError(
            f"data.shards={shard_dir} has no meta.json; encode a corpus there with "
            "`lmforge tokenizer encode` or leave data.shards unset"
        )
    t0 = time.time()
    meta = encode_corpus(documents(cfg.data.corpus), tok, shard_dir, cfg.data)
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    log(
        f"data: {tr['documents']} train / {va['documents']} val documents, "
        f"{tr['tokens']:,} / {va['tokens']:,} tokens ({tr['bytes'] / max(tr['tokens'], 1):.2f} bytes/token) "
        f"in {time.time() - t0:.1f}s -> {shard_dir}"
    )
    return shard_dir


def fit_model_to_tokenizer(cfg: RunConfig, vocab_size: int) -> None:
    """The model's vocabulary is the tokenizer's `vocab_size` (a larger model.vocab_size is kept as
    padding)."""
    if cfg.model.vocab_size < vocab_size:
        cfg.model.vocab_size = vocab_size
    elif cfg.train.init_from:
        pass  # the initial weights fix the embedding size (imported models may pad it widely)
    elif cfg.model.vocab_size - vocab_size > 256:
        # The default recipe size is just a placeholder: use the tokenizer's, don't pad hugely.
        cfg.model.vocab_size = vocab_size
    cfg.model.validate()
