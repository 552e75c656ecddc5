"""The key/value cache for incremental decoding.

Each decoder layer's keys and values for positions [0, length) live in buffers preallocated to
`max_len`, so a decoding step writes T new positions and attends over a view, never re-allocating.
For an encoder-decoder the cross-attention keys/values depend only on the source, so they are
computed once, on the first call, and kept in `cross_kv` (Vaswani et al. 2017, sec. 3.2.3).

A batch of prompts of different lengths is left-padded to a common length, so every row's next
token lands in the same slot: `pad` holds each row's padding, and a row's position is its slot
minus its padding (the model hides the padding slots from attention).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.errors import LmforgeError


class KVCache:
    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        pad: Sequence[int] | None = None,
    ) -> None:
        if max_len <= 0:
            raise LmforgeError(f"KV cache max_len must be positive, got {max_len}")
        if pad is not None and (len(pad) != batch_size or min(pad) < 0):
            raise LmforgeError(
                f"KV cache pad needs one length >= 0 for each of the {batch_size} rows, got {list(pad)}"
            )
        shape = (batch_size, n_kv_head, max_len, head_dim)  # (B, H_kv, max_len, D)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0  # positions already cached; the next chunk starts here
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer, from the encoder
        # (B,) left padding per row; None when no row is padded (positions are then the slots).
        self.pad = torch.tensor(pad, device=device) if pad is not None and any(pad) else None

    def check(self, batch_size: int, new_tokens: int) -> None:
        """Raise before any layer writes, so a failed call leaves the cache unchanged."""
        if batch_size != self.batch_size:
            raise LmforgeError(f"KV cache was made for batch size {self.batch_size}, got {batch_size}")
        if self.length + new_tokens > self.max_len:
            raise LmforgeError(
                f"KV cache holds {self.max_len} positions; {self.length} are used and "
                f"{new_tokens} more do not fit"
            )

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this chunk's k, v (B, H_kv, T, D) at [length, length+T); return all cached so far."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, H_kv, length+T, D)

    def positions(self, new_tokens: int) -> torch.Tensor | None:
        """(B, T) positions of the next T tokens of each row: slot minus padding (0 in the padding,
        which no query sees). None without padding."""
        if self.pad is None:
            return None
        slots = torch.arange(self.length, self.length + new_tokens, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp_min(0)

    def select_rows(self, rows: torch.Tensor, max_len: int | None = None) -> KVCache:
        """A new cache whose row i continues row `rows[i]` of this one (rows may repeat): the same
        filled positions, padding and cross-attention keys/values, room for `max_len` positions
        (default this cache's). This cache is left as it was."""
        max_len = self.max_len if max_len is None else max_len
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.k[0].device)
        if (
            rows.dim() != 1
            or not rows.numel()
            or not 0 <= int(rows.min()) <= int(rows.max()) < self.batch_size
        ):
            raise LmforgeError(
                f"select_rows needs a non-empty 1-d tensor of row indices below {self.batch_size}, "
                f"got {rows.tolist()}"
            )
        if max_len < self.length:
            raise LmforgeError(
                f"select_rows: max_len={max_len} is shorter than the {self.length} cached positions"
            )
        k0 = self.k[0]
        pad = self.pad[rows].tolist() if self.pad is not None else None
        new = KVCache(
            len(self.k),
            rows.numel(),
            k0.shape[1],
            max_len,
            k0.shape[3],
            device=k0.device,
            dtype=k0.dtype,
            pad=pad,
        )
        for layer, (k, v) in enumerate(zip(self.k, self.v)):
            new.k[layer][:, :, : self.length] = k[rows, :, : self.length]
            new.v[layer][:, :, : self.length] = v[rows, :, : self.length]
        new.length = self.length
        if self.cross_kv is not None:
            new.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]
        return new

    def advance(self, new_tokens: int) -> None:
        self.length += new_tokens

    def reset(self) -> None:
        """Start a new sequence (and, for encoder-decoder, a new source); keeps the padding."""
        self.length = 0
        self.cross_kv = None
