"""`lmforge synth` against a real OpenAI-compatible HTTP server on loopback: a small stub teacher
started here (it is not an lmforge component), with failures, junk, refusals and duplicates."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import needs_shared, shared_path

from lmforge.errors import LmforgeError
from lmforge.tune.config import SynthConfig
from lmforge.tune.formats import load_conversations
from lmforge.tune.synth import build_prompt, load_seed_tasks, parse_tasks, synthesize

SEEDS = [
    {
        "instruction": f"Seed instruction number {w} about {w} things",
        "instances": [{"input": "", "output": w}],
    }
    for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
]


class Teacher:
    """State of the stub: what to answer, and what it was asked."""

    def __init__(self, fail_first: int = 0, junk_at: tuple = (), key: str | None = None):
        self.fail_first, self.junk_at, self.key = fail_first, set(junk_at), key
        self.calls = 0
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.rng = random.Random(0)
        self.words = [f"{a}{b}" for a in "bcdfghklmnprst" for b in ("ox", "ig", "ul", "en", "ar")]

    def tasks(self, n0: int) -> str:
        with self.lock:
            fresh = [" ".join(self.rng.sample(self.words, 7)) for _ in range(3)]
        good = [(f"Explain {w}.", "", f"An answer about {w}.") for w in fresh]
        bad = [
            ("Seed instruction number alpha about alpha things", "", "dup"),  # similar to the pool
            ("Describe the image of a cat in detail please", "", "a cat"),  # blocklist
            ("Tell me something secret about the moon please", "", "As an AI, I cannot share that."),
            ("Do it", "", "done"),
        ]  # too short
        return "\n".join(
            f"{n0 + i}. Instruction: {ins}\n{n0 + i}. Input: {inp or '<noinput>'}\n"
            f"{n0 + i}. Output: {out}\n###"
            for i, (ins, inp, out) in enumerate(good + bad)
        )


def serve(teacher: Teacher):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with teacher.lock:
                teacher.calls += 1
                n = teacher.calls
                teacher.bodies.append(body)
            if teacher.key and self.headers.get("Authorization") != f"Bearer {teacher.key}":
                return self.reply(401, b'{"error": {"message": "bad key"}}')
            if n <= teacher.fail_first:
                return self.reply(503, b'{"error": {"message": "busy"}}')
            if n in teacher.junk_at:
                return self.reply(200, b"<html>oops</html>")
            chat = self.path.endswith("/chat/completions")
            prompt = body["messages"][0]["content"] if chat else body["prompt"]
            text = teacher.tasks(int(prompt.rsplit("\n", 1)[-1].split(".")[0]))  # number the prompt asks for
            if not chat:  # a completion continues after the prompt's trailing "N. Instruction:"
                text = text.split("Instruction:", 1)[1]
            choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            self.reply(200, json.dumps({"choices": [{"index": 0, **choice}]}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def seeds(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    return path


def config(server, seeds, out, **kw) -> SynthConfig:
    base = {
        "seeds": str(seeds),
        "out": str(out),
        "base_url": f"http://127.0.0.1:{server.server_port}/v1",
        "model": "stub",
        "num_instructions": 6,
        "concurrency": 3,
        "backoff": 0.01,
        "num_prompt_tasks": 4,
        "num_seed_in_prompt": 3,
        "timeout": 10,
    }
    return SynthConfig(**{**base, **kw})


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def settled_calls(teacher, quiet_s: float = 0.3, limit_s: float = 10.0) -> int:
    """The teacher's request count once requests still in flight from a finished run have landed."""
    deadline = time.monotonic() + limit_s
    last = teacher.calls
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        if teacher.calls == last:
            return last
        last = teacher.calls
    return last


def test_generates_filters_retries_and_resumes(tmp_path, seeds):
    teacher = Teacher(fail_first=2, junk_at=(4,))
    server = serve(teacher)
    out = tmp_path / "synth.jsonl"
    try:
        logs = []
        r = synthesize(config(server, seeds, out), log=logs.append)
        assert r.records == r.added == 6 and r.failed_requests == 0  # 503s and junk were retried
        assert {"similar to pool", "blocklist", "refusal", "instruction length"} <= set(r.rejected)
        first = records(out)
        assert len(first) == 6 and len({x["instruction"] for x in first}) == 6
        assert all(x["instruction"].startswith("Explain ") and x["meta"]["teacher"] == "stub" for x in first)
        body = teacher.bodies[-1]
        assert body["model"] == "stub" and body["messages"][0]["role"] == "user"
        # a crash mid-write left half a line: the rerun cuts it off and continues to 10 records
        with open(out, "a") as f:
            f.write('{"instruction": "Explain half')
        r = synthesize(config(server, seeds, out, num_instructions=10), log=logs.append)
        assert any("incomplete last line" in line for line in logs)
        again = records(out)
        assert again[:6] == first and len(again) == 10 and r.added == 4
        assert len({x["instruction"] for x in again}) == 10  # no duplicates across runs
        calls = settled_calls(teacher)  # synth doesn't wait for answers it no longer needs
        assert synthesize(config(server, seeds, out, num_instructions=10), log=logs.append).added == 0
        assert teacher.calls == calls  # nothing to do: no request
        loaded = load_conversations(out)  # the records are SFT data
        assert loaded.format == "alpaca" and len(loaded.conversations) == 10
    finally:
        server.shutdown()


def test_completions_endpoint_and_api_key(tmp_path, seeds, monkeypatch):
    teacher = Teacher(key="sk-test")
    server = serve(teacher)
    try:
        monkeypatch.setenv("LMF_TEST_KEY", "sk-test")
        r = synthesize(
            config(
                server,
                seeds,
                tmp_path / "a.jsonl",
                endpoint="completions",
                api_key_env="LMF_TEST_KEY",
                num_instructions=3,
            ),
            log=lambda m: None,
        )
        assert r.records == 3 and "prompt" in teacher.bodies[-1]
        monkeypatch.setenv("LMF_TEST_KEY", "wrong")
        with pytest.raises(LmforgeError, match="HTTP 401"):  # not retried: a bad key stays bad
            synthesize(config(server, seeds, tmp_path / "b.jsonl"), log=lambda m: None)
    finally:
        server.shutdown()


def test_teacher_down_is_reported_and_keeps_records(tmp_path, seeds):
    teacher = Teacher(fail_first=10**6)  # always 503
    server = serve(teacher)
    out = tmp_path / "c.jsonl"
    out.write_text(json.dumps({"instruction": "Explain kept record", "input": "", "output": "x"}) + "\n")
    try:
        with pytest.raises(LmforgeError, match="keeps failing.*1 records are safe"):
            synthesize(config(server, seeds, out, retries=1), log=lambda m: None)
        assert len(records(out)) == 1
    finally:
        server.shutdown()


def test_prompt_and_parser():
    tasks = [
        {"instruction": "Add numbers", "input": "1 2", "output": "3"},
        {"instruction": "Greet", "input": "", "output": "Hi"},
    ]
    prompt = build_prompt(tasks)
    assert "1. Instruction: Add numbers\n1. Input: 1 2\n1. Output: 3\n###" in prompt
    assert "2. Input: <noinput>" in prompt and prompt.endswith("3. Instruction:")
    text = (
        " Sort the list\n3. Input: 3 1 2\n3. Output: 1 2 3\n###\n"
        "4. Instruction: Say hi\n4. Input: <noinput>\n4. Output: Hi!"
    )
    assert parse_tasks(text, 3) == [
        {"instruction": "Sort the list", "input": "3 1 2", "output": "1 2 3"},
        {"instruction": "Say hi", "input": "", "output": "Hi!"},
    ]
    assert parse_tasks("I'd rather not.", 3) == []


@needs_shared("instruct/self_instruct/seed_tasks.jsonl")
def test_shared_seed_tasks_load():
    assert len(load_seed_tasks(shared_path("instruct/self_instruct/seed_tasks.jsonl"))) == 175
