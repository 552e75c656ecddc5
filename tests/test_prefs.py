"""Preference data: every supported format read into the same pairs, malformed records reported by
line (skipped or fatal), and `lmforge human export` turning the votes of a human-evaluation file
into pairs the reader gives back whatever order the votes came in."""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.serve.human_eval import SCHEMA, HumanEvalStore
from lmforge.serve.human_export import export_votes, write_export
from lmforge.tune.prefs import PreferencePair, read_preferences

SKY = [{"role": "user", "content": "What color is the sky?"}]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


def msgs(*turns: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


# ---- the formats

FORMATS = {
    "trl_standard": (
        {"prompt": "What color is the sky?", "chosen": "Blue.", "rejected": "Green."},
        PreferencePair(SKY, "Blue.", "Green.", 1),
    ),
    "trl_conversational": (
        {
            "prompt": [{"role": "system", "content": "Be brief."}] + SKY,
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Green."}],
        },
        PreferencePair([{"role": "system", "content": "Be brief."}] + SKY, "Blue.", "Green.", 1),
    ),
    "trl_implicit": (
        {"chosen": "The sky is blue.", "rejected": "The sky is bright green."},
        PreferencePair([{"role": "user", "content": "The sky is"}], "blue.", "bright green.", 1),
    ),
    "trl_implicit_conversational": (
        {"chosen": msgs("hi", "hello", "sky?", "blue"), "rejected": msgs("hi", "hello", "sky?", "go away")},
        PreferencePair(msgs("hi", "hello", "sky?"), "blue", "go away", 1),
    ),
    "hh_rlhf": (
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: What is 2+2?\n\nAssistant: 4",
            "rejected": (
                "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: What is 2+2?\n\nAssistant: Ask a calculator."
            ),
        },
        PreferencePair(msgs("hi", "hello", "What is 2+2?"), "4", "Ask a calculator.", 1),
    ),
    "ultrafeedback": (
        {
            "prompt": "What color is the sky?",
            "prompt_id": "ab12",
            "chosen": msgs("What color is the sky?", "Blue."),
            "rejected": msgs("What color is the sky?", "Green."),
            "messages": msgs("What color is the sky?", "Blue."),
            "score_chosen": 9.0,
            "score_rejected": 4.5,
        },
        PreferencePair(SKY, "Blue.", "Green.", 1),
    ),
    "lmforge_votes": (
        {
            "prompt": SKY,
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Green."}],
            "preference": "chosen",
            "vote_id": 4,
            "models": {"chosen": "b", "rejected": "a"},
        },
        PreferencePair(SKY, "Blue.", "Green.", 1),
    ),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_reads_into_a_pair(fmt, tmp_path):
    record, want = FORMATS[fmt]
    data = read_preferences(write_jsonl(tmp_path / "p.jsonl", [record]))
    assert data.pairs == [want]
    assert data.formats == Counter({fmt: 1})
    assert not data.bad and not data.excluded


def test_formats_mix_per_record_and_json_arrays_and_gzip(tmp_path):
    records = [r for r, _ in FORMATS.values()]
    want = [
        PreferencePair(p.prompt, p.chosen, p.rejected, i + 1) for i, (_, p) in enumerate(FORMATS.values())
    ]
    assert read_preferences(write_jsonl(tmp_path / "p.jsonl", records)).pairs == want
    (tmp_path / "p.json").write_text(json.dumps(records), encoding="utf-8")
    assert read_preferences(tmp_path / "p.json").pairs == want  # line = record index + 1
    with gzip.open(tmp_path / "p.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(map(json.dumps, records)))
    assert read_preferences(tmp_path / "p.jsonl.gz").pairs == want


GOOD = FORMATS["trl_standard"][0]
MALFORMED = [
    ("{not json", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('["prompt", "chosen"]', "not a JSON object"),
    ({"prompt": "q", "rejected": "b"}, "missing field 'chosen'"),
    ({"prompt": "q"}, "missing fields 'chosen', 'rejected'"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "empty content"),
    ({"prompt": "q", "chosen": "a", "rejected": "   "}, "empty content"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "are the same"),
    ({"prompt": "q", "chosen": "same", "rejected": " same "}, "replies are the same"),
    ({"prompt": msgs("q", "a"), "chosen": "x", "rejected": "y"}, "last turn is 'assistant', not 'user'"),
    ({"prompt": [{"role": "user", "content": 3}], "chosen": "x", "rejected": "y"}, "content is int"),
    ({"prompt": "q", "chosen": 7, "rejected": "y"}, "'chosen' is int"),
    (
        {"prompt": "q", "chosen": [{"role": "assistant", "content": {"t": 1}}], "rejected": "y"},
        "content is dict",
    ),
    ({"prompt": "q", "chosen": ["hi"], "rejected": "y"}, r"chosen\[0\] is str"),
    (
        {"prompt": "q", "chosen": [{"role": "assistant", "content": "x", "tool_calls": []}], "rejected": "y"},
        "expected only role and content",
    ),
    ({"prompt": [{"role": "robot", "content": "q"}], "chosen": "x", "rejected": "y"}, "role 'robot'"),
    (
        {
            "prompt": "q",
            "chosen": [{"role": "user", "content": "x"}],
            "rejected": [{"role": "user", "content": "y"}],
        },
        "not an assistant turn",
    ),
    (
        {"chosen": msgs("hi", "a", "q1", "x"), "rejected": msgs("hi", "a", "q2", "y")},
        "differ only in their last",
    ),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: a"}, "are the same"),
    ({"chosen": "\n\nHuman: q\n\nAssistant:", "rejected": "\n\nHuman: q\n\nAssistant: b"}, "empty content"),
    (
        {
            "chosen": "\n\nHuman: q\n\nHuman: again\n\nAssistant: a",
            "rejected": "\n\nHuman: q\n\nHuman: again\n\nAssistant: b",
        },
        "turns must alternate",
    ),
    ({"chosen": "apples are red", "rejected": "bananas are yellow"}, "share no prompt text"),
    ({"prompt": "q", "chosen": "a" * 1_000_001, "rejected": "b"}, "over the 1000000 limit"),
    (
        {
            "prompt": "q",
            "chosen": msgs("q", "a"),
            "rejected": msgs("q", "b"),
            "score_chosen": 2,
            "score_rejected": 5,
        },
        "below score_rejected",
    ),
    (
        {
            "prompt": "q",
            "chosen": msgs("q", "a"),
            "rejected": msgs("q", "b"),
            "score_chosen": "9",
            "score_rejected": 5,
        },
        "'score_chosen' is str",
    ),
]


@pytest.mark.parametrize("bad, reason", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_a_malformed_record_is_named_by_line_and_skipped_or_fatal(bad, reason, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, bad, GOOD])
    data = read_preferences(path, on_error="skip")
    assert [p.line for p in data.pairs] == [1, 3]  # the records around it survive
    assert len(data.bad) == 1 and data.bad[0].where == "p.jsonl:2"
    assert re.search(reason, data.bad[0].reason), data.bad[0].reason
    assert "1 malformed skipped" in data.summary()
    with pytest.raises(LmforgeError, match=r"malformed preference record at p\.jsonl:2: "):
        read_preferences(path, on_error="fatal")


def test_no_strict_preference_is_excluded_and_counted(tmp_path):
    tie = {**FORMATS["lmforge_votes"][0], "preference": "tie"}
    uf_equal = {**FORMATS["ultrafeedback"][0], "score_rejected": 9.0}
    data = read_preferences(write_jsonl(tmp_path / "p.jsonl", [GOOD, tie, tie, uf_equal]))
    assert len(data.pairs) == 1 and not data.bad
    assert data.excluded == Counter({"tie": 2, "equal scores": 1})
    assert "excluded 1 equal scores, 2 tie" in data.summary()


def test_files_with_no_usable_pair_and_bad_arguments(tmp_path):
    with pytest.raises(LmforgeError, match="preference data file not found"):
        read_preferences(tmp_path / "nope.jsonl")
    with pytest.raises(
        LmforgeError, match=r"no usable preference pair in 2 records; first problem: p\.jsonl:1"
    ):
        read_preferences(write_jsonl(tmp_path / "p.jsonl", ["{x", '{"prompt": 1}']), on_error="skip")
    with pytest.raises(LmforgeError, match="on_error must be one of fatal, skip"):
        read_preferences(tmp_path / "p.jsonl", on_error="error")
    (tmp_path / "p.json").write_text('{"prompt": "q"}', encoding="utf-8")
    with pytest.raises(LmforgeError, match="a .json preference file must hold an array"):
        read_preferences(tmp_path / "p.json")


# ---- properties of the text formats

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
TEXT = st.lists(WORD, min_size=1, max_size=6).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT)
def test_implicit_prompt_strings_split_at_the_shared_words(prompt, chosen, rejected):
    """The shared prefix, cut back to a whole word, is the prompt; the rest are the replies."""
    if chosen.split()[0] == rejected.split()[0]:
        rejected = "x" + rejected  # the replies must differ from their first word on
    with tempfile.TemporaryDirectory() as d:
        rec = {"chosen": f"{prompt} {chosen}", "rejected": f"{prompt} {rejected}"}
        pair = read_preferences(write_jsonl(Path(d) / "p.jsonl", [rec])).pairs[0]
    assert pair == PreferencePair([{"role": "user", "content": prompt}], chosen, rejected, 1)


HH_TURN_TEXT = st.text(alphabet="abc xyz?!\n:.", min_size=1, max_size=20).filter(
    lambda t: t.strip() and "\n\n" not in t
)


@settings(max_examples=60, deadline=None)
@given(
    turns=st.lists(HH_TURN_TEXT, min_size=1, max_size=4).map(lambda t: t[: (len(t) - 1) // 2 * 2 + 1]),
    chosen=HH_TURN_TEXT,
    rejected=HH_TURN_TEXT,
)
def test_hh_transcripts_round_trip(turns, chosen, rejected):
    """Render a conversation as an HH-RLHF transcript pair; the reader gives back its turns."""
    if chosen.strip() == rejected.strip():
        rejected += " no"
    prompt = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t.strip()} for i, t in enumerate(turns)
    ]

    def transcript(reply: str) -> str:
        return (
            "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in prompt)
            + f"\n\nAssistant: {reply}"
        )

    with tempfile.TemporaryDirectory() as d:
        rec = {"chosen": transcript(chosen), "rejected": transcript(rejected)}
        pair = read_preferences(write_jsonl(Path(d) / "p.jsonl", [rec])).pairs[0]
    assert pair == PreferencePair(prompt, chosen.strip(), rejected.strip(), 1)


# ---- lmforge human export

PROMPTS = [("p1", "say hello", None), ("p2", "add 2 and 3", "Answer with a number.")]
ANSWERS = {"red": ["hello there", "5"], "blue": ["go away", "five"], "green": ["hello there", ""]}


def make_db(path: Path, models=("red", "blue")) -> Path:
    """A human-evaluation file as `lmforge eval human` writes it, with fixed answers."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode = WAL")  # as prepare() leaves it
    con.executescript(SCHEMA)
    con.execute("INSERT INTO meta VALUES ('models', ?)", (json.dumps(list(models)),))
    for k, (key, prompt, system) in enumerate(PROMPTS):
        pid = con.execute(
            "INSERT INTO prompts (key, prompt, system) VALUES (?, ?, ?)", (key, prompt, system)
        ).lastrowid
        for m in models:
            con.execute("INSERT INTO answers VALUES (?, ?, ?, 1, 'stop')", (pid, m, ANSWERS[m][k]))
        for i, a in enumerate(models):
            for b in models[i + 1 :]:
                con.execute(
                    "INSERT INTO comparisons (prompt_id, model_a, model_b) VALUES (?, ?, ?)", (pid, a, b)
                )
    con.commit()
    con.close()
    return path


def cast(store: HumanEvalStore, comparison: int, rater: str, outcome: str, left_first: bool = True) -> None:
    """A vote as the page casts it: a signed task showing one model on the left, the rater's choice.
    outcome: the winning model's name, 'tie' or 'both_bad'."""
    con = sqlite3.connect(store.path)
    a, b = con.execute("SELECT model_a, model_b FROM comparisons WHERE id = ?", (comparison,)).fetchone()
    con.close()
    left = a if left_first else b
    choice = outcome if outcome in ("tie", "both_bad") else ("left" if outcome == left else "right")
    store.vote(store.make_task(comparison, left, rater), choice, score_left=4, score_right=2)


def prompt_messages(k: int) -> list[dict]:
    _, prompt, system = PROMPTS[k]
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def test_export_writes_one_pair_per_decisive_vote(tmp_path, capsys):
    db = make_db(tmp_path / "h.sqlite")
    store = HumanEvalStore(db)
    cast(store, 1, "ann", "blue")  # comparison 1: p1 red vs blue
    cast(store, 2, "ann", "red", left_first=False)  # p2
    cast(store, 1, "bob", "tie")
    cast(store, 2, "bob", "both_bad")
    before = db.read_bytes()
    out = tmp_path / "prefs.jsonl"
    assert main(["human", "export", "--db", str(db), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 2 preference records from 4 votes -> {out}" in printed
    assert "excluded 1 both_bad vote (--keep-ties keeps them)" in printed
    assert "excluded 1 tie vote (--keep-ties keeps them)" in printed
    assert db.read_bytes() == before  # read-only
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["models"] == {"chosen": "blue", "rejected": "red"} and rows[0]["vote_id"] == 1
    assert (rows[0]["rating_chosen"], rows[0]["rating_rejected"]) == (2, 4)  # blue was on the right
    assert rows[1]["models"] == {"chosen": "red", "rejected": "blue"} and rows[1]["rater"] == "ann"
    data = read_preferences(out)
    assert data.pairs == [
        PreferencePair(prompt_messages(0), "go away", "hello there", 1),
        PreferencePair(prompt_messages(1), "5", "five", 2),
    ]
    assert data.formats == Counter({"lmforge_votes": 2})

    kept = tmp_path / "all.jsonl"
    assert main(["human", "export", "--db", str(db), "--out", str(kept), "--keep-ties"]) == 0
    assert "kept 1 both_bad, 1 tie with a 'preference' field" in capsys.readouterr().out
    data = read_preferences(kept)
    assert [p.line for p in data.pairs] == [1, 2]  # lines 3 and 4 hold the tie and the both-bad vote
    assert len(data.pairs) == 2 and data.excluded == Counter({"tie": 1, "both_bad": 1})


def test_export_leaves_out_votes_that_cannot_teach_a_preference(tmp_path):
    db = make_db(tmp_path / "h.sqlite", models=("red", "green"))  # p1: same answers; p2: green's is empty
    store = HumanEvalStore(db)
    cast(store, 1, "ann", "red")
    cast(store, 2, "ann", "red")
    result = export_votes(db)
    assert not result.records and result.excluded == Counter({"identical answers": 1, "empty answer": 1})
    with pytest.raises(
        LmforgeError,
        match=r"none of the 2 votes .* states a preference \(1 empty answer, "
        r"1 identical answers\); nothing written",
    ):
        write_export(db, tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()


def test_export_refuses_bad_input_with_one_clear_error(tmp_path, capsys):
    db = make_db(tmp_path / "h.sqlite")
    out = tmp_path / "prefs.jsonl"
    with pytest.raises(LmforgeError, match="holds no votes yet"):
        write_export(db, out)
    cast(HumanEvalStore(db), 1, "ann", "red")
    out.write_text("keep me\n")
    assert main(["human", "export", "--db", str(db), "--out", str(out)]) == 2
    assert "already exists; choose another --out or pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    assert main(["human", "export", "--db", str(db), "--out", str(out), "--force"]) == 0
    assert len(read_preferences(out).pairs) == 1
    assert not list(tmp_path.glob(".*tmp*"))
    cases = [(tmp_path / "missing.sqlite", "human evaluation file not found")]
    (tmp_path / "text.sqlite").write_text("not a database at all " * 50)
    cases.append((tmp_path / "text.sqlite", "is not a human evaluation file"))
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE t (x)")
    other.close()
    cases.append((tmp_path / "other.sqlite", r"is not a human evaluation file \(no meta, prompts, answers, "))
    for path, msg in cases:
        with pytest.raises(LmforgeError, match=msg):
            write_export(path, tmp_path / "x.jsonl")
        assert not (path.parent / "missing.sqlite").exists()  # never created by looking
    assert main(["human"]) == 2
    assert "lmforge human needs an action: export or answers" in capsys.readouterr().err


VOTE = st.tuples(st.sampled_from([1, 2]), st.sampled_from(["red", "blue", "tie", "both_bad"]), st.booleans())


@settings(max_examples=12, deadline=None)  # each example casts up to 12 real votes
@given(
    votes=st.lists(VOTE, min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
    keep_ties=st.booleans(),
)
def test_export_then_read_gives_the_same_pairs_whatever_the_vote_order(votes, order, keep_ties):
    """Each vote is by its own rater; casting them in any order exports the same pairs."""
    votes = [(c, outcome, left, f"rater{i}") for i, (c, outcome, left) in enumerate(votes)]
    shuffled = votes[:]
    order.shuffle(shuffled)
    want = Counter()
    for c, outcome, _, _ in votes:
        if outcome in ("red", "blue"):
            loser = "blue" if outcome == "red" else "red"
            want[(json.dumps(prompt_messages(c - 1)), ANSWERS[outcome][c - 1], ANSWERS[loser][c - 1])] += 1
    got = []
    for cast_order in (votes, shuffled):
        with tempfile.TemporaryDirectory() as d:
            db = make_db(Path(d) / "h.sqlite")
            store = HumanEvalStore(db)
            for c, outcome, left, rater in cast_order:
                cast(store, c, rater, outcome, left)
            if not want and not keep_ties:
                with pytest.raises(LmforgeError, match="nothing written"):
                    write_export(db, Path(d) / "p.jsonl", keep_ties=keep_ties)
                continue
            write_export(db, Path(d) / "p.jsonl", keep_ties=keep_ties)
            if not want:
                with pytest.raises(LmforgeError, match="no usable preference pair"):
                    read_preferences(Path(d) / "p.jsonl")
                continue
            data = read_preferences(Path(d) / "p.jsonl")
            ties = Counter(o for _, o, _, _ in votes if o in ("tie", "both_bad"))
            assert data.excluded == (ties if keep_ties else Counter())
            got.append(Counter((json.dumps(p.prompt), p.chosen, p.rejected) for p in data.pairs))
    assert all(g == want for g in got)


def test_answers_per_model_for_the_judge(tmp_path, capsys):
    db = make_db(tmp_path / "h.sqlite")
    assert main(["human", "answers", "--db", str(db), "--out", str(tmp_path / "ans")]) == 0
    assert "red: " in capsys.readouterr().out
    for model in ("red", "blue"):
        rows = [json.loads(x) for x in (tmp_path / "ans" / f"{model}.jsonl").read_text().splitlines()]
        assert rows == [
            {"question": p, "answer": ANSWERS[model][k], "prompt_key": key}
            for k, (key, p, _) in enumerate(PROMPTS)
        ]
    assert main(["human", "answers", "--db", str(db), "--out", str(tmp_path / "ans")]) == 2
    assert "already exist; choose another --out" in capsys.readouterr().err
