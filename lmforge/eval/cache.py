"""A result cache keyed by model fingerprint + request tokens, so a rerun is instant.

SQLite (stdlib) in the run's eval folder; like lm-eval's `--use_cache` (sqlitedict keyed by a
hash of the request) it doubles as resume-after-crash: results are committed every few hundred
requests, and a rerun only computes what is missing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class ResultCache:
    def __init__(self, path: str | Path, commit_every: int = 512):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS ll (key TEXT PRIMARY KEY, ll REAL, greedy INTEGER)")
        self.pending = 0
        self.commit_every = commit_every
        self.hits = 0

    def get(self, key: str) -> tuple[float, bool] | None:
        row = self.db.execute("SELECT ll, greedy FROM ll WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return float(row[0]), bool(row[1])

    def put(self, key: str, value: tuple[float, bool]) -> None:
        self.db.execute("INSERT OR REPLACE INTO ll VALUES (?, ?, ?)", (key, float(value[0]), int(value[1])))
        self.pending += 1
        if self.pending >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        self.db.commit()
        self.pending = 0

    def close(self) -> None:
        self.commit()
        self.db.close()

    def __enter__(self) -> ResultCache:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()
