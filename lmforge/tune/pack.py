"""Batches for supervised fine-tuning: packed rows or padded rows, and the forward pass that keeps
packed examples apart.

An example is a conversation's ids and loss mask (template.encode_chat). It trains as
inputs ids[:-1] against labels ids[1:], where a label is -100 (ignored) unless the mask marks it
as an assistant token: the loss covers only what the assistant says.

- pad: one example per row, right-padded to the longest row of the batch with <|pad|> and
  label -100. Causal attention never looks right, so padding changes nothing for real tokens.
- pack: several examples share a row (first-fit, in the given order), filling rows up to seq_len
  positions, with far less padding for short examples. Each token carries its example's segment
  id and its position *within* the example: `segment_forward` lets a token attend only to
  earlier tokens of its own segment (a block-diagonal causal mask) and restarts positions at 0,
  so a packed example gets exactly the logits it would get alone (tested). This is the "packing
  without cross-contamination" of Krell et al. 2021 and the per-document masking of Llama 3
  (Dubey et al. 2024, §3.2).

`segment_forward` is the model's own forward with `segment_ids` and `position_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError

IGNORE = -100


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]  # per id: loss on it as a label

    @property
    def positions(self) -> int:  # training positions: inputs ids[:-1], labels ids[1:]
        return len(self.ids) - 1

    def labels(self) -> list[int]:
        return [t if m else IGNORE for t, m in zip(self.ids[1:], self.mask[1:])]


def fit_examples(examples: list[Example], seq_len: int, rule: str) -> tuple[list[Example], int, int]:
    """Apply the overlong rule: "truncate" cuts an example to seq_len training positions (its start
    is kept), "drop" removes it; either way an example left with no assistant label is removed.
    Returns (kept, truncated, dropped)."""
    kept, truncated, dropped = [], 0, 0
    for ex in examples:
        if ex.positions > seq_len:
            if rule == "drop":
                dropped += 1
                continue
            ex = Example(ex.ids[: seq_len + 1], ex.mask[: seq_len + 1])
            truncated += 1
        if not any(ex.mask[1:]):
            dropped += 1
            continue
        kept.append(ex)
    return kept, truncated, dropped


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE where no loss
    segments: torch.Tensor | None = None  # (B, T) example index within the row, -1 for padding (pack only)
    positions: torch.Tensor | None = None  # (B, T) position within the example (pack only)

    @property
    def label_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(move(self.input_ids), move(self.labels), move(self.segments), move(self.positions))


def pack_rows(examples: list[Example], seq_len: int) -> list[list[Example]]:
    """First-fit: each example goes into the first row with room for it, else a new row."""
    rows: list[list[Example]] = []
    room: list[int] = []
    for ex in examples:
        if ex.positions > seq_len:
            raise LmforgeError(f"an example of {ex.positions} positions does not fit seq_len={seq_len}")
        for i, r in enumerate(room):
            if ex.positions <= r:
                rows[i].append(ex)
                room[i] -= ex.positions
                break
        else:
            rows.append([ex])
            room.append(seq_len - ex.positions)
    return rows


def collate_packed(rows: list[list[Example]], seq_len: int, pad_id: int) -> Batch:
    B = len(rows)
    ids = torch.full((B, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((B, seq_len), IGNORE, dtype=torch.long)
    segs = torch.full((B, seq_len), -1, dtype=torch.long)
    pos = torch.zeros((B, seq_len), dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for s, ex in enumerate(row):
            n = ex.positions
            ids[b, at : at + n] = torch.tensor(ex.ids[:-1])
            labels[b, at : at + n] = torch.tensor(ex.labels())
            segs[b, at : at + n] = s
            pos[b, at : at + n] = torch.arange(n)
            at += n
        pos[b, at:] = torch.arange(seq_len - at)  # padding: harmless positions, never attended by real tokens
    return Batch(ids, labels, segs, pos)


def collate_padded(examples: list[Example], pad_id: int) -> Batch:
    T = max(ex.positions for ex in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for b, ex in enumerate(examples):
        ids[b, : ex.positions] = torch.tensor(ex.ids[:-1])
        labels[b, : ex.positions] = torch.tensor(ex.labels())
    return Batch(ids, labels)


def make_batches(
    examples: list[Example],
    batching: str,
    seq_len: int,
    batch_size: int,
    pad_id: int,
) -> list[Batch]:
    """All batches of one pass over `examples` (in their order)."""
    if batching == "pack":
        rows = pack_rows(examples, seq_len)
        return [
            collate_packed(rows[i : i + batch_size], seq_len, pad_id) for i in range(0, len(rows), batch_size)
        ]
    return [collate_padded(examples[i : i + batch_size], pad_id) for i in range(0, len(examples), batch_size)]


def segment_forward(
    model: torch.nn.Module, ids: torch.Tensor, segments: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Logits (B, T, V) of a decoder where token t attends to token s only if s <= t and both lie in
    the same segment, and where positions restart in every segment (the model's packed forward)."""
    if model.cfg.kind != "decoder":
        raise LmforgeError(
            f"packed fine-tuning needs a decoder model, this one is {model.cfg.kind}; use batching=pad"
        )
    return model(ids, segment_ids=segments, position_ids=positions)[0]


def batch_loss(model: torch.nn.Module, batch: Batch, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the batch's assistant labels (mean, or sum for exact validation)."""
    if batch.segments is not None:
        logits = segment_forward(model, batch.input_ids, batch.segments, batch.positions)
    else:
        logits, _ = model(batch.input_ids)
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        batch.labels.reshape(-1),
        ignore_index=IGNORE,
        reduction=reduction,
    )
