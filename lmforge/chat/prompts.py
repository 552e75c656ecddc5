"""Prompt templates: zero-shot and k-shot prompts with seeded example pools and system prompts.

A `PromptTemplate` says how one record (a dict such as {"question": ..., "answer": ...}) is laid
out as a query and as an answer, and how many solved examples (shots) precede the query. The
shots are drawn from a pool with a seeded RNG, so the same (seed, query index) always gets the
same shots; the query itself is never one of its own shots (Brown et al. 2020, §2: examples are
drawn from the training set, the query from the evaluation set).

Two renderings of the same prompt, one per kind of model:

- `render_text`: one string for a base model (`generate`, eval):
      [system]\\n\\n[instructions]\\n\\n shot_1 \\n\\n ... shot_k \\n\\n query
- `render_messages`: chat messages for a chat model (`chat`, the server): the system prompt (and
  instructions) as the system message, each shot as a user turn and an assistant turn, then the
  query as the last user turn (the few-shot-as-dialogue layout of chat evaluation harnesses).
  Pass them to template.render_chat.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError


@dataclass
class PromptTemplate:
    query: str = "{input}"  # a record's query, e.g. "Question: {question}\nAnswer:"
    answer: str = " {output}"  # what follows a query in a solved example, e.g. " {answer}"
    shots: int = 0  # k: solved examples before the query (0 = zero-shot)
    seed: int = 1234  # draws the shots
    system: str | None = None  # a system prompt
    instructions: str | None = None  # a task description before the shots
    separator: str = "\n\n"  # between blocks of the text form
    pool: str | list | None = (
        None  # the shots' pool: a .jsonl path (relative to the template file) or records
    )

    def fields(self) -> set[str]:
        return {f for part in (self.query, self.answer) for _, f, _, _ in string.Formatter().parse(part) if f}

    def validate(self) -> None:
        if not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0:
            raise LmforgeError(f"prompt shots must be >= 0, got {self.shots}")
        try:
            self.fields()
        except ValueError as e:
            raise LmforgeError(f"bad prompt template: {e}") from None


def fill(template: str, record: dict) -> str:
    try:
        return template.format_map(record)
    except KeyError as e:
        raise LmforgeError(
            f"the prompt template uses {{{e.args[0]}}} but the record has only "
            f"{', '.join(sorted(record)) or 'no fields'}"
        ) from None
    except (ValueError, IndexError) as e:
        raise LmforgeError(f"bad prompt template {template!r}: {e}") from None


def load_pool(path: str | Path) -> list[dict]:
    """Example records, one JSON object per line."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"example pool not found: {path}")
    pool = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                raise LmforgeError(f"{path}:{n}: not valid JSON") from None
            if not isinstance(rec, dict):
                raise LmforgeError(f"{path}:{n}: not a JSON object")
            pool.append(rec)
    return pool


def draw_shots(
    pool: list[dict], k: int, seed: int, index: int = 0, exclude: dict | None = None
) -> list[dict]:
    """k examples from `pool` for query number `index`: deterministic in (seed, index), distinct,
    never `exclude` (the query's own record)."""
    if k == 0:
        return []
    candidates = [r for r in pool if r is not exclude and r != exclude]
    if len(candidates) < k:
        raise LmforgeError(f"{k}-shot prompts need {k} examples but the pool has {len(candidates)}")
    return random.Random(f"{seed}:{index}").sample(candidates, k)


def render_text(t: PromptTemplate, record: dict, pool: list[dict] | None = None, index: int = 0) -> str:
    """The prompt as one string for a base model; the model's answer continues it."""
    t.validate()
    blocks = [b for b in (t.system, t.instructions) if b]
    blocks += [
        fill(t.query, s) + fill(t.answer, s) for s in draw_shots(pool or [], t.shots, t.seed, index, record)
    ]
    blocks.append(fill(t.query, record))
    return t.separator.join(blocks)


def render_messages(
    t: PromptTemplate,
    record: dict,
    pool: list[dict] | None = None,
    index: int = 0,
) -> list[dict]:
    """The prompt as chat messages; the model answers as the assistant."""
    t.validate()
    system = "\n\n".join(b for b in (t.system, t.instructions) if b)
    messages = [{"role": "system", "content": system}] if system else []
    for s in draw_shots(pool or [], t.shots, t.seed, index, record):
        messages += [
            {"role": "user", "content": fill(t.query, s).strip()},
            {"role": "assistant", "content": fill(t.answer, s).strip()},
        ]
    messages.append({"role": "user", "content": fill(t.query, record).strip()})
    return messages


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """`messages` with `system` as their system prompt (replacing one already there); None keeps them."""
    if not system:
        return list(messages)
    rest = messages[1:] if messages and messages[0].get("role") == "system" else messages
    return [{"role": "system", "content": system}, *rest]


TEMPLATE_KEYS = ("query", "answer", "shots", "seed", "system", "instructions", "separator", "pool")


def load_template(path: str | Path) -> PromptTemplate:
    """A PromptTemplate from a YAML or JSON file whose keys are PromptTemplate's fields, e.g.

        system: You are a careful assistant.
        query: "Question: {question}\nAnswer:"
        answer: " {answer}"
        shots: 2
        seed: 7
        pool: examples.jsonl      # or a list of records; a path is relative to this file

    Every problem (missing file, bad YAML, unknown key, wrong type) is an LmforgeError naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"prompt template not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LmforgeError(f"{path}: not valid YAML or JSON: {e}") from None
    if not isinstance(data, dict):
        raise LmforgeError(f"{path}: a prompt template is a mapping of {', '.join(TEMPLATE_KEYS)}")
    unknown = sorted(set(data) - set(TEMPLATE_KEYS))
    if unknown:
        raise LmforgeError(
            f"{path}: unknown prompt template key(s) {', '.join(map(str, unknown))}; "
            f"expected {', '.join(TEMPLATE_KEYS)}"
        )
    for key in ("query", "answer", "system", "instructions", "separator"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise LmforgeError(f"{path}: {key} must be a string, got {type(data[key]).__name__}")
    for key in ("shots", "seed"):
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            raise LmforgeError(f"{path}: {key} must be an integer, got {data[key]!r}")
    pool = data.get("pool")
    if isinstance(pool, str):
        p = Path(pool)
        data["pool"] = str(p if p.is_absolute() else path.parent / p)
    elif pool is not None and not (isinstance(pool, list) and all(isinstance(r, dict) for r in pool)):
        raise LmforgeError(f"{path}: pool must be a .jsonl path or a list of records")
    t = PromptTemplate(**data)
    try:
        t.validate()
    except LmforgeError as e:
        raise LmforgeError(f"{path}: {e}") from None
    if t.shots and not template_pool(t):
        raise LmforgeError(f"{path}: shots: {t.shots} needs a pool of examples")
    return t


def template_pool(t: PromptTemplate) -> list[dict]:
    """The template's example records (empty without a pool)."""
    if t.pool is None:
        return []
    return list(t.pool) if isinstance(t.pool, list) else load_pool(t.pool)


def record_from_text(t: PromptTemplate, text: str) -> dict:
    """The record a command-line prompt stands for: a JSON object is the record itself; any other
    text fills the query's only field (a query with several fields needs a JSON record)."""
    if text.lstrip().startswith("{"):
        try:
            rec = json.loads(text)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            return rec
    qfields = sorted({f for _, f, _, _ in string.Formatter().parse(t.query) if f})
    if len(qfields) > 1:
        raise LmforgeError(
            f"the prompt template's query uses {', '.join(qfields)}; give the prompt as a JSON "
            "object with those fields"
        )
    return {qfields[0]: text} if qfields else {}


def prefix_messages(t: PromptTemplate, pool: list[dict] | None = None, index: int = 0) -> list[dict]:
    """What a template puts before a conversation: its system message (system + instructions) and
    each shot as a user turn and an assistant turn (render_messages without the query)."""
    t.validate()
    system = "\n\n".join(b for b in (t.system, t.instructions) if b)
    messages = [{"role": "system", "content": system}] if system else []
    for s in draw_shots(pool or [], t.shots, t.seed, index):
        messages += [
            {"role": "user", "content": fill(t.query, s).strip()},
            {"role": "assistant", "content": fill(t.answer, s).strip()},
        ]
    return messages


def apply_prefix(prefix: list[dict], messages: list[dict]) -> list[dict]:
    """`prefix` (prefix_messages) before `messages`, unless `messages` brings its own system message:
    then the conversation is used as it is (the caller took charge of the prompt)."""
    if not prefix or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [*prefix, *messages]


def template_system(t: PromptTemplate) -> str | None:
    """The template's system prompt and instructions as one system text (None if neither)."""
    return "\n\n".join(b for b in (t.system, t.instructions) if b) or None
