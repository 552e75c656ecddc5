"""DPO's batch source, reference log-probs and held-out preference figures for the training loop.

A pair trains as two padded rows, prompt + chosen and prompt + rejected, rendered by the chat
template; only the final assistant reply's tokens carry a target (earlier assistant turns of a
multi-turn prompt are context). A micro-batch of p pairs is 2p rows, the p chosen rows first.

Like tune/source.py, every rank draws the same global micro-batch of pairs (seeded order per
epoch) and keeps every dp-th pair; the position (epoch, pairs taken) is the whole state. The
loop's token-weighted objective weighs each PAIR of an optimizer step the same ("step_tokens" is
the global micro-batch's pair count), so batch_size x grad_accum and dp are interchangeable.

The reference log-probs come from one of (DpoConfig.ref):
- "model": a frozen copy of the starting checkpoint, run under no_grad in each loss call;
- "precomputed": computed once before training with the starting weights, in a fixed order and
  batching (so deterministic), saved in <out>/train/ref_logps.pt and reloaded by a resumed run;
- with LoRA always the policy itself with its adapters switched off (no second copy).
The held-out pairs' reference log-probs are always precomputed (they are fixed).
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.atomic import write_atomic
from lmforge.chat.template import encode_chat
from lmforge.errors import LmforgeError
from lmforge.tune.dpo import PairScores, metric_sums, pair_losses, sequence_logps
from lmforge.tune.lora import adapters_disabled
from lmforge.tune.pack import Example, collate_padded

REF_BATCH = 8  # pairs per forward when precomputing reference log-probs (fixed: the result must not vary)


@dataclass
class EncodedPair:
    chosen: Example
    rejected: Example
    index: int  # position in the encoded set: the key of its precomputed reference log-probs


def encode_reply(prompt: Sequence[dict], reply: str, tokenizer) -> Example:
    """prompt + the assistant reply; the mask marks the reply's tokens and its closing <|end|> only."""
    start = len(encode_chat(prompt, tokenizer, add_generation_prompt=True)[0])
    ids, _ = encode_chat([*prompt, {"role": "assistant", "content": reply}], tokenizer)
    return Example(ids, [i >= start for i in range(len(ids))])


def encode_pairs(
    pairs: Sequence[Any], tokenizer, seq_len: int, overlong: str
) -> tuple[list[EncodedPair], int, int]:
    """Encode PreferencePairs (.prompt messages, .chosen, .rejected) and apply the overlong rule to
    both replies ("truncate" keeps each row's first seq_len positions, "drop" drops the pair); a
    pair left without a reply token on either side is dropped. Returns (kept, truncated, dropped)."""
    kept: list[EncodedPair] = []
    truncated = dropped = 0
    for p in pairs:
        rows = [encode_reply(p.prompt, p.chosen, tokenizer), encode_reply(p.prompt, p.rejected, tokenizer)]
        if any(r.positions > seq_len for r in rows):
            if overlong == "drop":
                dropped += 1
                continue
            rows = [Example(r.ids[: seq_len + 1], r.mask[: seq_len + 1]) for r in rows]
            truncated += 1
        if not all(any(r.mask[1:]) for r in rows):
            dropped += 1
            continue
        kept.append(EncodedPair(rows[0], rows[1], len(kept)))
    return kept, truncated, dropped


def fingerprint(pairs: list[EncodedPair]) -> str:
    """A hash of the encoded pairs: a resumed run (and its saved reference log-probs) must match."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(repr((p.chosen.ids, p.chosen.mask, p.rejected.ids, p.rejected.mask)).encode())
    return h.hexdigest()[:16]


def collate_pairs(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    b = collate_padded([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    return {
        "input_ids": b.input_ids,
        "targets": b.labels,
        "pair_index": torch.tensor([p.index for p in pairs], dtype=torch.long),
    }


# ---------------------------------------------------------------- the objective


Reference = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]  # (policy, batch) -> ref logps (2p,)


def policy_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    logits, _ = model(batch["input_ids"], None)
    return sequence_logps(logits, batch["targets"])


def frozen_reference(ref_model: nn.Module) -> Reference:
    """A separate frozen copy of the starting weights (eval mode: no dropout)."""
    ref_model.eval().requires_grad_(False)

    @torch.no_grad()
    def ref(policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy_logps(ref_model, batch)[0]

    return ref


def adapters_off_reference() -> Reference:
    """LoRA: the policy with its adapters switched off is the base model (eval mode for the pass)."""

    @torch.no_grad()
    def ref(policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        was = policy.training
        policy.train(False)
        try:
            with adapters_disabled(policy):
                return policy_logps(policy, batch)[0]
        finally:
            policy.train(was)

    return ref


def table_reference(table: torch.Tensor) -> Reference:
    """Precomputed: row i of the table is pair i's (chosen, rejected) reference log-probs."""

    def ref(policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = table.to(batch["pair_index"].device)[batch["pair_index"]]  # (p, 2)
        return torch.cat([rows[:, 0], rows[:, 1]])

    return ref


class DpoObjective:
    """loss_sum(model, batch): the batch's summed pair losses; keeps the sums of the step metrics."""

    def __init__(self, reference: Reference, beta: float, loss: str, label_smoothing: float) -> None:
        self.reference, self.beta, self.loss, self.label_smoothing = reference, beta, loss, label_smoothing
        self.sums: dict[str, torch.Tensor] = {}

    def scores(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> PairScores:
        ref = self.reference(model, batch).float()
        logps, counts = policy_logps(model, batch)
        p = logps.shape[0] // 2
        return pair_losses(
            logps[:p],
            logps[p:],
            ref[:p],
            ref[p:],
            beta=self.beta,
            loss=self.loss,
            label_smoothing=self.label_smoothing,
            chosen_tokens=counts[:p],
            rejected_tokens=counts[p:],
        )

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.scores(model, batch)
        for k, v in {**metric_sums(s), "units": torch.tensor(float(s.loss.shape[0]))}.items():
            self.sums[k] = self.sums.get(k, 0) + v.to(s.loss.device)
        return s.loss.sum()

    def take_sums(self) -> dict[str, torch.Tensor]:
        sums, self.sums = self.sums, {}
        return sums


# ---------------------------------------------------------------- the batch source


class DpoSource:
    token_weighted = True  # the loss unit is a pair

    def __init__(
        self,
        pairs: list[EncodedPair],
        objective: DpoObjective,
        pad_id: int,
        seed: int,
        dp_rank: int = 0,
        dp: int = 1,
    ) -> None:
        if not pairs:
            raise LmforgeError("no training preference pairs")
        self.pairs, self.objective, self.pad_id, self.seed, self.dp_rank, self.dp = (
            pairs,
            objective,
            pad_id,
            seed,
            dp_rank,
            dp,
        )
        self.loss_sum = objective
        self.fingerprint = fingerprint(pairs)
        self.epoch, self.position = 0, 0  # global pairs of this epoch already taken
        self._order_epoch, self._order = -1, []

    def order_of(self, epoch: int) -> list[EncodedPair]:
        if self._order_epoch != epoch:
            self._order = list(self.pairs)
            random.Random(self.seed + epoch).shuffle(self._order)
            self._order_epoch = epoch
        return self._order

    def steps_per_epoch(self, pairs_per_step: int) -> int:
        return math.ceil(len(self.pairs) / pairs_per_step)

    def _take(self, n: int) -> list[EncodedPair]:
        taken: list[EncodedPair] = []
        while len(taken) < n:
            order = self.order_of(self.epoch)
            k = min(n - len(taken), len(order) - self.position)
            taken += order[self.position : self.position + k]
            self.position += k
            if self.position == len(order):  # a batch running past the epoch continues with the next
                self.epoch, self.position = self.epoch + 1, 0
        return taken

    def next_batch(self, rows: int, step: int, micro: int) -> dict[str, torch.Tensor]:
        global_pairs = self._take(rows * self.dp)
        return {
            **collate_pairs(global_pairs[self.dp_rank :: self.dp], self.pad_id),
            "step_tokens": torch.tensor(len(global_pairs)),
        }

    def step_metrics(self) -> dict[str, torch.Tensor]:
        """The sums of this step's pair figures on this rank, and their pair count ("units")."""
        return self.objective.take_sums()

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "dpo",
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("kind", "fingerprint", "seed"):
            if state.get(key) != self.state_dict()[key]:
                raise LmforgeError(
                    f"the checkpoint's data position has {key}={state.get(key)!r}, this run "
                    f"{self.state_dict()[key]!r}: the preference data changed since it was saved; "
                    "use another out="
                )
        if not (0 <= int(state["position"]) <= len(self.pairs)):
            raise LmforgeError(f"the checkpoint's data position is invalid: {state}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def state_for_layout(self, saved: dict[str, Any]) -> dict[str, Any]:
        return saved  # global pairs: the same position under every layout


# ---------------------------------------------------------------- reference log-probs, held-out figures


@torch.no_grad()
def reference_table(model: nn.Module, pairs: list[EncodedPair], pad_id: int, amp) -> torch.Tensor:
    """(n, 2) reference log-probs (chosen, rejected) of every pair, in index order and fixed
    batches of REF_BATCH, with the model in eval mode: the same numbers on every run."""
    was = model.training
    model.train(False)
    device = next(model.parameters()).device
    out = torch.zeros(len(pairs), 2, dtype=torch.float32)
    for i in range(0, len(pairs), REF_BATCH):
        chunk = pairs[i : i + REF_BATCH]
        batch = {k: v.to(device) for k, v in collate_pairs(chunk, pad_id).items()}
        with amp():
            logps = policy_logps(model, batch)[0].float().cpu()
        out[i : i + len(chunk), 0], out[i : i + len(chunk), 1] = logps[: len(chunk)], logps[len(chunk) :]
    model.train(was)
    return out


def load_or_compute_table(
    path: Path, key: str, compute: Callable[[], torch.Tensor], save: bool
) -> torch.Tensor:
    """The saved table if it was made for `key` (the pairs' fingerprint), else computed (and saved
    atomically by the main rank), so a resumed run reuses the numbers it started with."""
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            return saved["table"]
    table = compute()
    if save:
        buf = io.BytesIO()
        torch.save({"key": key, "table": table}, buf)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    return table


def preference_figures(
    model: nn.Module,
    pairs: list[EncodedPair],
    ref_table: torch.Tensor,
    objective: DpoObjective,
    pad_id: int,
    batch_pairs: int,
    amp,
) -> dict[str, float]:
    """Held-out figures over every pair: DPO loss, preference accuracy (chosen reward > rejected),
    reward margin, and how often the model itself gives the chosen reply the higher log-prob."""
    device = next(model.parameters()).device
    probe = DpoObjective(
        table_reference(ref_table), objective.beta, objective.loss, objective.label_smoothing
    )
    total = {"loss": 0.0, "pref_accuracy": 0.0, "reward_margin": 0.0, "logp_accuracy": 0.0}
    with torch.no_grad():
        for i in range(0, len(pairs), batch_pairs):
            batch = {k: v.to(device) for k, v in collate_pairs(pairs[i : i + batch_pairs], pad_id).items()}
            with amp():
                s = probe.scores(model, batch)
            total["loss"] += float(s.loss.sum())
            total["pref_accuracy"] += float((s.chosen_rewards > s.rejected_rewards).sum())
            total["reward_margin"] += float((s.chosen_rewards - s.rejected_rewards).sum())
            total["logp_accuracy"] += float((s.chosen_logps > s.rejected_logps).sum())
    return {k: v / max(len(pairs), 1) for k, v in total.items()}


def dpo_validator(
    pairs: list[EncodedPair], ref_table: torch.Tensor, objective: DpoObjective, pad_id: int, batch_pairs: int
):
    """The loop's held-out function (every rank runs every pair, so FSDP's collectives line up)."""
    if not pairs:
        return None

    def validate(par, amp) -> dict:
        was = par.module.training
        par.train(False)
        figures = preference_figures(par.runner, pairs, ref_table, objective, pad_id, batch_pairs, amp)
        par.train(was)
        return {
            "val_loss": figures.pop("loss"),
            "val_ppl": None,
            "val_bpb": None,
            **{f"val_{k}": v for k, v in figures.items()},
        }

    return validate
