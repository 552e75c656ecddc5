"""Domain mixing: sample the kept documents of each domain to target weights and a token budget.

Each domain d has T_d tokens kept and a weight w_d. The budget is `target_tokens`, or, if 0, the
largest budget that repeats no domain (min_d T_d / w_d). Domain d then needs e_d = w_d * budget / T_d
epochs: every document is written floor(e_d) times plus once more with probability frac(e_d),
decided by a hash of (seed, document), so the mix streams shard by shard in bounded memory and is
reproducible (the GPT-3 / The Pile style of up- and down-sampling by epochs per domain).
Tokens are counted with `mix.tokenizer` (a tokenizer.json) when given, else as whitespace words.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Any

from lmforge.data.curate.config import MixConfig
from lmforge.data.curate.executors import log
from lmforge.data.curate.shards import ShardWriter, read_shard, shard_files
from lmforge.errors import LmforgeError


def _counter(tokenizer: str):
    if not tokenizer:
        return lambda text: len(text.split())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def _uniform(seed: int, key: str) -> float:
    h = hashlib.blake2b(f"{seed}:{key}".encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def mix(cfg: MixConfig, stats: dict[str, Any], out: Path, fmt: str) -> dict[str, Any]:
    count = _counter(cfg.tokenizer)
    files = shard_files(out / "kept")
    have: Counter = Counter()
    for f in files:
        for doc in read_shard(f):
            have[doc["source"]] += count(doc["text"])
    total_w = sum(cfg.weights.values())
    weights = {d: w / total_w for d, w in cfg.weights.items() if w > 0}
    missing = [d for d in weights if have[d] == 0]
    if missing:
        raise LmforgeError(
            f"mix.weights names domain(s) with no kept documents: {', '.join(missing)}; "
            f"kept domains: {', '.join(sorted(have)) or 'none'}"
        )
    budget = cfg.target_tokens or min(have[d] / w for d, w in weights.items())
    epochs = {d: w * budget / have[d] for d, w in weights.items()}
    got_tokens: Counter = Counter()
    got_docs: Counter = Counter()
    for f in files:
        writer = ShardWriter(out / "mixed" / f.name.split(".")[0], fmt)
        for i, doc in enumerate(read_shard(f)):
            e = epochs.get(doc["source"], 0.0)
            copies = math.floor(e) + (_uniform(cfg.seed, f"{f.name}:{i}") < e - math.floor(e))
            n = count(doc["text"]) if copies else 0
            for _ in range(copies):
                writer.write(doc)
                got_tokens[doc["source"]] += n
                got_docs[doc["source"]] += 1
        writer.close()
        if writer.count == 0:
            writer.path.unlink()
    total = sum(got_tokens.values()) or 1
    domains = {
        d: {
            "weight": round(weights.get(d, 0.0), 4),
            "available_tokens": have[d],
            "target_tokens": round(weights.get(d, 0.0) * budget),
            "tokens": got_tokens[d],
            "docs": got_docs[d],
            "epochs": round(epochs.get(d, 0.0), 3),
            "share": round(got_tokens[d] / total, 4),
        }
        for d in sorted(set(have) | set(weights))
    }
    unit = "tokens" if cfg.tokenizer else "words"
    log(f"mix: {sum(got_tokens.values()):,} {unit} in {sum(got_docs.values())} docs -> {out / 'mixed'}")
    return {"unit": unit, "budget": round(budget), "domains": domains}
