"""One assistant reply from a chat model: the chat template in, generated text out, stopping at
the end-of-turn token. The same template and stop tokens as training (template.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmforge.chat.template import chat_stop_ids, render_chat
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import stream_text


def chat_reply(
    model: torch.nn.Module,
    tokenizer,
    messages: list[dict],
    cfg: SampleConfig,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """The assistant's next message after `messages` (cut at <|end|>, <|endoftext|>, a stop string,
    max_new_tokens or the context limit). LmforgeError if the conversation is longer than the
    model's context."""
    ids = render_chat(messages, tokenizer, add_generation_prompt=True)
    return stream_text(model, tokenizer, ids, cfg, chat_stop_ids(tokenizer), on_text)
