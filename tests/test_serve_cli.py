"""`lmforge serve` as a user runs it: a real process on a free loopback port, stopped with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from lmforge.tiny import make_tiny_run

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("serve") / "cli-model", block_size=32)


def test_serve_command_answers_and_stops_on_ctrl_c(run):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LMFORGE_API_KEY": "secret"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmforge.serve.cli",
            "serve",
            "--run",
            f"mini={run}",
            "--port",
            "0",
            "--log-level",
            "warning",
            "--max-request-bytes",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        for line in proc.stdout:  # ends when the process does
            lines.append(line)
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if m:
                url = m.group(1)
                break
        else:
            pytest.fail(f"the server did not start: {''.join(lines)}")
        assert "model 'mini'" in "".join(lines)
        assert httpx.get(f"{url}/health", timeout=30).json()["models"] == ["mini"]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="secret", max_retries=0, timeout=60)
        r = client.chat.completions.create(
            model="mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert r.usage.completion_tokens == 3
        big = httpx.post(
            f"{url}/v1/completions",
            json={"model": "mini", "prompt": "x" * 1000},
            headers={"Authorization": "Bearer secret"},
            timeout=30,
        )
        assert big.status_code == 413 and "limit of 1,000 bytes" in big.json()["error"]["message"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_serve_user_errors_are_one_line(run, tmp_path, capsys):
    from lmforge.serve.cli import main

    assert main(["serve"]) == 2
    assert capsys.readouterr().err.strip() == (
        "lmforge: error: nothing to serve: give --run RUN (repeatable) and/or --human-eval FILE"
    )
    assert main(["serve", "--run", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["serve", "--human-eval", str(tmp_path / "none.sqlite")]) == 2
    assert "human evaluation file not found" in capsys.readouterr().err
    assert main(["serve", "--run", str(run), "--run", str(run)]) == 2
    assert "two models are named 'cli-model'" in capsys.readouterr().err
    assert main(["serve", "--run", str(run), "--max-request-bytes", "0"]) == 2
    assert capsys.readouterr().err.strip() == "lmforge: error: --max-request-bytes must be >= 1, got 0"
