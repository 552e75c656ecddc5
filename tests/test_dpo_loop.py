"""The loop, end to end (issue 17 part 5): two models on the human-evaluation page, votes cast in
headless Chromium, `lmforge human export`, `lmforge finetune --method dpo` on the export, the tuned
model served against its parent, a second round of votes, and the Bradley-Terry table moving
towards the tuned model; `lmforge eval judge` compares the pair through the running server
(a third tiny model as the judge).

The scripted rater has one taste throughout: answers like model "other"'s. Round 1 it picks
other's answer over the parent's on every prompt; DPO on those votes moves the parent's greedy
answers towards other's; round 2 it prefers whichever answer shares the longer start with other's
answer to that prompt (a tie when equal). Tiny random models, 4 prompts, 10 DPO steps: seconds.
Needs chromium, chromedriver and selenium, as tests/test_web.py (whose browser fixture it uses)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")
from selenium.webdriver.common.by import By
from test_web import CHROMIUM, DRIVER, browser, wait  # noqa: F401  (browser: the headless Chromium fixture)

from lmforge.cli import main
from lmforge.serve.engine import ServedModel
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run
from lmforge.tune.prefs import read_preferences

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)
KEY = "loop-key"
PROMPTS = [f"tell me about item {i}" for i in range(4)]
ANSWER = ["--temperature", "0", "--max-tokens", "8"]  # greedy: an answer is the model's, not a draw
DPO = [
    "lr=2e-3",
    "max_steps=10",
    "batch_size=4",
    "warmup_steps=0",
    "val_fraction=0",
    "eval_every=0",
    "max_new_tokens=8",
]


def answers(db: Path) -> dict[tuple[str, str], str]:
    """(prompt text, model) -> the answer raters see."""
    con = sqlite3.connect(db)
    try:
        return {
            (p, m): t
            for p, m, t in con.execute(
                "SELECT p.prompt, a.model, a.text FROM answers a JOIN prompts p ON p.id = a.prompt_id"
            )
        }
    finally:
        con.close()


def shared_start(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def rate_all(driver, url: str, taste) -> int:
    """Vote on every comparison the page hands out; taste(prompt, answer_a, answer_b) -> the button
    to press (vote-a, vote-b, vote-tie). Returns the number of votes cast."""
    driver.get(f"{url}/chat")
    driver.execute_script("localStorage.setItem('lmforge.apiKey', arguments[0])", KEY)
    driver.get(f"{url}/human")
    cast, task = 0, None
    while True:
        wait(
            driver,
            lambda d, last=task: (
                d.find_element(By.ID, "done").is_displayed()
                or d.find_element(By.ID, "task").get_attribute("data-task") not in (None, "", last)
            ),
        )
        if driver.find_element(By.ID, "done").is_displayed():
            return cast
        task = driver.find_element(By.ID, "task").get_attribute("data-task")
        prompt = driver.find_element(By.ID, "prompt").text
        a, b = (driver.find_element(By.ID, f"answer-{s}").get_attribute("textContent") for s in "ab")
        driver.find_element(By.ID, taste(prompt, a, b)).click()
        cast += 1
        wait(driver, lambda d, n=cast: d.find_element(By.ID, "tally").text == str(n))


def ratings(driver, url: str, votes: int) -> dict[str, float]:
    """Model -> Bradley-Terry rating, as the results page shows it."""
    driver.get(f"{url}/human/results")
    wait(driver, lambda d: d.find_element(By.ID, "summary").get_attribute("data-votes") == str(votes))
    head = [th.text.lower() for th in driver.find_elements(By.CSS_SELECTOR, "#models thead th")]
    col = next(i for i, h in enumerate(head) if "rating" in h)
    rows = [
        r.find_elements(By.TAG_NAME, "td") for r in driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    ]
    return {r[0].text: float(r[col].text.split()[0]) for r in rows}


def serve(runs: dict[str, Path], db: Path) -> RunningServer:
    models = [ServedModel.load(f"{name}={path}") for name, path in runs.items()]
    return RunningServer(create_app(models, api_key=KEY, human_db=db))


def test_votes_to_dpo_to_a_better_rated_model(browser, tmp_path, capsys):  # noqa: F811
    parent = make_tiny_run(tmp_path / "parent", seed=0, block_size=96)
    other = make_tiny_run(tmp_path / "other", seed=1, block_size=96)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")

    # Round 1: the parent against the model the rater likes.
    h1 = tmp_path / "round1.sqlite"
    assert (
        main(
            [
                "eval",
                "human",
                "--models",
                f"parent={parent}",
                f"other={other}",
                "--prompts",
                str(prompts),
                "--output",
                str(h1),
                *ANSWER,
            ]
        )
        == 0
    )
    seen = answers(h1)
    liked = {p: seen[(p, "other")] for p in PROMPTS}
    assert all(seen[(p, "parent")] != liked[p] for p in PROMPTS)  # each vote can teach something
    srv = serve({"parent": parent, "other": other}, h1)
    try:
        assert rate_all(browser, srv.url, lambda p, a, b: "vote-a" if a == liked[p] else "vote-b") == 4
        before = ratings(browser, srv.url, 4)
    finally:
        srv.stop()
    assert before["other"] > before["parent"]

    # Votes -> preference pairs -> DPO on the parent (its own process, as a user runs it).
    prefs = tmp_path / "prefs.jsonl"
    capsys.readouterr()
    assert main(["human", "export", "--db", str(h1), "--out", str(prefs)]) == 0
    assert f"wrote 4 preference records from 4 votes -> {prefs}" in capsys.readouterr().out
    pairs = read_preferences(prefs).pairs
    assert {(p.prompt[-1]["content"], p.chosen, p.rejected) for p in pairs} == {
        (p, liked[p], seen[(p, "parent")]) for p in PROMPTS
    }
    tuned = tmp_path / "tuned"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmforge",
            "finetune",
            "--method",
            "dpo",
            "--init",
            str(parent),
            "--data",
            str(prefs),
            "--out",
            str(tuned),
            *DPO,
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DPO (sigmoid, beta 0.1" in done.stdout

    # Round 2: the tuned model against its parent, same rater.
    h2 = tmp_path / "round2.sqlite"
    assert (
        main(
            [
                "eval",
                "human",
                "--models",
                f"tuned={tuned}",
                f"parent={parent}",
                "--prompts",
                str(prompts),
                "--output",
                str(h2),
                *ANSWER,
            ]
        )
        == 0
    )
    seen2 = answers(h2)

    def closer(p: str, a: str, b: str) -> str:
        sa, sb = shared_start(a, liked[p]), shared_start(b, liked[p])
        return "vote-a" if sa > sb else "vote-b" if sb > sa else "vote-tie"

    tuned_wins = sum(
        shared_start(seen2[(p, "tuned")], liked[p]) > shared_start(seen2[(p, "parent")], liked[p])
        for p in PROMPTS
    )
    assert tuned_wins >= 3, seen2  # DPO moved the greedy answers towards the liked ones
    # The judge: a third model with room for the judge prompt (~470 tokens) beside the two.
    judge = make_tiny_run(tmp_path / "judge", seed=2, block_size=640)
    srv = serve({"tuned": tuned, "parent": parent, "judge": judge}, h2)
    try:
        assert rate_all(browser, srv.url, closer) == 4
        after = ratings(browser, srv.url, 4)

        # The LLM judge on the same pair, through the running server's OpenAI-compatible API
        # (a tiny random model is no judge: this checks the plumbing, not its verdicts).
        ans = tmp_path / "answers"
        assert main(["human", "answers", "--db", str(h2), "--out", str(ans)]) == 0
        os.environ["LMFORGE_LOOP_KEY"] = KEY
        try:
            assert (
                main(
                    [
                        "eval",
                        "judge",
                        "--answers",
                        str(ans / "tuned.jsonl"),
                        "--answers-b",
                        str(ans / "parent.jsonl"),
                        "--judge-url",
                        f"{srv.url}/v1",
                        "--judge-model",
                        "judge",
                        "--api-key-env",
                        "LMFORGE_LOOP_KEY",
                        "--output",
                        str(tmp_path / "judge"),
                    ]
                )
                == 0
            )
        finally:
            del os.environ["LMFORGE_LOOP_KEY"]
    finally:
        srv.stop()
    assert after["tuned"] > after["parent"]
    summary = json.loads((tmp_path / "judge" / "summary.json").read_text())
    assert summary["pairs"] == 4 and summary["wins_a"] + summary["wins_b"] + summary["ties"] == 4
    judged = [json.loads(x) for x in (tmp_path / "judge" / "judgments.jsonl").read_text().splitlines()]
    assert [j["question"] for j in judged] == PROMPTS
    assert all(seen2[(j["question"], "tuned")] in j["order_ab"]["prompt"] for j in judged)
