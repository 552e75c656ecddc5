"""`lmforge human export`: the votes of a human-evaluation file as preference pairs for DPO;
`lmforge human answers`: the answers the raters saw, per model, for `lmforge eval judge`.

    lmforge human export --db human_eval.sqlite --out prefs.jsonl [--keep-ties] [--force]
    lmforge human answers --db human_eval.sqlite --out answers/   # answers/<model>.jsonl

One JSON line per vote, in TRL's conversational preference form (lmforge/tune/prefs.py reads it;
so does TRL's DPOTrainer, which ignores the extra fields):

    {"prompt": [{"role": "system", ...}?, {"role": "user", "content": ...}],
     "chosen": [{"role": "assistant", "content": <the preferred answer>}],
     "rejected": [{"role": "assistant", "content": <the other answer>}],
     "preference": "chosen", "vote_id": 7, "comparison_id": 3, "prompt_key": "p1", "rater": "ann",
     "models": {"chosen": "runB", "rejected": "runA"}, "rating_chosen": 4?, "rating_rejected": 2?}

Votes in order of their id. A tie or a "both bad" vote states no preference, so it is left out,
unless --keep-ties: then it is written with "preference": "tie" or "both_bad" (chosen = model a's
answer) and readers that need a strict preference skip it, counting it. A vote whose two answers
are the same text, or one of them empty, cannot teach a preference either and is always left out.
The file is read without writing to it (read-only SQLite), and the output appears whole or not at
all (lmforge/atomic.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.atomic import write_text_atomic
from lmforge.errors import LmforgeError

TABLES = ("meta", "prompts", "answers", "comparisons", "votes")
TIES = ("tie", "both_bad")

VOTES_SQL = """
SELECT v.id AS vote_id, v.comparison_id, v.rater, v.winner, v.score_a, v.score_b,
       c.model_a, c.model_b, p.key AS prompt_key, p.prompt, p.system,
       aa.text AS answer_a, ab.text AS answer_b
FROM votes v
JOIN comparisons c ON c.id = v.comparison_id
JOIN prompts p ON p.id = c.prompt_id
LEFT JOIN answers aa ON aa.prompt_id = c.prompt_id AND aa.model = c.model_a
LEFT JOIN answers ab ON ab.prompt_id = c.prompt_id AND ab.model = c.model_b
ORDER BY v.id
"""


@dataclass
class Export:
    records: list[dict] = field(default_factory=list)
    votes: int = 0
    excluded: Counter = field(default_factory=Counter)  # why -> votes left out
    kept_ties: Counter = field(default_factory=Counter)  # tie / both_bad -> votes written anyway

    def summary(self, out: Path | str) -> list[str]:
        lines = [f"wrote {len(self.records)} preference records from {self.votes} votes -> {out}"]
        if self.kept_ties:
            kept = ", ".join(f"{n} {k}" for k, n in sorted(self.kept_ties.items()))
            lines.append(
                f"kept {kept} with a 'preference' field (DPO skips them: it needs a strict preference)"
            )
        for why, n in sorted(self.excluded.items()):
            hint = " (--keep-ties keeps them)" if why in TIES else ""
            lines.append(f"excluded {n} {why} vote{'s' if n != 1 else ''}{hint}")
        return lines


def _connect(db: Path) -> sqlite3.Connection:
    """The file, read-only: exporting never changes the votes (nor creates a missing file)."""
    if not db.is_file():
        raise LmforgeError(f"human evaluation file not found: {db} (make one with `lmforge eval human`)")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise LmforgeError(f"{db} is not a human evaluation file: {e}") from None
    missing = [t for t in TABLES if t not in names]
    if missing:
        con.close()
        raise LmforgeError(
            f"{db} is not a human evaluation file (no {', '.join(missing)} table"
            f"{'s' if len(missing) > 1 else ''}; make one with `lmforge eval human`)"
        )
    return con


def export_votes(db: str | Path, keep_ties: bool = False) -> Export:
    """The preference records of every vote in `db` (see the module docstring)."""
    con = _connect(Path(db))
    try:
        rows = [dict(r) for r in con.execute(VOTES_SQL)]
    except sqlite3.DatabaseError as e:
        raise LmforgeError(f"cannot read the votes of {db}: {e}") from None
    finally:
        con.close()
    out = Export(votes=len(rows))
    for r in rows:
        a, b = r["answer_a"], r["answer_b"]
        if a is None or b is None:
            out.excluded["missing answer"] += 1
            continue
        if not a.strip() or not b.strip():
            out.excluded["empty answer"] += 1
            continue
        if a.strip() == b.strip():
            out.excluded["identical answers"] += 1
            continue
        tie = r["winner"] in TIES
        if tie and not keep_ties:
            out.excluded[r["winner"]] += 1
            continue
        if tie:
            out.kept_ties[r["winner"]] += 1
        sides = [(r["model_a"], a, r["score_a"]), (r["model_b"], b, r["score_b"])]
        if r["winner"] == "b":  # a tie keeps a as "chosen"; its preference field says tie
            sides.reverse()
        (cm, ca, cs), (rm, ra, rs) = sides
        prompt = ([{"role": "system", "content": r["system"]}] if r["system"] else []) + [
            {"role": "user", "content": r["prompt"]}
        ]
        rec = {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": ca}],
            "rejected": [{"role": "assistant", "content": ra}],
            "preference": r["winner"] if tie else "chosen",
            "vote_id": r["vote_id"],
            "comparison_id": r["comparison_id"],
            "prompt_key": r["prompt_key"],
            "rater": r["rater"],
            "models": {"chosen": cm, "rejected": rm},
        }
        if cs is not None:
            rec["rating_chosen"] = cs
        if rs is not None:
            rec["rating_rejected"] = rs
        out.records.append(rec)
    if not out.votes:
        raise LmforgeError(f"{db} holds no votes yet; rate some at /human (lmforge serve --human-eval {db})")
    return out


def write_export(db: str | Path, out: str | Path, keep_ties: bool = False, force: bool = False) -> Export:
    out = Path(out)
    if out.exists() and not force:
        raise LmforgeError(f"{out} already exists; choose another --out or pass --force to replace it")
    if out.is_dir():
        raise LmforgeError(f"{out} is a directory; --out names a .jsonl file")
    result = export_votes(db, keep_ties=keep_ties)
    if not result.records:
        why = ", ".join(f"{n} {k}" for k, n in sorted(result.excluded.items()))
        raise LmforgeError(
            f"none of the {result.votes} votes in {db} states a preference ({why}); nothing written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records))
    return result


def write_answers(db: str | Path, out: str | Path) -> dict[str, Path]:
    """<out>/<model>.jsonl of {"question", "answer", "prompt_key"} per prompt, prompts in the same
    order for every model: `lmforge eval judge --answers A --answers-b B` compares them pairwise."""
    con = _connect(Path(db))
    try:
        models = json.loads(con.execute("SELECT value FROM meta WHERE key = 'models'").fetchone()[0])
        rows = con.execute(
            "SELECT p.id, p.key, p.prompt, a.model, a.text FROM prompts p "
            "JOIN answers a ON a.prompt_id = p.id ORDER BY p.id"
        ).fetchall()
    except (sqlite3.DatabaseError, TypeError, ValueError) as e:
        raise LmforgeError(f"cannot read the answers of {db}: {e}") from None
    finally:
        con.close()
    out = Path(out)
    files = {m: out / f"{m}.jsonl" for m in models}
    taken = [str(f) for f in files.values() if f.exists()]
    if taken:
        raise LmforgeError(
            f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for m, path in files.items():
        lines = [
            json.dumps(
                {"question": r["prompt"], "answer": r["text"], "prompt_key": r["key"]}, ensure_ascii=False
            )
            for r in rows
            if r["model"] == m
        ]
        write_text_atomic(path, "".join(x + "\n" for x in lines))
    return files


# ---- `lmforge human`


def add_parser(sub) -> None:
    h = sub.add_parser("human", help="human-evaluation votes: export them as preference pairs for DPO")
    hs = h.add_subparsers(dest="human_action", metavar="action")
    e = hs.add_parser(
        "export",
        help="write the votes of a human-evaluation file as preference pairs (JSONL)",
        description="One TRL conversational preference record per decisive vote; ties and "
        "both-bad votes are left out unless --keep-ties. Train on it with "
        "`lmforge finetune --method dpo`.",
    )
    e.add_argument(
        "--db", required=True, help="human-evaluation file (from `lmforge eval human`, rated at /human)"
    )
    e.add_argument("--out", required=True, help="JSONL file to write")
    e.add_argument(
        "--keep-ties",
        action="store_true",
        help="write tie and both-bad votes too, marked by a 'preference' field",
    )
    e.add_argument("--force", action="store_true", help="replace --out if it exists")
    a = hs.add_parser(
        "answers", help="write each model's answers as <out>/<model>.jsonl for `lmforge eval judge`"
    )
    a.add_argument("--db", required=True, help="human-evaluation file (from `lmforge eval human`)")
    a.add_argument("--out", required=True, help="folder for one {question, answer} JSONL per model")


def run(args) -> int:
    if args.human_action == "answers":
        for model, path in write_answers(args.db, args.out).items():
            print(f"[lmforge] {model}: {path}", flush=True)
        return 0
    if args.human_action != "export":
        raise LmforgeError("lmforge human needs an action: export or answers (see lmforge human --help)")
    result = write_export(args.db, args.out, keep_ties=args.keep_ties, force=args.force)
    for line in result.summary(args.out):
        print(f"[lmforge] {line}", flush=True)
    return 0
