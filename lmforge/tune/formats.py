"""SFT records in, conversations out.

Every supported format becomes a list of conversations, each a list of
`{"role": "system" | "user" | "assistant", "content": str}` messages (template.py's input):

- alpaca: {"instruction", "input"?, "output"} -> user: instruction (+ input), assistant: output
- dolly: {"instruction", "context"?, "response", "category"?} -> the same, context as the input
- prompt_response: {"prompt", "response" or "completion"} -> user: prompt, assistant: response
- gsm8k: {"question", "answer"} -> user: question, assistant: answer (calculator <<...>> marks removed)
- self_instruct: {"instruction", "instances": [{"input", "output"}]} -> one conversation per instance
- messages: {"messages": [{"role", "content"}, ...]} -> as is
- sharegpt: {"conversations": [{"from": human/gpt/system, "value"}]} -> roles renamed
- oasst: OpenAssistant tree {"message_tree_id", "prompt": {text, role, replies: [...]}} -> root-to-leaf
  paths

Files are JSONL (.jsonl, .jsonl.gz) or a JSON array (.json). A malformed record (bad JSON, a
missing field, a wrong type, an unknown role, empty content, turns out of order) is reported with
its line number (record index for a JSON array) and skipped, or ends the load (on_bad="error").
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.chat.template import check_messages
from lmforge.errors import LmforgeError


class RecordError(ValueError):
    """What is wrong with one record (the loader adds where it is)."""


@dataclass
class BadRecord:
    where: str  # "file.jsonl:12"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Loaded:
    conversations: list[list[dict]] = field(default_factory=list)
    record_of: list[int] = field(default_factory=list)  # per conversation: index of its record
    bad: list[BadRecord] = field(default_factory=list)
    records: int = 0  # records read (good + bad)
    format: str = ""


# ---------------------------------------------------------------- reading records


def read_records(path: str | Path, kind: str = "SFT") -> Iterator[tuple[str, Any]]:
    """(where, record or RecordError) for each record of a JSONL / JSONL.gz / JSON-array file of
    `kind` records (named in errors)."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"{kind} data file not found: {path}")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise LmforgeError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, list):
            raise LmforgeError(f"{path}: a .json {kind} file must hold an array of records")
        for i, rec in enumerate(data):
            yield f"{path.name} record {i}", rec
        return
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path.name}:{n}", json.loads(line)
                except ValueError as e:
                    yield f"{path.name}:{n}", RecordError(f"not valid JSON ({e.msg} at column {e.colno})")
                except RecursionError:  # json's decoder recurses once per nesting level
                    yield f"{path.name}:{n}", RecordError("JSON nested too deeply")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise LmforgeError(f"cannot read {path}: {e}") from None


# ---------------------------------------------------------------- one record -> conversations


def _str(rec: dict, key: str, required: bool = True) -> str:
    if key not in rec or rec[key] is None:
        if required:
            raise RecordError(f"missing field '{key}'")
        return ""
    v = rec[key]
    if not isinstance(v, str):
        raise RecordError(f"field '{key}' is {type(v).__name__}, not a string")
    return v


def _instruction(instruction: str, extra: str, answer: str) -> list[list[dict]]:
    user = instruction.strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
    return [[{"role": "user", "content": user}, {"role": "assistant", "content": answer}]]


def from_alpaca(r: dict) -> list[list[dict]]:
    return _instruction(_str(r, "instruction"), _str(r, "input", False), _str(r, "output"))


def from_dolly(r: dict) -> list[list[dict]]:
    return _instruction(_str(r, "instruction"), _str(r, "context", False), _str(r, "response"))


def from_prompt_response(r: dict) -> list[list[dict]]:
    answer = _str(r, "response") if "response" in r else _str(r, "completion")
    return [[{"role": "user", "content": _str(r, "prompt")}, {"role": "assistant", "content": answer}]]


_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations (Cobbe et al. 2021, §4)


def from_gsm8k(r: dict) -> list[list[dict]]:
    answer = _CALC.sub("", _str(r, "answer"))
    return [[{"role": "user", "content": _str(r, "question")}, {"role": "assistant", "content": answer}]]


def from_self_instruct(r: dict) -> list[list[dict]]:
    instruction = _str(r, "instruction")
    instances = r.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RecordError("field 'instances' must be a non-empty list of {input, output}")
    out = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise RecordError(f"instances[{i}] is not an object")
        try:
            out += _instruction(instruction, _str(inst, "input", False), _str(inst, "output"))
        except RecordError as e:
            raise RecordError(f"instances[{i}]: {e}") from None
    return out


def from_messages(r: dict) -> list[list[dict]]:
    msgs = r.get("messages")
    if not isinstance(msgs, list):
        raise RecordError("field 'messages' must be a list of {role, content}")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RecordError(f"messages[{i}] is not an object")
        if "role" not in m:
            raise RecordError(f"messages[{i}] has no role")
    return [[{"role": m["role"], "content": m.get("content")} for m in msgs]]


SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


def from_sharegpt(r: dict) -> list[list[dict]]:
    turns = r.get("conversations")
    if not isinstance(turns, list):
        raise RecordError("field 'conversations' must be a list of {from, value}")
    msgs = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t:
            raise RecordError(f"conversations[{i}] has no 'from'")
        role = SHAREGPT_ROLES.get(str(t["from"]).lower())
        if role is None:
            raise RecordError(f"conversations[{i}] is from {t['from']!r}; expected human, gpt or system")
        msgs.append({"role": role, "content": t.get("value")})
    return [msgs]


def from_oasst(r: dict, paths: str = "best") -> list[list[dict]]:
    """Flatten an OpenAssistant message tree into root-to-leaf conversations. Deleted messages and
    those that failed review are cut off with their subtrees; a path ending in a prompter message
    drops that last message (it has no answer). paths="best" follows the best-ranked reply (rank 0
    first, unranked last) at each step: one conversation per tree."""
    root = r.get("prompt")
    if not isinstance(root, dict):
        raise RecordError("field 'prompt' must be the tree's root message object")
    roles = {"prompter": "user", "assistant": "assistant"}

    def usable(node: dict) -> bool:
        return not node.get("deleted", False) and node.get("review_result", True) is not False

    def walk(node: Any, prefix: list[dict]) -> list[list[dict]]:
        if not isinstance(node, dict):
            raise RecordError("a message of the tree is not an object")
        if node.get("role") not in roles:
            raise RecordError(f"message {node.get('message_id', '?')} has role {node.get('role')!r}")
        text = node.get("text")
        if not isinstance(text, str):
            raise RecordError(f"message {node.get('message_id', '?')} has no text")
        path = prefix + [{"role": roles[node["role"]], "content": text}]
        replies = [c for c in (node.get("replies") or []) if isinstance(c, dict) and usable(c)]
        if paths == "best" and replies:
            replies = [min(replies, key=lambda c: (c.get("rank") is None, c.get("rank") or 0))]
        if not replies:
            return [path[:-1] if path[-1]["role"] == "user" else path]
        return [conv for c in replies for conv in walk(c, path)]

    if not usable(root):
        return []
    unique = {json.dumps(c, sort_keys=True): c for c in walk(root, []) if c}  # cut prompter leaves
    return list(unique.values())  # can leave the same path twice


CONVERTERS = {
    "alpaca": from_alpaca,
    "dolly": from_dolly,
    "prompt_response": from_prompt_response,
    "gsm8k": from_gsm8k,
    "self_instruct": from_self_instruct,
    "messages": from_messages,
    "sharegpt": from_sharegpt,
    "oasst": from_oasst,
}


def detect_format(record: Any) -> str | None:
    """The format a record's keys say it is in, or None."""
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if "message_tree_id" in keys or isinstance(record.get("prompt"), dict):
        return "oasst"
    if {"instruction", "instances"} <= keys:
        return "self_instruct"
    if {"instruction", "response"} <= keys:
        return "dolly"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"question", "answer"} <= keys:
        return "gsm8k"
    if "prompt" in keys and keys & {"response", "completion"}:
        return "prompt_response"
    return None


def check_conversation(msgs: list[dict]) -> None:
    """Template checks, then turn order: [system] user assistant user assistant ..., with at least
    one assistant message to learn from."""
    try:
        check_messages(msgs)
    except LmforgeError as e:
        raise RecordError(str(e)) from None
    turns = msgs[1:] if msgs[0]["role"] == "system" else msgs
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise RecordError(
                f"turn {i} is {m['role']}, expected {expected} (turns must alternate, user first)"
            )
    if not any(m["role"] == "assistant" for m in turns):
        raise RecordError("no assistant message to learn from")


def convert(
    record: Any,
    fmt: str,
    oasst_paths: str = "best",
    system_prompt: str | None = None,
) -> list[list[dict]]:
    """One record -> its checked conversations; RecordError says what is wrong."""
    if isinstance(record, RecordError):
        raise record
    if not isinstance(record, dict):
        raise RecordError(f"record is {type(record).__name__}, not a JSON object")
    convs = from_oasst(record, oasst_paths) if fmt == "oasst" else CONVERTERS[fmt](record)
    out = []
    for conv in convs:
        if system_prompt and conv and conv[0].get("role") != "system":
            conv = [{"role": "system", "content": system_prompt}] + conv
        check_conversation(conv)
        out.append(conv)
    return out


def load_conversations(
    path: str | Path,
    fmt: str = "auto",
    on_bad: str = "skip",
    oasst_paths: str = "best",
    system_prompt: str | None = None,
) -> Loaded:
    """Read a file of SFT records. Bad records are collected in `.bad` (on_bad="skip") or raise
    LmforgeError naming the first one (on_bad="error"). No usable conversation at all is an error."""
    if fmt != "auto" and fmt not in CONVERTERS:
        raise LmforgeError(f"unknown SFT format '{fmt}'; choose from auto, {', '.join(CONVERTERS)}")
    out = Loaded(format=fmt)
    for where, rec in read_records(path):
        out.records += 1
        if out.format == "auto":
            detected = detect_format(rec)
            if detected is not None:
                out.format = detected
        try:
            if out.format == "auto":
                raise RecordError("cannot tell the format from its keys; set format=")
            convs = convert(rec, out.format, oasst_paths, system_prompt)
            out.conversations += convs
            out.record_of += [out.records - 1] * len(convs)
        except RecordError as e:
            bad = BadRecord(where, str(e))
            if on_bad == "error":
                raise LmforgeError(
                    f"malformed SFT record at {bad} (on_bad_record=skip skips such records)"
                ) from None
            out.bad.append(bad)
    if not out.conversations:
        first = f"; first problem: {out.bad[0]}" if out.bad else ""
        raise LmforgeError(f"{path}: no usable conversation in {out.records} records{first}")
    return out
