"""LLM as judge against a real OpenAI-compatible HTTP server on loopback (started here)."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from lmforge.errors import LmforgeError
from lmforge.eval.judge import compare_pair, grade, openai_judge, parse_rating, parse_verdict, run_judge


class JudgeHandler(BaseHTTPRequestHandler):
    """A toy judge: rates by answer length; in pairwise mode prefers the answer that mentions
    'Paris', or -- when told to be position-biased -- always answer A."""

    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeHandler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][0]["content"]
        if "[The Start of Assistant A's Answer]" in prompt:
            a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End", prompt, re.DOTALL).group(1)
            if "BIASED" in prompt:
                text = "Assistant A is better. [[A]]"
            else:
                text = "Verdict: [[A]]" if "Paris" in a else "Verdict: [[B]]"
        else:
            answer = re.search(r"Assistant's Answer\]\n(.*?)\n\[The End", prompt, re.DOTALL).group(1)
            text = f"Reasonable. Rating: [[{min(10, len(answer.split()))}]]"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_parsers():
    assert parse_rating("Good answer. [[7]]") == 7.0
    assert parse_rating("[[8.5]]") == 8.5 and parse_rating("Rating: [9]") == 9.0
    assert parse_rating("I give it 6/10.") == 6.0
    assert parse_rating("[[11]]") is None and parse_rating("no idea") is None
    assert parse_verdict("first [[B]] then final [[A]]") == "A"
    assert (
        parse_verdict("[[C]]") == "tie" and parse_verdict("[[tie]]") == "tie" and parse_verdict("A") is None
    )


def test_grade_and_pairwise_over_http(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge = openai_judge(server, "toy-judge", api_key_env="JUDGE_KEY")
    r = grade(judge, "What is the capital of France?", "Paris is the capital of France.")
    assert r["score"] == 6.0 and "[[6]]" in r["raw"] and "capital of France?" in r["prompt"]
    last = JudgeHandler.seen[-1]
    assert last["path"] == "/v1/chat/completions" and last["auth"] == "Bearer sk-test"
    assert last["body"]["model"] == "toy-judge" and last["body"]["temperature"] == 0

    fair = compare_pair(judge, "Capital of France?", "Lyon.", "Paris.")
    assert fair["order_ab"]["verdict"] == "B" and fair["order_ba"]["verdict"] == "A"
    assert fair["winner"] == "B" and fair["consistent"]
    biased = compare_pair(judge, "BIASED: Capital of France?", "Lyon.", "Paris.")
    assert biased["winner"] == "tie" and not biased["consistent"]  # flips with the order -> tie


def test_judge_command_writes_judgments(server, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    qs = ["Capital of France?", "Capital of Italy?"]
    a.write_text(
        "".join(json.dumps({"question": q, "answer": ans}) + "\n" for q, ans in zip(qs, ["Paris.", "Rome."]))
    )
    b.write_text(
        "".join(json.dumps({"question": q, "answer": ans}) + "\n" for q, ans in zip(qs, ["Lyon.", "Milan."]))
    )
    args = type(
        "Args",
        (),
        {
            "judge_url": server,
            "judge_run": None,
            "judge_model": "toy",
            "api_key_env": "NONE_SET",
            "answers": str(a),
            "answers_b": str(b),
            "output": str(tmp_path / "out"),
        },
    )()
    assert run_judge(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pairs"] == 2 and summary["wins_a"] == 1 and summary["ties"] == 1
    assert summary["order_agreement"] == 0.5
    lines = (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "raw" in json.loads(lines[0])["order_ab"]


def test_unreachable_judge_is_a_user_error():
    judge = openai_judge("http://127.0.0.1:9/v1", "x", timeout=2)
    with pytest.raises(LmforgeError, match="cannot reach the judge endpoint"):
        judge("hi")


def judge_args(url, tmp_path, **kw):
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"question": "Capital of France?", "answer": "Paris."}) + "\n")
    return type(
        "Args",
        (),
        {
            "judge_url": url,
            "judge_run": None,
            "judge_model": None,
            "api_key_env": "NONE_SET",
            "answers": str(a),
            "answers_b": None,
            "output": str(tmp_path / "out"),
            **kw,
        },
    )()


def test_judge_without_judge_model_uses_the_one_model_lmforge_serve_serves(tmp_path):
    """The README's `eval judge --judge-url ...` (no --judge-model) against a real `lmforge serve`."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from lmforge.eval.judge import served_model
    from lmforge.serve.engine import ServedModel
    from lmforge.serve.server import RunningServer, create_app
    from lmforge.tiny import make_tiny_run

    one = ServedModel.load(
        f"sft={make_tiny_run(tmp_path / 'r1', seed=0, block_size=1536)}"
    )  # judge asks 1024 tokens
    with RunningServer(create_app([one])) as srv:
        assert served_model(f"{srv.url}/v1") == "sft"
        assert (
            run_judge(judge_args(f"{srv.url}/v1", tmp_path)) == 0
        )  # a random model: its rating may not parse
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["answers"] == 1
    two = ServedModel.load(f"other={make_tiny_run(tmp_path / 'r2', seed=1, block_size=64)}")
    with (
        RunningServer(create_app([one, two])) as srv,
        pytest.raises(LmforgeError, match=r"serves 2 models \(sft, other\): choose one with --judge-model"),
    ):
        run_judge(judge_args(f"{srv.url}/v1", tmp_path))
