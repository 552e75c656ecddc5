"""Held-out loss: the same validation windows every time, reported in nats/token and bits per byte.

The windows are a fixed token budget (train.eval_tokens, or the whole validation split when it is
smaller), so a held-out number compares across memory settings (batch_size, grad_accum) and
parallel layouts.

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
IGNORE = -100  # target id the loss skips: the padding rows of the last batch


def val_windows(eval_tokens: int, seq_len: int, split_windows: int) -> int:
    """How many seq_len windows make the held-out set: eval_tokens rounded up to whole windows,
    or the whole split when it is smaller. Depends on nothing about batching or layout."""
    return min(-(-eval_tokens // seq_len), split_windows)


def validate(
    par,
    shard_dir: Path,
    seq_len: int,
    eval_tokens: int,
    batch_size: int,
    seed: int,
    objective: Objective,
    token_bytes: np.ndarray,
    device: torch.device,
    amp: Callable[[], AbstractContextManager],
) -> dict[str, float | None]:
    """{"val_loss", "val_ppl", "val_bpb"}; ppl and bpb only for decoder models (None otherwise).

    The held-out set is the first val_windows(...) windows of the validation split's seeded
    order, the same whatever batch_size, grad_accum, world size or layout. `par` is the run's
    Parallel (lmforge.train.parallel.parallelize): the windows go through in global batches of
    batch_size, each data-parallel rank taking every dp-th one; the last batch is padded with
    ignored rows, so every rank runs the same shapes (FSDP and pipelines need that) and the sums
    cover each window exactly once. Masks of the non-causal objectives are drawn per window, so
    they too are independent of the batching. val_loss is the mean loss per scored target token."""
    env = par.env
    dp, dp_rank = env.layout.dp, env.dp_rank
    loader = TokenLoader(shard_dir, "val", seq_len, seed)  # one process's order: the same on every rank
    n = val_windows(eval_tokens, seq_len, loader.num_windows)
    local = batch_size // dp
    decoder = objective.kind == "decoder"
    nll = torch.zeros((), dtype=torch.float64, device=device)
    n_tokens = 0
    n_bytes = 0
    was_training = par.module.training
    par.train(False)
    with torch.no_grad():
        for first in range(0, n, batch_size):
            count = min(batch_size, n - first)
            x, y = loader.next_batch(count)
            mine = torch.arange(dp_rank, count, dp)  # this rank's rows of the global batch
            if len(mine):
                batch = _pad(_rows(objective, x[mine], y[mine], [first + int(i) for i in mine], seed), local)
            else:  # fewer rows than ranks: this one runs the shapes with nothing to score
                batch = _pad(_rows(objective, x[:1], y[:1], [first], seed), local)
                batch["targets"] = torch.full_like(batch["targets"], IGNORE)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with amp():
                loss_sum = par.eval_nll(batch)
            if loss_sum is None:  # a pipeline stage before the last: the loss is computed elsewhere
                continue
            targets = batch["targets"].cpu()
            scored = targets != IGNORE
            nll += loss_sum.double()
            n_tokens += int(scored.sum())
            if decoder:
                n_bytes += int(token_bytes[targets[scored].numpy()].sum())
    par.train(was_training)
    if env.distributed:  # sums over ranks; tp copies of a dp rank count alike in both, so ratios hold
        totals = torch.stack(
            [
                nll.cpu(),
                torch.tensor(float(n_tokens), dtype=torch.float64),
                torch.tensor(float(n_bytes), dtype=torch.float64),
            ]
        ).to(env.comm_device)
        env.all_reduce_sum(totals)
        nll, n_tokens, n_bytes = totals[0], int(totals[1].item()), int(totals[2].item())
    val_loss = nll.item() / max(n_tokens, 1)
    if not decoder:
        return {"val_loss": val_loss, "val_ppl": None, "val_bpb": None}
    ppl = math.exp(val_loss) if val_loss < 700 else math.inf
    bpb = nll.item() / math.log(2) / n_bytes if n_bytes else None
    return {"val_loss": val_loss, "val_ppl": ppl, "val_bpb": bpb}


def _rows(objective: Objective, x: torch.Tensor, y: torch.Tensor, windows: list[int], seed: int) -> dict:
    """The objective's batch for these rows; each window's masks seeded by its own index."""
    if objective.kind == "decoder":
        return objective(x, y, 0)
    rows = [
        objective(x[i : i + 1], y[i : i + 1], batch_seed(seed, VAL_STREAM, w)) for i, w in enumerate(windows)
    ]
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}


def _pad(batch: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Fill the batch up to `rows` rows with copies of its first row whose targets are all ignored."""
    have = batch["input_ids"].shape[0]
    if have == rows:
        return batch
    out = {}
    for k, v in batch.items():
        filler = v[:1].expand(rows - have, *v.shape[1:])
        out[k] = torch.cat([v, torch.full_like(filler, IGNORE) if k == "targets" else filler])
    return out
