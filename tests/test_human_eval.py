"""Human evaluation: preparing comparisons, the SQLite store under concurrent raters, and the
statistics (win rates, bootstrap CIs, Bradley-Terry ratings) on votes with known answers."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.human_eval import HumanEvalStore, VoteError, prepare, read_prompts
from lmforge.serve.ratings import ELO_SCALE, PRIOR_TIES, bradley_terry, summarize
from lmforge.tiny import make_tiny_run

SAMPLE = SampleConfig(max_new_tokens=6, temperature=0.7, top_k=None, top_p=0.95, seed=1234)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return make_tiny_run(root / "red", seed=0, block_size=64), make_tiny_run(
        root / "blue", seed=1, block_size=64
    )


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [
        {"prompt": "say hello", "reference": "hello"},
        {"instruction": "add the numbers", "input": "2 and 3", "output": "5"},
        {"question": "what is a fox?", "id": "q3"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def db(runs, prompts_file, tmp_path):
    return prepare(
        [str(r) for r in runs], prompts_file, tmp_path / "human.sqlite", SAMPLE, log=lambda m: None
    )


# ---- preparing


def test_read_prompts_formats_and_bad_lines(prompts_file, tmp_path):
    rows = read_prompts(prompts_file)
    assert [r["prompt"] for r in rows] == ["say hello", "add the numbers\n\n2 and 3", "what is a fox?"]
    assert [r["reference"] for r in rows] == ["hello", "5", None]
    assert [r["key"] for r in rows] == ["1", "2", "q3"]
    for line, msg in [
        ("{oops", r"bad\.jsonl:2: not valid JSON"),
        ("[1]", r"bad\.jsonl:2: expected a JSON object"),
        ('{"text": "x"}', r"bad\.jsonl:2: needs a non-empty string field prompt"),
        ('{"prompt": "x", "reference": 3}', r"bad\.jsonl:2: the reference must be a string"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "fine"}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(LmforgeError, match=msg):
            read_prompts(bad)


def test_prepare_answers_every_prompt_with_every_model(db, runs):
    store = HumanEvalStore(db)
    assert store.models == ["red", "blue"]
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0] == 3
    answers = dict(con.execute("SELECT model || '/' || prompt_id, text FROM answers").fetchall())
    con.close()
    red = ServedModel.load(str(runs[0]))
    ids = red.chat_ids([{"role": "user", "content": "add the numbers\n\n2 and 3"}])
    want = red.complete(
        ids, SampleConfig(**{**SAMPLE.__dict__, "seed": SAMPLE.seed + 1}), red.chat_stop_ids()
    )
    assert answers["red/2"] == want.text  # the chat template, seed + prompt index
    assert not list(db.parent.glob(".*tmp*"))


def test_prepare_never_overwrites(db, runs, prompts_file):
    before = db.read_bytes()
    with pytest.raises(LmforgeError, match="already exists"):
        prepare([str(r) for r in runs], prompts_file, db, SAMPLE, log=lambda m: None)
    assert db.read_bytes() == before
    with pytest.raises(LmforgeError, match="at least two models"):
        prepare([str(runs[0])], prompts_file, db.parent / "x.sqlite", SAMPLE, log=lambda m: None)


def test_eval_human_command(runs, prompts_file, tmp_path, capsys):
    from lmforge.serve.cli import main

    out = tmp_path / "h.sqlite"
    assert (
        main(
            [
                "eval",
                "human",
                "--models",
                f"a={runs[0]}",
                f"b={runs[1]}",
                "--prompts",
                str(prompts_file),
                "--output",
                str(out),
                "--max-tokens",
                "4",
            ]
        )
        == 0
    )
    assert HumanEvalStore(out).models == ["a", "b"]
    assert "3 comparisons" in capsys.readouterr().out


# ---- voting


def test_votes_map_the_shown_side_back_to_the_model(db):
    store = HumanEvalStore(db)
    seen_left = set()
    for _ in range(3):
        task = store.next_task("ann")
        comparison, left, rater = store.read_task(task["task"])
        con = sqlite3.connect(db)
        a = con.execute("SELECT model_a FROM comparisons WHERE id = ?", (comparison,)).fetchone()[0]
        con.close()
        assert rater == "ann"
        seen_left.add(left)
        store.vote(task["task"], "left", score_left=5, score_right=2)
        v = store.votes()[-1]
        assert v["winner"] == ("a" if left == a else "b")
        assert (v["score_a"], v["score_b"]) == ((5, 2) if left == a else (2, 5))
        with pytest.raises(VoteError, match="already voted"):
            store.vote(task["task"], "right")
    assert store.next_task("ann") is None  # ann has rated all three
    assert store.next_task("bob") is not None
    assert store.tally("ann") == {"votes": 3, "comparisons": 3, "yours": 3, "ties": 0, "both_bad": 0}
    with pytest.raises(VoteError, match="choice must be"):
        store.vote(store.next_task("cy")["task"], "A")
    with pytest.raises(VoteError, match="unknown task"):
        store.vote("forged", "tie")
    with pytest.raises(VoteError, match="1 to 5"):
        store.vote(store.next_task("cy")["task"], "tie", score_left=9)


def test_no_vote_lost_under_concurrent_raters(db):
    """8 raters vote at once through the HTTP API (each request its own SQLite connection)."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from lmforge.serve.server import RunningServer, create_app

    def rate(name: str, errors: list) -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for _ in range(3):
                task = c.get("/human/api/next", params={"rater": name}).json()
                r = c.post("/human/api/vote", json={"task": task["task"], "choice": "tie"})
                if r.status_code != 200:
                    errors.append(r.text)

    with RunningServer(create_app([], human_db=db)) as srv:
        errors: list = []
        raters = [threading.Thread(target=rate, args=(f"r{i}", errors)) for i in range(8)]
        for t in raters:
            t.start()
        for t in raters:
            t.join(120)
        assert errors == []
        tally = httpx.get(f"{srv.url}/human/api/tally").json()
        assert tally["votes"] == tally["ties"] == 24
        results = httpx.get(f"{srv.url}/human/api/results").json()
        assert results["votes"] == 24 and {m["name"] for m in results["models"]} == {"red", "blue"}
        bad = httpx.post(f"{srv.url}/human/api/vote", json={"task": "forged", "choice": "tie"})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "vote_rejected"


# ---- statistics


def synthetic_votes(strengths: dict[str, float], n: int, seed: int = 0) -> list[dict]:
    """Votes drawn from a Bradley-Terry model with the given Elo ratings (no ties)."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), size=2, replace=False)
        a, b = names[i], names[j]
        p_a = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / ELO_SCALE))
        out.append(
            {
                "model_a": a,
                "model_b": b,
                "winner": "a" if rng.random() < p_a else "b",
                "score_a": None,
                "score_b": None,
            }
        )
    return out


def test_bradley_terry_recovers_known_ratings():
    truth = {"x": 1200.0, "y": 1000.0, "z": 800.0}
    r = summarize(synthetic_votes(truth, 3000), list(truth), n_boot=200)
    got = {m["name"]: m for m in r["models"]}
    for name, elo in truth.items():
        lo, hi = got[name]["rating_ci"]
        assert lo - 15 <= elo <= hi + 15, (name, got[name])
        assert abs(got[name]["rating"] - elo) < 40
    assert [m["name"] for m in r["models"]] == ["x", "y", "z"]
    assert abs(np.mean([m["rating"] for m in r["models"]]) - 1000) < 1e-6


def test_bradley_terry_solves_the_likelihood_equations():
    """At the maximum likelihood, each model's points equal its expected points (with the prior)."""
    wins = np.array([[0, 7, 3], [2, 0, 5], [1, 4, 0]], dtype=float)
    games = wins + wins.T
    p = bradley_terry(wins, games, iters=2000)
    off = 1 - np.eye(3)
    w, n = wins + 0.5 * PRIOR_TIES * off, games + PRIOR_TIES * off
    expected = (n * p[:, None] / (p[:, None] + p[None, :])).sum(1)
    np.testing.assert_allclose(expected, w.sum(1), rtol=1e-6)


def test_win_rates_counts_ties_and_scores():
    votes = (
        [{"model_a": "a", "model_b": "b", "winner": "a", "score_a": 5, "score_b": 1}] * 6
        + [{"model_a": "b", "model_b": "a", "winner": "a", "score_a": 4, "score_b": 2}] * 2
        + [{"model_a": "a", "model_b": "b", "winner": "tie", "score_a": None, "score_b": None}] * 1
        + [{"model_a": "a", "model_b": "b", "winner": "both_bad", "score_a": None, "score_b": None}] * 1
    )
    r = summarize(votes, ["a", "b"], n_boot=300)
    a = next(m for m in r["models"] if m["name"] == "a")
    b = next(m for m in r["models"] if m["name"] == "b")
    assert (a["wins"], a["losses"], a["ties"], a["both_bad"], a["games"]) == (6, 2, 1, 1, 10)
    assert (b["wins"], b["losses"]) == (2, 6)
    assert a["win_rate"] == pytest.approx(0.7) and b["win_rate"] == pytest.approx(0.3)
    assert a["win_rate_ci"][0] <= 0.7 <= a["win_rate_ci"][1]
    assert a["mean_score"] == pytest.approx((6 * 5 + 2 * 2) / 8) and a["scores"] == 8
    assert a["rating"] > 1000 > b["rating"]
    pair = r["pairs"][0]
    assert (pair["a"], pair["a_wins"], pair["b_wins"], pair["a_win_rate"]) == ("a", 6, 2, pytest.approx(0.7))


def test_a_model_that_never_loses_keeps_a_finite_rating():
    votes = [{"model_a": "a", "model_b": "b", "winner": "a", "score_a": None, "score_b": None}] * 5
    r = summarize(votes, ["a", "b"], n_boot=50)
    assert all(np.isfinite(m["rating"]) for m in r["models"])
    empty = summarize([], ["a", "b"], n_boot=50)
    assert empty["votes"] == 0 and all(m["win_rate"] is None for m in empty["models"])


def test_one_vote_per_rater_per_comparison(db):
    store = HumanEvalStore(db)
    first = store.next_task("dee")
    second = next(t for t in (store.next_task("dee") for _ in range(200)) if t["prompt"] == first["prompt"])
    store.vote(first["task"], "tie")
    with pytest.raises(VoteError, match="already voted"):
        store.vote(second["task"], "left")
    assert store.tally("dee")["yours"] == 1
