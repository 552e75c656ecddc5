"""Token tries as packed rows: requests whose model inputs share a token prefix run that prefix once.

A request's model input s_i is lm-eval's (ctx + cont)[-(L+1):][:-1] and its scored positions are the
last `n_scored` positions of s_i. Rows are built by walking the requests sorted by s_i: in sorted
order the longest common prefix (LCP) with the previous request is the longest with any request
before it in the row, so the request branches from the node at that depth and adds len(s_i) - LCP
new nodes. It joins the current row when

  (a) the row stays within L nodes (the model's context), and
  (b) it shares its whole context with the row (every position before its scored ones but the
      last, which predicts its first token), or at least half of its own tokens.

(b) is there because attention over a packed row is dense: every position of a row costs O(row
length), so a request that would share only a couple of tokens ("Question:") makes the row longer
for everyone and saves almost nothing; it starts a new row instead. The plan depends only on the set
of requests, never on their order or the batch size.

In a row, nodes are in depth-first order; node n sits at position depth(n) and attends to its
ancestors and itself. In that order m is an ancestor-or-self of n exactly when
m <= n < m + size(subtree of m), which gives the whole mask at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class TrieRow:
    tokens: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)  # -1 for the root (depth 0)
    depth: list[int] = field(default_factory=list)
    picks: list[tuple[int, list[int]]] = field(default_factory=list)  # (request, its scored nodes)

    def __len__(self) -> int:
        return len(self.tokens)

    def is_chain(self) -> bool:
        """No branching: plain causal attention over the row."""
        return all(p == n - 1 for n, p in enumerate(self.parent))


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def plan_rows(inputs: Sequence[Sequence[int]], n_scored: Sequence[int], max_len: int) -> list[TrieRow]:
    """Pack requests (model input, number of scored positions at its end) into trie rows of at
    most `max_len` nodes; `picks` refer to indices into `inputs`."""
    order = sorted(range(len(inputs)), key=lambda i: (list(inputs[i]), i))
    rows: list[TrieRow] = []
    row: TrieRow | None = None
    prev: Sequence[int] = ()
    path: list[int] = []  # node of each depth along the previous request's input
    for i in order:
        s, k = inputs[i], n_scored[i]
        if not 1 <= k <= len(s) <= max_len:
            raise ValueError(f"bad request: {len(s)} input tokens, {k} scored, rows of {max_len}")
        lcp = _lcp(prev, s) if row is not None else 0
        shares = lcp >= len(s) - k + 1 or 2 * lcp >= len(s)
        if row is None or not shares or len(row) + len(s) - lcp > max_len:
            row, lcp = TrieRow(), 0
            rows.append(row)
        del path[lcp:]
        for d in range(lcp, len(s)):
            row.parent.append(path[-1] if path else -1)
            row.tokens.append(s[d])
            row.depth.append(d)
            path.append(len(row.tokens) - 1)
        row.picks.append((i, path[len(s) - k :]))
        prev = s
    return rows


def row_tensors(rows: Sequence[TrieRow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, positions, keep) of rows padded to the longest: (B, T), (B, T), (B, T, T) bool. A padding
    node sits at position 0 and sees only itself (no row of the mask is empty)."""
    B, T = len(rows), max(map(len, rows))
    ids = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    end = torch.arange(1, T + 1).repeat(B, 1)  # m's subtree is m .. end[m] - 1
    for r, row in enumerate(rows):
        n = len(row)
        size = [1] * n
        for m in range(n - 1, 0, -1):  # children come after their parent
            size[row.parent[m]] += size[m]
        ids[r, :n] = torch.tensor(row.tokens)
        pos[r, :n] = torch.tensor(row.depth)
        end[r, :n] = torch.arange(n) + torch.tensor(size)
    i = torch.arange(T)
    keep = (i[None, :] <= i[:, None])[None] & (i[None, :, None] < end[:, None, :])
    return ids, pos, keep
