"""Batches of token windows from memory-mapped shards: deterministic, resumable, rank-disjoint.

The shards of a split are read as one concatenated stream (np.memmap, so nothing is loaded up
front) and cut into non-overlapping windows of seq_len + 1 tokens; window i is stream tokens
[i*(T+1), (i+1)*(T+1)). A window may span a shard boundary, so the windows, and hence the
batches, do not depend on how the stream was cut into shards. The last partial window is unused.

Each epoch visits the windows in a permutation seeded by (seed, epoch). The first
world_size * (num_windows // world_size) entries are dealt round-robin to the ranks, so ranks see
disjoint windows and the same number of them; a batch that runs past the end of an epoch
continues with the next epoch. The position (epoch, windows taken) is the whole state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.data.shards import load_meta
from lmforge.errors import LmforgeError

STATE_VERSION = 1


class TokenLoader:
    """x, y = loader.next_batch(B): int64 (B, seq_len) tensors, y = x shifted left by one."""

    def __init__(
        self, shard_dir: str | Path, split: str, seq_len: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if seq_len < 1:
            raise LmforgeError(f"seq_len must be >= 1, got {seq_len}")
        if not 0 <= rank < world_size:
            raise LmforgeError(f"rank {rank} is outside world_size {world_size}")
        meta = load_meta(shard_dir)
        if split not in meta["splits"]:
            raise LmforgeError(f"{shard_dir} has no '{split}' split (has {', '.join(meta['splits'])})")
        shards = [s for s in meta["splits"][split]["shards"] if s["tokens"] > 0]
        dtype = np.dtype(meta["dtype"])
        self._maps = [np.memmap(Path(shard_dir) / s["file"], dtype=dtype, mode="r") for s in shards]
        self._starts = np.cumsum([0] + [len(m) for m in self._maps])  # stream offset of each shard
        self._files = [Path(shard_dir) / s["file"] for s in shards]
        self.vocab_size = int(meta["vocab_size"])  # every id must be below it (checked per batch)
        self.split, self.seq_len, self.seed = split, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.tokens = int(self._starts[-1])
        self.num_windows = self.tokens // (seq_len + 1)
        if self.num_windows == 0:
            raise LmforgeError(
                f"the '{split}' split in {shard_dir} has {self.tokens} tokens, fewer than one window of "
                f"seq_len + 1 = {seq_len + 1}; use a shorter seq_len or more data"
            )
        self.windows_per_rank = self.num_windows // world_size
        if self.windows_per_rank == 0:
            raise LmforgeError(
                f"the '{split}' split in {shard_dir} has {self.num_windows} windows of {seq_len + 1} tokens, "
                f"too few to give each of {world_size} ranks one"
            )
        self.epoch = 0
        self.position = 0  # windows of this rank's epoch order already served
        self._order_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.seq_len + 1
        starts = self._take(batch_size) * w  # stream offsets of the windows
        buf = np.empty((batch_size, w), dtype=self._maps[0].dtype)
        shard = np.searchsorted(self._starts, starts, side="right") - 1
        inside = starts + w <= self._starts[shard + 1]
        for k in np.unique(shard[inside]):  # one gather per shard for windows inside it
            rows = np.flatnonzero(inside & (shard == k))
            offsets = starts[rows] - self._starts[k]
            buf[rows] = self._maps[k][offsets[:, None] + np.arange(w)]
        for row in np.flatnonzero(~inside):  # the few windows that cross a shard boundary
            self._read(int(starts[row]), buf[row])
        if (
            buf.size and int(buf.max()) >= self.vocab_size
        ):  # damaged shard bytes: one clear error, not an IndexError
            self._bad_id(buf, starts)
        x = torch.from_numpy(buf[:, :-1].astype(np.int64))  # (B, T)
        y = torch.from_numpy(buf[:, 1:].astype(np.int64))  # (B, T)
        return x, y

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_windows": self.num_windows,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` left off. Its seed is adopted; seq_len, world_size and the
        window count must match (any rank's state fits every rank: all ranks move in step)."""
        for key in ("seq_len", "world_size", "num_windows"):
            if state.get(key) != getattr(self, key):
                raise LmforgeError(
                    f"loader state has {key}={state.get(key)}, but this loader has {getattr(self, key)}; "
                    "the data or the batch shape changed since the state was saved"
                )
        if not 0 <= int(state["position"]) <= self.windows_per_rank or int(state["epoch"]) < 0:
            raise LmforgeError(f"loader state has an invalid position: {state}")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order_epoch = -1

    # --- internals ---

    def _epoch_order(self) -> np.ndarray:
        """This rank's windows for the current epoch, in visiting order."""
        if self._order_epoch != self.epoch:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_windows)
            self._order = perm[: self.windows_per_rank * self.world_size][self.rank :: self.world_size]
            self._order_epoch = self.epoch
        return self._order

    def _take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            order = self._epoch_order()
            k = min(n, len(order) - self.position)
            parts.append(order[self.position : self.position + k])
            self.position += k
            n -= k
            if self.position == len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _bad_id(self, buf: np.ndarray, starts: np.ndarray) -> None:
        row, col = (int(i) for i in np.argwhere(buf >= self.vocab_size)[0])
        pos = int(starts[row]) + col
        k = int(np.searchsorted(self._starts, pos, side="right")) - 1
        raise LmforgeError(
            f"shard {self._files[k]} holds token id {int(buf[row, col])} at token {pos - self._starts[k]}, "
            f"outside the vocabulary of {self.vocab_size}: the shard is damaged; re-encode the corpus"
        )

    def _read(self, start: int, out: np.ndarray) -> None:
        """Copy stream tokens [start, start + len(out)) into out, across shard boundaries."""
        k = int(np.searchsorted(self._starts, start, side="right")) - 1
        done = 0
        while done < len(out):
            off = start + done - int(self._starts[k])
            piece = self._maps[k][off : off + len(out) - done]
            out[done : done + len(piece)] = piece
            done += len(piece)
            k += 1
