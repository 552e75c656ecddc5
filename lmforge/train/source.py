"""Batch sources: what the training loop draws its micro-batches from.

    source.next_batch(rows, step, micro) -> {"input_ids", "targets"[, ...]} (CPU int64; this rank's rows)

The loop (train/loop.py) does not know where batches come from: pre-training reads token shards
(TokenSource: TokenLoader windows turned into a batch by the model kind's Objective), fine-tuning
reads chat examples (tune/source.py). A source is rank-aware (each data-parallel rank gets its own
rows of every global batch) and resumable (state_dict / load_state_dict, saved in every checkpoint).

`token_weighted` sources have a variable number of loss tokens per row (targets of -100 carry no
loss: the loss-masked objective). For them the loop weighs each token of the optimizer step
equally, over all micro-batches and all data-parallel ranks, so that a step's gradient does not
depend on how its rows are split into micro-batches or ranks (batch_size x grad_accum and dp are
interchangeable). Their batches carry "step_tokens": the loss units of the global micro-batch
(every rank's rows), which the loop adds up over the step instead of an all-reduce, and their
`loss_sum(model, batch)` is the objective: the batch's summed loss over those units
(objectives.masked_nll_sum for fine-tuning: assistant tokens; a preference objective would sum
over pairs). The loop scales it by dp / the step's units, so the step's loss is the mean per unit.

A source may also have `step_metrics() -> {name: sum over this rank's units of the step, ...,
"units": their count}` (tune/dpo_source.py: reward margin, preference accuracy); the loop takes it
after every step, adds it over the ranks and logs each figure per unit with the step's loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from lmforge.data.loader import TokenLoader
from lmforge.train.objectives import Objective, batch_seed
from lmforge.train.state import loader_state_for


class BatchSource(Protocol):
    token_weighted: bool
    loss_sum: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None  # token-weighted only

    def next_batch(self, rows: int, step: int, micro: int) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def state_for_layout(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A state saved by a run of another (pp, dp, tp) layout, re-expressed for this rank."""
        ...


class TokenSource:
    """Pre-training: windows of the token shards, made into a batch by the objective (the masks
    of MLM and span corruption are seeded per step and micro-batch, so they need no saved state)."""

    token_weighted = False  # every position has a target (decoder), or the objective's own mean
    loss_sum = None  # the model's own loss

    def __init__(self, loader: TokenLoader, objective: Objective, seed: int, dp_rank: int, dp: int) -> None:
        self.loader, self.objective, self.seed, self.dp_rank, self.dp = loader, objective, seed, dp_rank, dp

    def next_batch(self, rows: int, step: int, micro: int) -> dict[str, torch.Tensor]:
        x, y = self.loader.next_batch(rows)
        parts = (self.seed, step, micro) if self.dp == 1 else (self.seed, step, micro, self.dp_rank)
        return self.objective(x, y, batch_seed(*parts))

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def state_for_layout(self, saved: dict[str, Any]) -> dict[str, Any]:
        return loader_state_for(saved, self.dp_rank, self.dp)
