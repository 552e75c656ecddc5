"""The chat template: one token layout for training, generation, serving and export.

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": str}`
(an optional system message first). It becomes

    <|endoftext|> [<|system|> text <|end|>] <|user|> text <|end|> <|assistant|> text <|end|> ...

- `<|endoftext|>` opens it: pre-training put that token before every document, so the model
  starts a conversation as it starts a fresh document.
- Each turn is its role token, the content encoded as plain text, and `<|end|>`. Role and end
  markers are inserted by id, never parsed out of text (lmforge/tokenizer.py encodes special-token
  strings in text as bytes), so a user cannot forge a turn.
- A prompt for the model's reply ends in `<|assistant|>` (add_generation_prompt); the reply ends
  where the model emits `<|end|>` (or `<|endoftext|>`): `chat_stop_ids`.
- Training learns only the assistant's content and its closing `<|end|>` (`encode_chat`'s mask);
  the role token `<|assistant|>` is part of the prompt, as in generation.

`CHAT_TEMPLATE_JINJA` is the same layout as a Hugging Face chat template: rendering it and
tokenizing the string with special tokens parsed gives exactly `render_chat`'s ids (tested), as
long as no message contains a special-token string (the HF tokenizer would parse that as the
special token, while `render_chat` keeps it as text).
"""

from __future__ import annotations

from collections.abc import Sequence

from lmforge.errors import LmforgeError

ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE_JINJA = (
    "{{ '<|endoftext|>' }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def check_messages(messages: Sequence[dict], allow_empty_last_assistant: bool = False) -> None:
    """Raise LmforgeError naming the first problem: unknown role, non-str or empty content, a
    system message that is not first, or no messages at all."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise LmforgeError("a conversation needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise LmforgeError(f"message {i} is {type(m).__name__}, not an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise LmforgeError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            raise LmforgeError(f"message {i} is a system message; only the first message may be one")
        if not isinstance(content, str):
            raise LmforgeError(f"message {i} ({role}) content is {type(content).__name__}, not a string")
        if not content.strip():
            raise LmforgeError(f"message {i} ({role}) has empty content")


def _role_id(tokenizer, role: str) -> int:
    return {"system": tokenizer.system_id, "user": tokenizer.user_id, "assistant": tokenizer.assistant_id}[
        role
    ]


def encode_chat(
    messages: Sequence[dict],
    tokenizer,
    add_generation_prompt: bool = False,
) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and, per id, whether training puts loss on it (True for each
    assistant message's content tokens and its closing <|end|>; False for everything else)."""
    check_messages(messages)
    ids, mask = [tokenizer.eot_id], [False]
    contents = tokenizer.encode_batch([m["content"] for m in messages])
    for m, body in zip(messages, contents):
        learn = m["role"] == "assistant"
        ids += [_role_id(tokenizer, m["role"])] + body + [tokenizer.end_id]
        mask += [False] + [learn] * (len(body) + 1)
    if add_generation_prompt:
        ids.append(tokenizer.assistant_id)
        mask.append(False)
    return ids, mask


def render_chat(messages: list[dict], tokenizer, add_generation_prompt: bool) -> list[int]:
    """Token ids of `messages` in the chat layout; with add_generation_prompt the ids end in
    <|assistant|>, ready for the model to write the reply."""
    return encode_chat(messages, tokenizer, add_generation_prompt)[0]


def render_chat_text(messages: list[dict], add_generation_prompt: bool) -> str:
    """The same layout as a string (what CHAT_TEMPLATE_JINJA renders), for display and logs."""
    check_messages(messages)
    text = "<|endoftext|>" + "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return text + ("<|assistant|>" if add_generation_prompt else "")


def chat_stop_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant reply."""
    return [tokenizer.end_id, tokenizer.eot_id]
