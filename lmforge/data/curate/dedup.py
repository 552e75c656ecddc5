"""The global de-duplication step, by partition: no process ever holds all documents.

Phase 1 wrote, per shard, an exact key and `bands` LSH keys per surviving document. Here:
1. one job per (band, hash-range partition) and per exact partition reads only its slice of
   every shard's keys, sorts it, and emits an edge from each document to the first (lowest id)
   document with the same key: work linear in the slice (datatrove's stage 2, but by sort);
2. `cluster` runs union-find over the edges only (documents that have a candidate twin), with
   the smallest global id as each cluster's root, so the document kept is the same whatever the
   worker count; optionally an edge is dropped when its signature agreement is below
   `verify_threshold` (removes LSH false positives);
3. the removed local indices are written per shard for phase 3.
A global id is (shard index << 32) | position of the document among the shard's survivors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXACT, NEAR = 1, 2  # reason codes in remove-*.npz
REASONS = {EXACT: "exact_dedup", NEAR: "minhash_dedup"}


def _slice(work: Path, tasks: list[int], kind: str, column: int | None, part: int, parts: int):
    keys, gids = [], []
    for t in tasks:
        f = work / "a" / f"{t:05d}.{kind}.npy"
        arr = np.load(f, mmap_mode="r")
        if arr.shape[0] == 0:
            continue
        k = np.asarray(arr[:, column] if column is not None else arr)
        sel = np.flatnonzero(k % np.uint64(parts) == np.uint64(part))
        keys.append(k[sel])
        gids.append((np.uint64(t) << np.uint64(32)) | sel.astype(np.uint64))
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(keys), np.concatenate(gids)


def bucket_job(work: Path, tasks: list[int], kind: str, column: int | None, part: int, parts: int) -> Path:
    """Edges (gid, first gid with the same key) of one partition; written to work/b/."""
    name = f"edges-{kind}-{-1 if column is None else column}-{part}.npy"
    out = work / "b" / name
    if out.exists():
        return out
    keys, gids = _slice(work, tasks, kind, column, part, parts)
    order = np.lexsort((gids, keys))
    k, g = keys[order], gids[order]
    if len(k):
        start = np.concatenate(([True], k[1:] != k[:-1]))
        first = g[np.maximum.accumulate(np.where(start, np.arange(len(k)), 0))]
        dup = ~start
        edges = np.stack([g[dup], first[dup]], axis=1)
    else:
        edges = np.zeros((0, 2), np.uint64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, edges)
    tmp.replace(out)
    return out


def _union_find(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node gids, root gid of each node); roots are the smallest gid of each component."""
    nodes = np.sort(edges.ravel())
    nodes = nodes[np.concatenate(([True], nodes[1:] != nodes[:-1]))] if len(nodes) else nodes
    a = np.searchsorted(nodes, edges[:, 0]).tolist()
    b = np.searchsorted(nodes, edges[:, 1]).tolist()
    parent = list(range(len(nodes)))  # node index order = gid order, so min index = min gid

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for x, y in zip(a, b):
        rx, ry = find(x), find(y)
        if rx != ry:
            if rx < ry:
                parent[ry] = rx
            else:
                parent[rx] = ry
    roots = np.array([find(i) for i in range(len(nodes))], dtype=np.int64)
    return nodes, nodes[roots] if len(nodes) else nodes


def _verify(edges: np.ndarray, work: Path, threshold: float) -> np.ndarray:
    """Keep edges whose MinHash signatures agree on at least `threshold` of their values."""
    if len(edges) == 0:
        return edges
    sigs: dict[int, np.ndarray] = {}

    def rows(g: np.ndarray) -> np.ndarray:
        t = (g >> np.uint64(32)).astype(np.int64)
        i = (g & np.uint64(0xFFFFFFFF)).astype(np.int64)
        out = None
        for task in np.unique(t).tolist():
            if task not in sigs:
                sigs[task] = np.load(work / "a" / f"{task:05d}.sig.npy", mmap_mode="r")
            sel = t == task
            part = np.asarray(sigs[task][i[sel]])
            if out is None:
                out = np.empty((len(g), part.shape[1]), dtype=part.dtype)
            out[sel] = part
        return out

    sim = (rows(edges[:, 0]) == rows(edges[:, 1])).mean(axis=1)
    return edges[sim >= threshold]


def cluster(
    work: Path, edge_files: list[Path], exact_files: list[Path], n_tasks: int, verify_threshold: float
) -> dict[str, int]:
    """Write work/b/remove-NNNNN.npz (local index, reason code) for every shard; return counts."""
    load = lambda files: np.concatenate([np.load(f) for f in files]) if files else np.zeros((0, 2), np.uint64)
    exact_edges, near_edges = load(exact_files), load(edge_files)
    exact_removed = np.unique(exact_edges[:, 0]) if len(exact_edges) else np.zeros(0, np.uint64)
    if len(near_edges):
        near_edges = np.unique(near_edges, axis=0)
    candidate_pairs = len(near_edges)
    if verify_threshold > 0:
        near_edges = _verify(near_edges, work, verify_threshold)
    nodes, roots = _union_find(near_edges) if len(near_edges) else (np.zeros(0, np.uint64),) * 2
    near_removed = nodes[nodes != roots]
    near_removed = near_removed[~np.isin(near_removed, exact_removed)]
    gids = np.concatenate([exact_removed, near_removed]).astype(np.uint64)
    codes = np.concatenate([np.full(len(exact_removed), EXACT), np.full(len(near_removed), NEAR)]).astype(
        np.uint8
    )
    task_of = (gids >> np.uint64(32)).astype(np.int64)
    local = (gids & np.uint64(0xFFFFFFFF)).astype(np.int64)
    for t in range(n_tasks):
        sel = task_of == t
        tmp = work / "b" / f"remove-{t:05d}.tmp.npz"
        np.savez(tmp, index=local[sel], code=codes[sel])
        tmp.replace(work / "b" / f"remove-{t:05d}.npz")
    return {
        "exact_removed": len(exact_removed),
        "near_removed": len(near_removed),
        "candidate_pairs": int(candidate_pairs),
        "verified_pairs": len(near_edges),
        "clusters": len(np.unique(roots)) if len(roots) else 0,
    }
