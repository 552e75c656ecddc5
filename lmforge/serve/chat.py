"""`lmforge chat`: a conversation with a model in the terminal.

The whole conversation goes through the chat template (lmforge/chat/template.py) on every turn,
exactly as in training and serving, and the reply streams as it is generated. When the
conversation no longer fits the model's context, the oldest exchanges (a user message and its
reply) are dropped and the user is told so; the system prompt and the newest message always stay.
The prompt keeps room for `min(max_tokens, context // 4)` reply tokens (REPLY_SHARE).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import Completion, ContextLengthError, ServedModel

REPLY_SHARE = 4  # the prompt leaves at least 1/REPLY_SHARE of the context (or max_tokens) for the reply

HELP = """commands:
  /reset            forget the conversation (the system prompt stays)
  /system TEXT      set the system prompt and start over; /system alone removes it
  /set KEY VALUE    sampling: temperature, top_p, top_k, max_tokens, seed ('none' turns it off)
  /settings         show the system prompt and the sampling settings
  /history          show the conversation so far
  /help             this list
  /quit             leave (Ctrl-D too)"""

SETTINGS = {  # /set key -> (SampleConfig field, parser)
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "max_tokens": ("max_new_tokens", int),
    "seed": ("seed", int),
}


class ChatSession:
    """One conversation: the messages so far, the system prompt and the sampling settings."""

    def __init__(
        self,
        model: ServedModel,
        sample: SampleConfig,
        system: str | None = None,
        notice: Callable[[str], None] = print,
    ) -> None:
        sample.validate()
        self.model = model
        self.sample = sample
        self.system = system or None
        self.messages: list[dict] = []  # user and assistant turns, oldest first
        self.notice = notice

    def conversation(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def reserve(self) -> int:
        return max(1, min(self.sample.max_new_tokens, self.model.block_size // REPLY_SHARE))

    def fit(self) -> list[int]:
        """Prompt ids of the conversation, dropping the oldest exchanges until it fits."""
        limit = self.model.block_size - self.reserve()
        head = [{"role": "system", "content": self.system}] if self.system else []
        alone = len(self.model.chat_ids(head + self.messages[-1:]))
        if alone > limit:  # checked first, so an impossible message drops no history
            raise ContextLengthError(
                f"this message needs {alone} tokens with the chat template"
                f"{' and the system prompt' if self.system else ''}, but the model's context is "
                f"{self.model.block_size} tokens and {self.reserve()} are kept for the reply; "
                f"shorten it{' or the system prompt' if self.system else ''}"
            )
        ids = self.model.chat_ids(self.conversation())
        dropped, dropped_tokens = 0, 0
        while len(ids) > limit and len(self.messages) > 1:
            before = len(ids)
            self.messages.pop(0)  # the oldest user message ...
            if len(self.messages) > 1 and self.messages[0]["role"] == "assistant":
                self.messages.pop(0)  # ... and its reply
            dropped += 1
            ids = self.model.chat_ids(self.conversation())
            dropped_tokens += before - len(ids)
        if dropped:
            self.notice(
                f"[context full: dropped the {dropped} oldest exchange{'s' if dropped > 1 else ''} "
                f"({dropped_tokens} tokens) to fit the model's {self.model.block_size}-token context]"
            )
        return ids

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> Completion:
        """Add the user's message, generate the reply (streamed to on_text) and keep both."""
        self.messages.append({"role": "user", "content": text})
        try:
            ids = self.fit()
            result = self.model.complete(ids, self.sample, self.model.chat_stop_ids(), on_text)
        except BaseException:  # too long, or Ctrl-C mid-reply: the message was not answered
            self.messages.pop()
            raise
        if result.text.strip():  # the template has no empty turns
            self.messages.append({"role": "assistant", "content": result.text})
        return result

    def set(self, key: str, value: str) -> str:
        if key not in SETTINGS:
            raise LmforgeError(f"unknown setting {key!r}; settings: {', '.join(SETTINGS)}")
        field, parse = SETTINGS[key]
        try:
            parsed = None if value.lower() in ("none", "off") else parse(value)
        except ValueError:
            raise LmforgeError(f"{key} takes a {parse.__name__}, got {value!r}") from None
        if parsed is None and field in ("temperature", "max_new_tokens"):
            raise LmforgeError(f"{key} cannot be turned off")
        new = replace(self.sample, **{field: parsed})
        new.validate()
        self.sample = new
        return f"{key} = {parsed}"

    def describe(self) -> str:
        s = self.sample
        return (
            f"system: {self._system_line()}\n"
            f"temperature {s.temperature}, top_p {s.top_p}, top_k {s.top_k}, max_tokens "
            f"{s.max_new_tokens}, seed {s.seed}; context {self.model.block_size} tokens"
        )

    def _system_line(self) -> str:
        """What the model sees before the turns: this session's system prompt, else the prompt
        template's system message and shots (which only apply without a system prompt)."""
        if self.system:
            return self.system
        prefix = self.model.prompt_prefix
        if not prefix:
            return "(none)"
        shots = sum(m["role"] == "user" for m in prefix)
        system = next((m["content"] for m in prefix if m["role"] == "system"), None)
        parts = [system if system else "(none)", "(from the prompt template"]
        parts[-1] += (
            f", with {shots} example exchange{'s' if shots != 1 else ''} before the conversation)"
            if shots
            else ")"
        )
        return " ".join(parts)


def run_repl(session: ChatSession, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
    """Read lines until /quit or end of input; commands start with '/', anything else is sent."""

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    def stream(piece: str) -> None:
        out.write(piece)
        out.flush()

    session.notice = say
    say(
        f"lmforge chat with {session.model.name} ({session.model.block_size}-token context). "
        "/help for commands, /quit or Ctrl-D to leave."
    )
    while True:
        try:
            line = read("you> ")
        except EOFError:
            say("")
            return
        except KeyboardInterrupt:
            say("\n(/quit or Ctrl-D to leave)")
            continue
        line = line.strip()
        if not line:
            continue
        replying = False
        try:
            if line.startswith("/"):
                if not command(session, line, say):
                    return
                continue
            out.write("model> ")
            out.flush()
            replying = True
            result = session.send(line, stream)
            say("")
            if result.finish_reason == "length":
                reason = (
                    "the model's context is full"
                    if result.completion_tokens < session.sample.max_new_tokens
                    else f"max_tokens={session.sample.max_new_tokens}; /set max_tokens N for longer"
                )
                say(f"[reply cut: {reason}]")
        except KeyboardInterrupt:
            say("\n[interrupted: reply discarded]" if replying else "")
        except LmforgeError as e:
            say(("\n" if replying else "") + f"[error: {e}]")


def command(session: ChatSession, line: str, say: Callable[[str], None]) -> bool:
    """Run one /command; False means leave."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit", "/q"):
        return False
    if name == "/reset":
        session.messages.clear()
        say("[conversation cleared]")
    elif name == "/system":
        session.system = arg or None
        session.messages.clear()
        say(
            f"[system prompt set: {arg}; conversation cleared]"
            if arg
            else "[system prompt removed; conversation cleared]"
        )
    elif name == "/set":
        key, _, value = arg.partition(" ")
        if not value.strip():
            raise LmforgeError("usage: /set KEY VALUE, e.g. /set temperature 0.7")
        say(f"[{session.set(key, value.strip())}]")
    elif name == "/settings":
        say(session.describe())
    elif name == "/history":
        for m in session.conversation():
            say(f"{m['role']}: {m['content']}")
        if not session.messages:
            say("(no messages yet)")
    elif name == "/help":
        say(HELP)
    else:
        raise LmforgeError(f"unknown command {name}; /help lists them")
    return True
