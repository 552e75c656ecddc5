"""Fine-tuning's batch source and held-out loss for the training loop (train/loop.py `train_on`).

Rows are packed (or one padded example each, batching=pad) from the training examples in a
seeded order per epoch (random.Random(seed + epoch)). Every data-parallel rank builds the same
global rows and keeps every dp-th of each global micro-batch, so the rows a step trains on do not
depend on the number of ranks; the position (epoch, global rows taken) is the whole state, the
same on every rank and under every layout. Batches carry "step_tokens", the assistant tokens of
the global micro-batch, for the loop's token-weighted (loss-masked) objective.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.train.objectives import masked_nll_sum
from lmforge.train.parallel.parallelize import Parallel
from lmforge.tune.pack import Batch, Example, collate_packed, collate_padded, make_batches, pack_rows


def label_count(ex: Example) -> int:
    return sum(ex.mask[1:])


def fingerprint(examples: list[Example]) -> str:
    """A hash of the training examples: a resumed run must train on the same data."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(repr((ex.ids, ex.mask)).encode())
    return h.hexdigest()[:16]


class SftSource:
    token_weighted = True
    loss_sum = staticmethod(masked_nll_sum)  # cross-entropy over the assistant tokens

    def __init__(
        self,
        examples: list[Example],
        batching: str,
        seq_len: int,
        pad_id: int,
        seed: int,
        dp_rank: int = 0,
        dp: int = 1,
    ) -> None:
        if not examples:
            raise LmforgeError("no training examples")
        self.examples, self.batching, self.seq_len, self.pad_id = examples, batching, seq_len, pad_id
        self.seed, self.dp_rank, self.dp = seed, dp_rank, dp
        self.fingerprint = fingerprint(examples)
        self.epoch, self.position = 0, 0  # global rows of this epoch already taken
        self._rows_epoch, self._rows = -1, []

    def rows_of(self, epoch: int) -> list[list[Example]]:
        """The epoch's rows in training order (each a list of the examples packed into it)."""
        if self._rows_epoch != epoch:
            order = list(self.examples)
            random.Random(self.seed + epoch).shuffle(order)
            self._rows = pack_rows(order, self.seq_len) if self.batching == "pack" else [[ex] for ex in order]
            self._rows_epoch = epoch
        return self._rows

    def steps_per_epoch(self, rows_per_step: int) -> int:
        return math.ceil(len(self.rows_of(0)) / rows_per_step)

    def _take(self, n: int) -> list[list[Example]]:
        taken: list[list[Example]] = []
        while len(taken) < n:
            rows = self.rows_of(self.epoch)
            k = min(n - len(taken), len(rows) - self.position)
            taken += rows[self.position : self.position + k]
            self.position += k
            if self.position == len(rows):  # a batch running past the epoch continues with the next
                self.epoch, self.position = self.epoch + 1, 0
        return taken

    def next_batch(self, rows: int, step: int, micro: int) -> dict[str, torch.Tensor]:
        global_rows = self._take(rows * self.dp)
        mine = global_rows[self.dp_rank :: self.dp]
        step_tokens = sum(label_count(ex) for row in global_rows for ex in row)
        if self.batching == "pack":
            b = collate_packed(mine, self.seq_len, self.pad_id)
        else:
            b = collate_padded([row[0] for row in mine], self.pad_id)
        return {**as_model_batch(b), "step_tokens": torch.tensor(step_tokens)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "sft",
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "batching": self.batching,
            "seq_len": self.seq_len,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("kind", "fingerprint", "batching", "seq_len", "seed"):
            if state.get(key) != self.state_dict()[key]:
                raise LmforgeError(
                    f"the checkpoint's data position has {key}={state.get(key)!r}, this run "
                    f"{self.state_dict()[key]!r}: the training data or its batching changed since "
                    "it was saved; use another out="
                )
        if not (0 <= int(state["position"]) <= len(self.rows_of(int(state["epoch"])))):
            raise LmforgeError(f"the checkpoint's data position is invalid: {state}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def state_for_layout(self, saved: dict[str, Any]) -> dict[str, Any]:
        return saved  # global rows: the same position under every layout


def as_model_batch(b: Batch) -> dict[str, torch.Tensor]:
    batch = {"input_ids": b.input_ids, "targets": b.labels}
    if b.segments is not None:
        batch["segment_ids"], batch["position_ids"] = b.segments, b.positions
    return batch


def sft_validator(examples: list[Example], seq_len: int, batch_size: int, pad_id: int):
    """The held-out loss: nats per assistant token over every held-out example (padded batches;
    every rank runs all of them, so FSDP's collectives line up), or None without examples."""
    if not examples:
        return None
    batches = make_batches(examples, "pad", seq_len, batch_size, pad_id)
    count = sum(b.label_tokens for b in batches)

    def validate(par: Parallel, amp) -> dict:
        device = par.env.device
        was_training = par.module.training
        par.train(False)
        total = torch.zeros((), dtype=torch.float64, device=device)
        with torch.no_grad():
            for b in batches:
                batch = {k: v.to(device) for k, v in as_model_batch(b).items()}
                with amp():
                    total += par.eval_nll(batch).double()
        par.train(was_training)
        loss = float(total) / max(count, 1)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)), "val_bpb": None}

    return validate
