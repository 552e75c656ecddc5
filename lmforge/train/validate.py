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

from lmforge.data.loader import TokenLoader
from lmforge.train.objectives import Objective, batch_seed

VAL_STREAM = 1 << 30  # seed component separating validation masks from training ones


def validate(par, shard_dir: Path, seq_len: int, batch_size: int, batches: int, seed: int,
             objective: Objective, token_bytes: np.ndarray, device: torch.device,
             amp: Callable[[], AbstractContextManager]) -> dict[str, float | None]:
    """{"val_loss", "val_ppl", "val_bpb"}; ppl and bpb only for decoder models (None otherwise).

    `par` is the run's Parallel (lmforge.train.parallel.parallelize): each data-parallel rank
    evaluates batch_size / dp sequences of every batch, so all layouts see the same windows."""
    env = par.env
    dp, dp_rank = env.layout.dp, env.dp_rank
    loader = TokenLoader(shard_dir, "val", seq_len, seed, rank=dp_rank, world_size=dp)  # fresh: same windows
    decoder = objective.kind == "decoder"
    nll = torch.zeros((), dtype=torch.float64, device=device)
    n_tokens = 0
    n_bytes = 0
    was_training = par.module.training
    par.train(False)
    with torch.no_grad():
        for i in range(batches):
            x, y = loader.next_batch(batch_size // dp)
            mask_seed = batch_seed(seed, VAL_STREAM, i) if dp == 1 else batch_seed(seed, VAL_STREAM, i, dp_rank)
            batch = {k: v.to(device, non_blocking=True) for k, v in objective(x, y, mask_seed).items()}
            with amp():
                loss = par.eval_loss(batch)
            if loss is None:  # a pipeline stage before the last: the loss is computed elsewhere
                continue
            if decoder:  # every target counts, so mean * count is the sum
                nll += loss.double() * y.numel()
                n_tokens += y.numel()
                n_bytes += int(token_bytes[y.numpy()].sum())
            else:  # the objective's mean loss per batch
                nll += loss.double()
                n_tokens += 1
    par.train(was_training)
    if env.distributed:  # sums over ranks; tp copies of a dp rank count alike in both, so ratios hold
        totals = torch.stack([nll.cpu(), torch.tensor(float(n_tokens), dtype=torch.float64),
                              torch.tensor(float(n_bytes), dtype=torch.float64)]).to(env.comm_device)
        env.all_reduce_sum(totals)
        nll, n_tokens, n_bytes = totals[0], int(totals[1].item()), int(totals[2].item())
    val_loss = nll.item() / max(n_tokens, 1)
    if not decoder:
        return {"val_loss": val_loss, "val_ppl": None, "val_bpb": None}
    ppl = math.exp(val_loss) if val_loss < 700 else math.inf
    bpb = nll.item() / math.log(2) / n_bytes if n_bytes else None
    return {"val_loss": val_loss, "val_ppl": ppl, "val_bpb": bpb}
