"""A loaded model ready to answer: token-id prompts in, streamed text out.

`ServedModel` is what the chat REPL, the HTTP server and the human-evaluation preparation share:
the model and tokenizer of a run, the chat template (lmforge/chat/template.py, the same layout
training used) and `complete()`. With `max_batch` 1 (the default; `lmforge serve --max-batch`
sets it) `complete()` runs `generate_tokens` under a lock, which queues concurrent requests, so
two requests never share a KV cache, RNG or the model's train/eval flag. With `max_batch` > 1
the requests go to the model's `Batcher` (lmforge/serve/batching.py), which decodes those
waiting together, each with its own settings, generator and stream.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from lmforge.chat.prompts import apply_prefix, prefix_messages, template_pool
from lmforge.chat.template import chat_stop_ids, render_chat
from lmforge.errors import LmforgeError
from lmforge.serve.batching import Batcher, Completion, Row, batchable, run_alone
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import TextStream, model_config
from lmforge.serve.sampling import token_budget
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import load_model

__all__ = ["Completion", "ContextLengthError", "ServedModel", "find_tokenizer", "parse_run_spec"]


class ContextLengthError(LmforgeError):
    """The prompt alone is longer than the model's context: `tokens` long (`at_least` that many)."""

    def __init__(self, message: str, tokens: int | None = None, at_least: bool = False) -> None:
        super().__init__(message)
        self.tokens, self.at_least = tokens, at_least


def check_text(text: str, what: str = "the text") -> str:
    """`text`, or an LmforgeError if it holds a lone surrogate (not Unicode: no tokenizer takes it)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise LmforgeError(
                f"{what} holds a lone UTF-16 surrogate ({text[e.start]!r} at character "
                f"{e.start}), which is not Unicode text"
            ) from None
    return text


def find_tokenizer(path: Path) -> Path:
    """tokenizer.json of a run dir, or of the run a checkpoint dir belongs to."""
    for p in (path, path.parent.parent):
        if (p / "tokenizer.json").is_file():
            return p / "tokenizer.json"
    raise LmforgeError(f"no tokenizer.json found in {path} or its run directory")


def parse_run_spec(spec: str) -> tuple[str, Path]:
    """'name=path' or 'path' (the name is then the run directory's name)."""
    name, sep, path = spec.partition("=")
    if sep and name and path and not Path(spec).exists():
        return name, Path(path)
    p = Path(spec)
    if p.name.startswith("step_"):  # a checkpoint dir: name it after its run
        return f"{p.parent.parent.name}@{p.name}", p
    return p.resolve().name, p


class ServedModel:
    def __init__(self, name: str, model: torch.nn.Module, tokenizer, path: Path | None = None) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.mcfg = model_config(model)
        if self.mcfg.kind != "decoder":
            raise LmforgeError(f"model {name!r} is a {self.mcfg.kind}; serving and chat need a decoder model")
        self.lock = threading.Lock()
        self.prompt_prefix: list[
            dict
        ] = []  # a prompt template's system message and shots (set_prompt_template)
        self.compile = (
            False  # torch.compile every request's decoding step (sample.compile; `serve --compile`)
        )
        self.max_batch = 1  # requests decoded together at most (`serve --max-batch`); 1 = one at a time
        self.batcher: Batcher | None = None  # started by the first request with max_batch > 1
        self._batcher_lock = threading.Lock()

    @classmethod
    def load(cls, spec: str, device: str = "cpu") -> ServedModel:
        """Load a run ('runs/x', 'name=runs/x' or a checkpoint dir) for serving."""
        name, path = parse_run_spec(spec)
        if not path.exists():
            raise LmforgeError(f"run directory not found: {path}")
        model, _ = load_model(path, device=device)
        return cls(name, model, Tokenizer.load(find_tokenizer(path)), path)

    @property
    def block_size(self) -> int:
        return self.mcfg.block_size

    # ---- prompts

    def set_prompt_template(self, template) -> None:
        """Prepend `template`'s system prompt and few-shot turns (drawn once, seeded, so every
        conversation sees the same ones) to every conversation without its own system message."""
        self.prompt_prefix = (
            prefix_messages(template, template_pool(template)) if template is not None else []
        )

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        """The conversation in the chat template, ending in <|assistant|> for the reply. With a
        prompt template, its system message and shots come first unless the conversation has its
        own system message (then it is used as it is)."""
        for i, m in enumerate(messages):
            if isinstance(m.get("content"), str):
                check_text(m["content"], f"message {i}")
        return render_chat(
            apply_prefix(self.prompt_prefix, list(messages)), self.tokenizer, add_generation_prompt=True
        )

    def chat_stop_ids(self) -> list[int]:
        return chat_stop_ids(self.tokenizer)

    def text_ids(self, prompt: str) -> list[int]:
        """A plain-text prompt; an empty one starts a fresh document (end-of-text), as generate() does."""
        return self.tokenizer.encode(check_text(prompt, "the prompt")) or [self.tokenizer.eot_id]

    def check_length(self, prompt_ids: Sequence[int]) -> None:
        if len(prompt_ids) > self.block_size:
            raise ContextLengthError(
                f"the prompt is {len(prompt_ids)} tokens, longer than model "
                f"{self.name!r}'s context of {self.block_size} tokens",
                len(prompt_ids),
            )

    @functools.cached_property
    def max_token_chars(self) -> int | None:
        """The most characters of text one token stands for (its byte-level spelling has one
        character per byte, an added token its content); None when the tokenizer normalizes text
        first, which could shrink it."""
        spec = json.loads(self.tokenizer.to_str())
        vocab = (spec.get("model") or {}).get("vocab")
        if spec.get("normalizer") is not None or not isinstance(vocab, dict) or not vocab:
            return None
        added = [len(t.get("content", "")) for t in spec.get("added_tokens") or []]
        return max(max(map(len, vocab)), *added, 1)

    def check_text_length(self, chars: int) -> None:
        """Refuse, before tokenizing it, a text too long for the context whatever it says: `chars`
        characters need at least chars / max_token_chars tokens. Tokenizing megabytes takes seconds
        to minutes, and a prompt that cannot fit should not cost them."""
        per_token = self.max_token_chars
        if per_token and chars > self.block_size * per_token:
            tokens = -(-chars // per_token)
            raise ContextLengthError(
                f"the prompt is at least {tokens} tokens ({chars} characters), longer "
                f"than model {self.name!r}'s context of {self.block_size} tokens",
                tokens,
                at_least=True,
            )

    # ---- generation

    def complete(
        self,
        prompt_ids: Sequence[int],
        cfg: SampleConfig,
        stop_ids: Sequence[int] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Completion:
        """Generate a continuation of `prompt_ids`, streaming text pieces to `on_text`.

        Stops at a token in `stop_ids` (default: end-of-text), a stop string in cfg.stop,
        cfg.max_new_tokens, the context limit, or when `cancelled()` turns true (a client left).
        Waits for earlier requests to this model to finish first (or for their batch to).
        """
        return self.submit(prompt_ids, cfg, stop_ids, on_text, cancelled).wait()

    def submit(
        self,
        prompt_ids: Sequence[int],
        cfg: SampleConfig,
        stop_ids: Sequence[int] | None = None,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Row:
        """`complete` in two halves: queue the request and return its Row, whose `wait()` gives the
        Completion; several submitted at once can share a batch. With max_batch 1, or a model
        the batch path cannot decode, it runs here and now, one request at a time."""
        self.check_length(prompt_ids)
        cfg.validate()
        stop_ids = [self.tokenizer.eot_id] if stop_ids is None else list(stop_ids)
        if self.compile and not cfg.compile:
            cfg = replace(cfg, compile=True)
        budget = token_budget(cfg.max_new_tokens, len(prompt_ids), self.block_size)  # as generate_tokens'
        row = Row(
            list(prompt_ids),
            cfg,
            set(stop_ids),
            TextStream(self.tokenizer, cfg.stop, on_text),
            budget,
            cancelled,
        )
        if self.max_batch > 1 and batchable(self.model):
            if self.batcher is None:
                with self._batcher_lock:  # two first requests must not start two batchers
                    if self.batcher is None:
                        self.batcher = Batcher(self.model, self.lock, lambda: self.max_batch)
            return self.batcher.submit(row)
        with self.lock:
            # OpenMP keeps its thread count per OS thread, and a new thread (a server worker)
            # starts at the default, one per core, whatever torch.set_num_threads said in the
            # main thread; re-applying torch's setting here makes it hold in every thread.
            torch.set_num_threads(torch.get_num_threads())
            run_alone(self.model, row)
        return row
