"""`lmforge chat`: the conversation logic, and the REPL driven for real through a pseudo-terminal."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

import pytest

from lmforge.errors import LmforgeError
from lmforge.serve.chat import ChatSession
from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ContextLengthError, ServedModel
from lmforge.tiny import make_tiny_run

GREEDY = SampleConfig(max_new_tokens=8, temperature=0.0, top_k=None, seed=None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("chat") / "tiny", block_size=48)


@pytest.fixture(scope="module")
def model(run):
    return ServedModel.load(str(run))


def test_multi_turn_uses_the_chat_template_with_history(model):
    s = ChatSession(model, GREEDY, system="be kind")
    r1 = s.send("hi")
    r2 = s.send("more")
    assert [m["role"] for m in s.conversation()] == ["system", "user", "assistant", "user", "assistant"]
    want = model.chat_ids(
        [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": r1.text},
            {"role": "user", "content": "more"},
        ]
    )
    assert r2.prompt_tokens == len(want)
    again = model.complete(want, GREEDY, model.chat_stop_ids())
    assert again.text == r2.text


def test_oldest_turns_are_dropped_and_said_so(model):
    notes = []
    s = ChatSession(model, GREEDY, notice=notes.append)
    for i in range(6):
        s.send(f"message {i} with a few words")
    assert any("dropped the" in n and "oldest exchange" in n and "48-token context" in n for n in notes)
    assert s.messages[-2]["content"] == "message 5 with a few words"
    assert s.messages[0]["content"] != "message 0 with a few words"
    assert len(model.chat_ids(s.conversation())) <= model.block_size


def test_a_message_too_long_for_the_context_is_refused_and_history_kept(model):
    s = ChatSession(model, GREEDY)
    s.send("hello")
    before = list(s.messages)
    with pytest.raises(ContextLengthError, match="context is 48 tokens"):
        s.send("word " * 60)
    assert s.messages == before


def test_settings(model):
    s = ChatSession(model, GREEDY)
    assert s.set("temperature", "0.5") == "temperature = 0.5"
    s.set("top_p", "0.9")
    s.set("top_k", "none")
    s.set("max_tokens", "4")
    assert (s.sample.temperature, s.sample.top_p, s.sample.top_k, s.sample.max_new_tokens) == (
        0.5,
        0.9,
        None,
        4,
    )
    with pytest.raises(LmforgeError, match="top_p"):
        s.set("top_p", "2")
    with pytest.raises(LmforgeError, match="unknown setting"):
        s.set("temprature", "1")
    with pytest.raises(LmforgeError, match="float"):
        s.set("temperature", "hot")
    assert s.sample.top_p == 0.9  # a rejected value changes nothing


def test_settings_show_the_prompt_templates_system_and_shots(model):
    from lmforge.chat.prompts import PromptTemplate

    assert ChatSession(model, GREEDY).describe().startswith("system: (none)\n")
    template = PromptTemplate(
        query="Q: {q}",
        answer=" {a}",
        shots=2,
        system="Answer briefly.",
        pool=[{"q": "1+1", "a": "2"}, {"q": "2+2", "a": "4"}, {"q": "3+3", "a": "6"}],
    )
    model.set_prompt_template(template)
    try:
        assert (
            ChatSession(model, GREEDY)
            .describe()
            .startswith(
                "system: Answer briefly. (from the prompt template, "
                "with 2 example exchanges before the conversation)\n"
            )
        )
        own = ChatSession(model, GREEDY, system="Be terse.")  # its own system prompt replaces the template's
        assert own.describe().startswith("system: Be terse.\n")
    finally:
        model.set_prompt_template(None)


class Terminal:
    """A child process on a pseudo-terminal: type lines, wait for text on the screen."""

    def __init__(self, argv: list[str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.screen = ""

    def expect(self, pattern: str, timeout: float = 90) -> re.Match:
        end = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.screen)
            if m:
                self.screen = self.screen[m.end() :]
                return m
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} did not appear; screen: {self.screen[-800:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data and self.proc.poll() is not None:
                    raise AssertionError(
                        f"{pattern!r} did not appear before exit; screen: {self.screen[-800:]!r}"
                    )
                self.screen += data.decode("utf-8", "replace").replace("\r\n", "\n")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(30)
        finally:
            os.close(self.master)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_repl_in_a_terminal(run, model):
    term = Terminal(
        [
            sys.executable,
            "-m",
            "lmforge.serve.cli",
            "chat",
            "--run",
            str(run),
            "--temperature",
            "0",
            "--max-tokens",
            "8",
        ]
    )
    try:
        term.expect(r"lmforge chat with tiny \(48-token context\)")
        term.expect("you> ")
        term.send("hello")
        reply = term.expect(r"model> (.*)\n").group(1)
        want = model.complete(
            model.chat_ids([{"role": "user", "content": "hello"}]), GREEDY, model.chat_stop_ids()
        )
        assert reply == want.text
        term.expect(r"\[reply cut: max_tokens=8")
        term.send("/set temperature 0.7")
        term.expect(r"\[temperature = 0.7\]")
        term.send("/set temperature 0")
        term.send("/system you are terse")
        term.expect(r"\[system prompt set: you are terse; conversation cleared\]")
        term.send("/settings")
        term.expect(r"system: you are terse\ntemperature 0.0, top_p 0.95, top_k None, max_tokens 8")
        for i in range(4):
            term.send(f"message {i} with a few words")
        term.expect(
            r"\[context full: dropped the 1 oldest exchange \(\d+ tokens\) to fit the model's "
            r"48-token context\]"
        )
        term.send("/history")
        term.expect(r"system: you are terse\nuser: message \d with a few words")
        term.send("/reset")
        term.expect(r"\[conversation cleared\]")
        term.send("/history")
        term.expect(r"system: you are terse\n\(no messages yet\)")
        term.send("word " * 60)
        term.expect(r"\[error: this message needs \d+ tokens")
        term.send("/nonsense")
        term.expect(r"\[error: unknown command /nonsense")
        term.send("/quit")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_chat_reports_a_missing_run_in_one_line(tmp_path, capsys):
    from lmforge.serve.cli import main

    assert main(["chat", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"lmforge: error: run directory not found: {tmp_path / 'nope'}"]
