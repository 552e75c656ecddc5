"""Held-out loss: the same validation windows every time, reported in nats/token and bits per byte.

Bits per byte (as in The Pile, Gao et al. 2020 §4.1, and nanochat) divides the summed token NLL,
converted to bits, by the UTF-8 bytes those tokens stand for, so it compares models with
different tokenizers. Document-boundary (eot) targets have no bytes but their NLL counts: knowing
where a document ends is information the model must also encode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmforge.data.loader import TokenLoader
from lmforge.train.objectives import Objective, batch_seed

VAL_STREAM = 1 << 30  # seed component separating validation masks from training ones


def validate(model: nn.Module, shard_dir: Path, seq_len: int, batch_size: int, batches: int, seed: int,
             objective: Objective, token_bytes: np.ndarray, device: torch.device,
             amp: Callable[[], AbstractContextManager]) -> dict[str, float | None]:
    """{"val_loss", "val_ppl", "val_bpb"}; ppl and bpb only for decoder models (None otherwise)."""
    loader = TokenLoader(shard_dir, "val", seq_len, seed)  # fresh: always the same windows
    decoder = objective.kind == "decoder"
    nll = torch.zeros((), dtype=torch.float64, device=device)
    n_tokens = 0
    n_bytes = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(batches):
            x, y = loader.next_batch(batch_size)
            batch = {k: v.to(device, non_blocking=True)
                     for k, v in objective(x, y, batch_seed(seed, VAL_STREAM, i)).items()}
            with amp():
                _, loss = model(batch["input_ids"], batch["targets"],
                                decoder_input_ids=batch.get("decoder_input_ids"))
            if decoder:  # every target counts, so mean * count is the sum
                nll += loss.double() * y.numel()
                n_tokens += y.numel()
                n_bytes += int(token_bytes[y.numpy()].sum())
            else:  # the objective's mean loss per batch
                nll += loss.double()
                n_tokens += 1
    model.train(was_training)
    val_loss = nll.item() / max(n_tokens, 1)
    if not decoder:
        return {"val_loss": val_loss, "val_ppl": None, "val_bpb": None}
    ppl = math.exp(val_loss) if val_loss < 700 else math.inf
    bpb = nll.item() / math.log(2) / n_bytes if n_bytes else None
    return {"val_loss": val_loss, "val_ppl": ppl, "val_bpb": bpb}
