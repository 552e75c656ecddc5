"""Human evaluation: pairwise comparisons of two or more models, rated in the browser.

`lmforge eval human --models runA runB --prompts prompts.jsonl --output human.sqlite` generates
every model's answer to every prompt (the chat template, as served) and writes the comparisons to
a SQLite file; `lmforge serve --human-eval human.sqlite` shows them at /human. A rater sees the
prompt, the reference if there is one, and two answers labelled only A and B, their order drawn at
random per showing. Showing a comparison writes nothing: which model is on which side travels in
the task token itself (comparison, left model, rater), signed with HMAC-SHA256 under a secret kept
in the file's `meta` table, so reading never grows the database and a forged or altered token is
refused. Each vote is stored once. SQLite in WAL mode with `BEGIN IMMEDIATE` transactions
serialises concurrent raters' writes, so no vote is lost. Results: /human/results (ratings.py).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import random
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from lmforge.errors import LmforgeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, key TEXT, prompt TEXT NOT NULL, reference TEXT,
                                    system TEXT);
CREATE TABLE IF NOT EXISTS answers (prompt_id INTEGER NOT NULL REFERENCES prompts(id), model TEXT NOT NULL,
                                    text TEXT NOT NULL, tokens INTEGER, finish_reason TEXT,
                                    PRIMARY KEY (prompt_id, model));
CREATE TABLE IF NOT EXISTS comparisons (id INTEGER PRIMARY KEY,
                                        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
                                        model_a TEXT NOT NULL, model_b TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL UNIQUE,
                                  comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
                                  rater TEXT NOT NULL,
                                  winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad')),
                                  left_model TEXT NOT NULL, score_a INTEGER CHECK (score_a BETWEEN 1 AND 5),
                                  score_b INTEGER CHECK (score_b BETWEEN 1 AND 5), created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS votes_by_rater ON votes (rater, comparison_id);
CREATE INDEX IF NOT EXISTS votes_by_comparison ON votes (comparison_id);
"""
CHOICES = ("left", "right", "tie", "both_bad")
MAX_RATER_CHARS = 200  # a rater name travels in every task token
PROMPT_KEYS = ("prompt", "instruction", "question")  # plain, Alpaca/Dolly, GSM8K-style records
REFERENCE_KEYS = ("reference", "output", "answer", "response")


class VoteError(LmforgeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HumanEvalStore:
    """The comparisons file; every call opens its own connection, so threads and processes share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LmforgeError(
                f"human evaluation file not found: {self.path} (make one with `lmforge eval human`)"
            )
        with self.connect() as db:
            try:
                self.models = json.loads(
                    db.execute("SELECT value FROM meta WHERE key = 'models'").fetchone()[0]
                )
            except (sqlite3.DatabaseError, TypeError) as e:
                raise LmforgeError(f"{self.path} is not a human evaluation file: {e}") from None
            self.secret = self._secret(db)

    @staticmethod
    def _secret(db: sqlite3.Connection) -> bytes:
        """The key that signs task tokens: from `meta`, written once (files older than signed
        tokens get it on first use); a read-only file gets one for this process only."""
        row = db.execute("SELECT value FROM meta WHERE key = 'task_secret'").fetchone()
        if row is None:
            try:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('task_secret', ?)", (secrets.token_hex(32),))
            except sqlite3.OperationalError:  # read-only: no vote can be stored either
                return secrets.token_bytes(32)
            row = db.execute("SELECT value FROM meta WHERE key = 'task_secret'").fetchone()
        return bytes.fromhex(row[0])

    @contextmanager
    def connect(self):
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # autocommit; explicit BEGINs
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 60000")
        try:
            yield db
        finally:
            db.close()

    # ---- task tokens: base64url(JSON [comparison id, left model, rater, nonce]) "." HMAC

    def _sign(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()[:32]

    def make_task(self, comparison_id: int, left_model: str, rater: str) -> str:
        data = json.dumps([comparison_id, left_model, rater, secrets.token_hex(4)], separators=(",", ":"))
        payload = base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def read_task(self, task: str) -> tuple[int, str, str] | None:
        """(comparison id, left model, rater) of a task token this file signed; None otherwise."""
        payload, dot, sig = task.rpartition(".")
        if not dot or not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):
            return None
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(data[0]), str(data[1]), str(data[2])

    def next_task(self, rater: str) -> dict | None:
        """A comparison this rater has not voted on (fewest votes first), sides in random order.
        Reads only: the task token carries the sides."""
        if len(rater) > MAX_RATER_CHARS:
            raise VoteError(400, f"a rater name has at most {MAX_RATER_CHARS} characters, got {len(rater)}")
        with self.connect() as db:
            row = db.execute(
                "SELECT c.id, c.model_a, c.model_b, p.prompt, p.reference, p.system, "
                "(SELECT COUNT(*) FROM votes v WHERE v.comparison_id = c.id) AS n "
                "FROM comparisons c JOIN prompts p ON p.id = c.prompt_id "
                "WHERE c.id NOT IN (SELECT comparison_id FROM votes WHERE rater = ?) "
                "ORDER BY n, RANDOM() LIMIT 1",
                (rater,),
            ).fetchone()
            if row is None:
                return None
            answers = {
                r["model"]: r["text"]
                for r in db.execute(
                    "SELECT model, text FROM answers WHERE prompt_id = (SELECT prompt_id FROM comparisons "
                    "WHERE id = ?)",
                    (row["id"],),
                )
            }
        left, right = random.sample([row["model_a"], row["model_b"]], 2)
        return {
            "task": self.make_task(row["id"], left, rater),
            "prompt": row["prompt"],
            "reference": row["reference"],
            "system": row["system"],
            "a": answers[left],
            "b": answers[right],
        }

    def vote(
        self, task: str, choice: str, score_left: int | None = None, score_right: int | None = None
    ) -> None:
        """Record a vote on a task ('left' = answer A as shown, 'right' = B, 'tie', 'both_bad')."""
        if choice not in CHOICES:
            raise VoteError(400, f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        for s in (score_left, score_right):
            if s is not None and (not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 5):
                raise VoteError(400, f"scores are integers from 1 to 5, got {s!r}")
        signed = self.read_task(task)
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if signed is None:
                    signed = self._legacy_task(db, task)
                if signed is None:
                    raise VoteError(404, "unknown task; load a new comparison")
                comparison, left, rater = signed
                row = db.execute(
                    "SELECT model_a, model_b FROM comparisons WHERE id = ?", (comparison,)
                ).fetchone()
                if row is None or left not in (row["model_a"], row["model_b"]):
                    raise VoteError(404, "unknown task; load a new comparison")
                if db.execute(
                    "SELECT 1 FROM votes WHERE task_id = ? OR (rater = ? AND comparison_id = ?)",
                    (task, rater, comparison),
                ).fetchone():
                    raise VoteError(409, "this comparison was already voted on")  # one vote per rater
                left_is_a = left == row["model_a"]
                winner = {
                    "tie": "tie",
                    "both_bad": "both_bad",
                    "left": "a" if left_is_a else "b",
                    "right": "b" if left_is_a else "a",
                }[choice]
                score_a, score_b = (score_left, score_right) if left_is_a else (score_right, score_left)
                db.execute(
                    "INSERT INTO votes (task_id, comparison_id, rater, winner, left_model, score_a, "
                    "score_b, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (task, comparison, rater, winner, left, score_a, score_b, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _legacy_task(db: sqlite3.Connection, task: str) -> tuple[int, str, str] | None:
        """A task handed out by a server before signed tokens (a `tasks` row), if the file has one."""
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchone():
            return None
        row = db.execute(
            "SELECT comparison_id, left_model, rater FROM tasks WHERE id = ?", (task,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def votes(self) -> list[dict]:
        with self.connect() as db:
            return [
                dict(r)
                for r in db.execute(
                    "SELECT c.model_a, c.model_b, v.winner, v.score_a, v.score_b, v.rater, v.left_model "
                    "FROM votes v JOIN comparisons c ON c.id = v.comparison_id ORDER BY v.id"
                )
            ]

    def tally(self, rater: str | None = None) -> dict:
        with self.connect() as db:
            total = db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
            comparisons = db.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0]
            by_choice = {r[0]: r[1] for r in db.execute("SELECT winner, COUNT(*) FROM votes GROUP BY winner")}
            mine = db.execute("SELECT COUNT(*) FROM votes WHERE rater = ?", (rater or "",)).fetchone()[0]
        return {
            "votes": total,
            "comparisons": comparisons,
            "yours": mine,
            "ties": by_choice.get("tie", 0),
            "both_bad": by_choice.get("both_bad", 0),
        }

    def results(self, n_boot: int = 1000) -> dict:
        from lmforge.serve.ratings import summarize

        return {**summarize(self.votes(), self.models, n_boot=n_boot), **self.tally()}


# ---- preparing the comparisons


def read_prompts(path: str | Path) -> list[dict]:
    """JSONL records with a prompt (prompt / instruction [+ input] / question) and an optional
    reference (reference / output / answer / response), id and system; bad lines are fatal, by number."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"prompts file not found: {path}")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise LmforgeError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
        key = next((k for k in PROMPT_KEYS if k in rec), None)
        prompt = rec.get(key) if key else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise LmforgeError(f"{path}:{n}: needs a non-empty string field {' / '.join(PROMPT_KEYS)}")
        if isinstance(rec.get("input"), str) and rec["input"].strip():
            prompt = f"{prompt}\n\n{rec['input']}"
        ref = next((rec[k] for k in REFERENCE_KEYS if k in rec), None)
        if ref is not None and not isinstance(ref, str):
            raise LmforgeError(f"{path}:{n}: the reference must be a string, got {type(ref).__name__}")
        system = rec.get("system")
        if system is not None and not isinstance(system, str):
            raise LmforgeError(f"{path}:{n}: system must be a string")
        out.append(
            {
                "key": str(rec.get("id", n)),
                "prompt": prompt,
                "reference": ref or None,
                "system": system or None,
            }
        )
    if not out:
        raise LmforgeError(f"{path} has no prompts")
    return out


def prepare(
    model_specs: list[str],
    prompts_path: str | Path,
    output: str | Path,
    sample,
    system: str | None = None,
    log=print,
) -> Path:
    """Answer every prompt with every model and write the comparisons file (all pairs of models
    per prompt). The file appears only when complete; an existing file is never overwritten."""
    from lmforge.serve.engine import ServedModel, parse_run_spec

    output = Path(output)
    if output.exists():
        raise LmforgeError(f"{output} already exists; choose another --output (votes in it would be lost)")
    if len(model_specs) < 2:
        raise LmforgeError("human evaluation compares at least two models: --models runA runB")
    names = [parse_run_spec(s)[0] for s in model_specs]
    if len(set(names)) != len(names):
        raise LmforgeError(f"models need distinct names, got {names}; name them NAME=PATH")
    prompts = read_prompts(prompts_path)
    sample.validate()
    answers: dict[str, list] = {}
    for spec in model_specs:
        served = ServedModel.load(spec)
        answers[served.name] = []
        for k, p in enumerate(prompts):
            messages = [{"role": "system", "content": p["system"] or system}] if p["system"] or system else []
            ids = served.chat_ids(messages + [{"role": "user", "content": p["prompt"]}])
            if len(ids) >= served.block_size:
                raise LmforgeError(
                    f"prompt {p['key']} is {len(ids)} tokens in the chat template; model "
                    f"{served.name!r} has a context of {served.block_size}"
                )
            seed = None if sample.seed is None else sample.seed + k  # same seed per prompt for every model
            cfg = dataclasses.replace(sample, seed=seed)
            answers[served.name].append(served.complete(ids, cfg, served.chat_stop_ids()))
        log(f"{served.name}: answered {len(prompts)} prompts")
        del served

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA)
        meta = {
            "models": json.dumps(names),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "task_secret": secrets.token_hex(32),
            "prompts_file": str(prompts_path),
            "sample": json.dumps(sample.__dict__),
            "runs": json.dumps(dict(zip(names, model_specs))),
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        for k, p in enumerate(prompts):
            cur = db.execute(
                "INSERT INTO prompts (key, prompt, reference, system) VALUES (?, ?, ?, ?)",
                (p["key"], p["prompt"], p["reference"], p["system"] or system),
            )
            pid = cur.lastrowid
            for name in names:
                r = answers[name][k]
                db.execute(
                    "INSERT INTO answers VALUES (?, ?, ?, ?, ?)",
                    (pid, name, r.text, r.completion_tokens, r.finish_reason),
                )
            for a, b in itertools.combinations(names, 2):
                db.execute(
                    "INSERT INTO comparisons (prompt_id, model_a, model_b) VALUES (?, ?, ?)", (pid, a, b)
                )
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    tmp.rename(output)
    pairs = len(names) * (len(names) - 1) // 2
    log(f"{len(prompts) * pairs} comparisons ({len(prompts)} prompts x {pairs} model pairs) -> {output}")
    log(f"rate them: lmforge serve --human-eval {output}   then open /human")
    return output


# ---- `lmforge eval human`


def add_human_parser(sub) -> None:
    """Add `human` to `lmforge eval`'s actions."""
    h = sub.add_parser(
        "human", help="prepare pairwise human evaluation of two or more models (rated in the browser)"
    )
    h.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="RUN",
        help="run directories (or NAME=PATH) to compare, at least two",
    )
    h.add_argument(
        "--prompts",
        required=True,
        help="JSONL with prompt (or instruction/question) and optional reference, system, id",
    )
    h.add_argument(
        "--output", default="human_eval.sqlite", help="comparisons file to create (default %(default)s)"
    )
    h.add_argument("--system", default=None, help="system prompt for every prompt without its own")
    h.add_argument("--max-tokens", type=int, default=256, help="longest answer (default %(default)s)")
    h.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature (default %(default)s)"
    )
    h.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default %(default)s)")
    h.add_argument(
        "--sample-seed", type=int, default=1234, help="seed; prompt k uses seed + k for every model"
    )


def run_human(args) -> int:
    from lmforge.serve.config import SampleConfig

    sample = SampleConfig(
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=None,
        top_p=args.top_p,
        seed=args.sample_seed,
    )
    prepare(
        args.models,
        args.prompts,
        args.output,
        sample,
        system=args.system,
        log=lambda m: print(f"[lmforge] {m}", flush=True),
    )
    return 0
