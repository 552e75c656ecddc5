"""Preference pairs in: a prompt (chat messages ending in a user turn), a chosen and a rejected reply.

Every record becomes one `PreferencePair`. The format is told per record from its keys:

| format                  | record                                                                  |
|-------------------------|-------------------------------------------------------------------------|
| trl_standard            | {"prompt": str, "chosen": str, "rejected": str}                          |
| trl_conversational      | {"prompt": [messages], "chosen": [assistant msg], "rejected": [...]}     |
| trl_implicit            | {"chosen": str, "rejected": str}: the shared text prefix is the prompt   |
| trl_implicit_conversational | {"chosen": [messages], "rejected": [messages]}: shared turns are the prompt |
| hh_rlhf                 | {"chosen", "rejected"}: "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts |
| ultrafeedback           | {"prompt": str, "chosen"/"rejected": [user msg, assistant msg],          |
|                         | "score_chosen", "score_rejected", "prompt_id"?}                          |
| lmforge_votes           | `lmforge human export`'s records: trl_conversational + "vote_id",        |
|                         | "models", "preference"?                                                  |

Sources for the field names: TRL's "Dataset formats and types" guide
(https://huggingface.co/docs/trl/dataset_formats, preference type: standard, conversational and
implicit-prompt forms); the Anthropic/hh-rlhf dataset card (each line "a pair of texts, one
'chosen' and one 'rejected'", transcripts of "\\n\\nHuman:" / "\\n\\nAssistant:" turns, Bai et al.
2022); the HuggingFaceH4/ultrafeedback_binarized card (prompt, prompt_id, chosen, rejected,
messages, score_chosen, score_rejected; chosen and rejected hold the whole exchange, user turn
included).

One rule for all of them: both sides become whole conversations (prompt + reply, or the reply
lists as given when they already start with the prompt), the turns they share are the prompt, and
what follows must be exactly one assistant message on each side. So the prompt always ends in a
user turn, turns alternate (formats.check_conversation), and the replies are non-empty and
differ. A record that fails is malformed: reported with its line number and skipped, or the load
ends (on_error="fatal"), as the SFT formats do. Records that are well formed but state no strict
preference (an exported tie or both-bad vote, UltraFeedback's equal scores) are excluded and
counted apart: DPO needs one answer better than the other.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.chat.template import check_messages
from lmforge.errors import LmforgeError
from lmforge.tune.formats import BadRecord, RecordError, check_conversation, read_records

MAX_RECORD_CHARS = 1_000_000  # text of one pair; a longer one is surely not a chat exchange
STRICT = ("chosen",)  # "preference" values that state one; export writes "chosen", "tie", "both_bad"
ON_ERROR = ("fatal", "skip")


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[dict]  # chat messages {"role", "content"} ending with a user turn
    chosen: str  # the preferred final assistant reply
    rejected: str  # the other one
    line: int = 0  # 1-based line in the source file (record index + 1 for a JSON array)


@dataclass
class PreferenceData:
    pairs: list[PreferencePair] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)  # malformed records, skipped
    excluded: Counter = field(default_factory=Counter)  # well-formed, no strict preference: why -> count
    formats: Counter = field(default_factory=Counter)  # format -> pairs read
    records: int = 0  # records read (pairs + bad + excluded)

    def summary(self) -> str:
        """One line: what was read, skipped and excluded, and why."""
        kinds = ", ".join(f"{n} {f}" for f, n in sorted(self.formats.items()))
        out = f"{len(self.pairs)} preference pairs ({kinds or 'none'}) from {self.records} records"
        if self.bad:
            out += f"; {len(self.bad)} malformed skipped"
        if self.excluded:
            out += "; excluded " + ", ".join(f"{n} {why}" for why, n in sorted(self.excluded.items()))
        return out


class Excluded(Exception):
    """A well-formed record that states no strict preference."""


# ---------------------------------------------------------------- record -> messages


def _messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list):
        raise RecordError(f"field '{key}' is {type(value).__name__}, not a string or a list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise RecordError(f"{key}[{i}] is {type(m).__name__}, not a {{role, content}} object")
        if set(m) - {"role", "content"}:  # messages may carry no tool calls or other extras we would drop
            extra = sorted(set(m) - {"role", "content"})
            raise RecordError(f"{key}[{i}] has fields {extra}; expected only role and content")
    return [{"role": m.get("role"), "content": m.get("content")} for m in value]


HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def is_hh_transcript(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip(" \n").startswith("Human:") and "\n\nAssistant:" in text


def parse_hh(text: str, key: str) -> list[dict]:
    """An HH-RLHF transcript -> messages; each turn's text stripped of surrounding whitespace."""
    text = text.lstrip(" \n")
    parts = HH_TURN.split(text)  # ["", "Human", " q", "Assistant", " a", ...]
    if parts[0].strip():
        raise RecordError(f"field '{key}' has text before its first Human: turn")
    return [{"role": HH_ROLES[role], "content": body.strip()} for role, body in zip(parts[1::2], parts[2::2])]


def _split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Implicit-prompt strings: the shared prefix, cut back to a word boundary, is the prompt."""
    k = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        k += 1

    def mid_word(s: str) -> bool:
        return 0 < k < len(s) and not s[k - 1].isspace() and not s[k].isspace()

    while k > 0 and (mid_word(chosen) or mid_word(rejected)):
        k -= 1
    return chosen[:k].strip(), chosen[k:].lstrip(), rejected[k:].lstrip()


def _full(prompt: list[dict], reply: Any, key: str) -> list[dict]:
    """prompt + reply as one conversation; a reply list that already starts with the prompt is it."""
    if isinstance(reply, str):
        return prompt + [{"role": "assistant", "content": reply}]
    msgs = _messages(reply, key)
    return msgs if prompt and msgs[: len(prompt)] == prompt else prompt + msgs


def detect(rec: dict) -> str:
    keys = set(rec)
    if "chosen" not in keys or "rejected" not in keys:
        missing = [k for k in ("chosen", "rejected") if k not in keys]
        raise RecordError(
            f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
            " (a preference record has chosen and rejected, and prompt unless it is implicit)"
        )
    if "vote_id" in keys:
        return "lmforge_votes"
    if {"score_chosen", "score_rejected"} & keys:
        return "ultrafeedback"
    if "prompt" not in keys:
        if is_hh_transcript(rec["chosen"]) and is_hh_transcript(rec["rejected"]):
            return "hh_rlhf"
        return "trl_implicit" if isinstance(rec["chosen"], str) else "trl_implicit_conversational"
    return "trl_standard" if isinstance(rec["prompt"], str) else "trl_conversational"


def to_pair(rec: Any, line: int = 0) -> tuple[str, PreferencePair]:
    """(format, pair) of one record; RecordError says what is wrong, Excluded why it is left out."""
    if isinstance(rec, RecordError):
        raise rec
    if not isinstance(rec, dict):
        raise RecordError(f"record is {type(rec).__name__}, not a JSON object")
    fmt = detect(rec)
    chosen, rejected = rec["chosen"], rec["rejected"]
    for key, v in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(v, (str, list)):
            raise RecordError(f"field '{key}' is {type(v).__name__}, not a string or a list of messages")
    if fmt == "hh_rlhf":
        full_c, full_r = parse_hh(chosen, "chosen"), parse_hh(rejected, "rejected")
    elif fmt == "trl_implicit":
        if not isinstance(rejected, str):
            raise RecordError("'chosen' is a string but 'rejected' is not")
        prompt, chosen, rejected = _split_text(chosen, rejected)
        if not prompt:
            raise RecordError("chosen and rejected share no prompt text (and there is no 'prompt' field)")
        user = [{"role": "user", "content": prompt}]
        full_c, full_r = _full(user, chosen, "chosen"), _full(user, rejected, "rejected")
    else:
        p = rec.get("prompt", [])
        prompt = [{"role": "user", "content": p}] if isinstance(p, str) else _messages(p, "prompt")
        if prompt:
            try:
                check_messages(prompt)
            except LmforgeError as e:
                raise RecordError(f"prompt: {e}") from None
            if prompt[-1]["role"] != "user":
                raise RecordError(f"the prompt's last turn is {prompt[-1]['role']!r}, not 'user'")
        full_c, full_r = _full(prompt, chosen, "chosen"), _full(prompt, rejected, "rejected")
    n = 0
    while n < min(len(full_c), len(full_r)) and full_c[n] == full_r[n]:
        n += 1
    if full_c == full_r:
        raise RecordError("chosen and rejected are the same")
    tail_c, tail_r = full_c[n:], full_r[n:]
    if len(tail_c) != 1 or len(tail_r) != 1:
        raise RecordError(
            "chosen and rejected must differ only in their last assistant turn "
            f"(they differ from turn {n}: {len(tail_c)} vs {len(tail_r)} turns after it)"
        )
    prompt = full_c[:n]
    if not prompt or prompt[-1].get("role") != "user":
        raise RecordError(
            "the prompt must end with a user turn"
            + (f"; its last turn is {prompt[-1].get('role')!r}" if prompt else "; there is none")
        )
    for side, tail in (("chosen", tail_c), ("rejected", tail_r)):
        if tail[0].get("role") != "assistant":
            raise RecordError(f"the {side} reply is a {tail[0].get('role')!r} turn, not an assistant turn")
        check_conversation(prompt + tail)  # roles, string and non-empty content, turn order
    c, r = tail_c[0]["content"], tail_r[0]["content"]
    if c.strip() == r.strip():
        raise RecordError("chosen and rejected replies are the same")
    size = sum(len(m["content"]) for m in prompt) + len(c) + len(r)
    if size > MAX_RECORD_CHARS:
        raise RecordError(f"pair is {size} characters, over the {MAX_RECORD_CHARS} limit")
    if fmt == "ultrafeedback":
        _check_scores(rec)
    if "preference" in rec and rec["preference"] not in STRICT:
        raise Excluded(str(rec["preference"]))
    return fmt, PreferencePair(prompt=prompt, chosen=c, rejected=r, line=line)


def _check_scores(rec: dict) -> None:
    sc, sr = rec.get("score_chosen"), rec.get("score_rejected")
    for key, v in (("score_chosen", sc), ("score_rejected", sr)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise RecordError(f"field '{key}' is {type(v).__name__}, not a number")
    if sc < sr:
        raise RecordError(f"score_chosen {sc} is below score_rejected {sr}")
    if sc == sr:
        raise Excluded("equal scores")


def _line(where: str) -> int:
    """1-based line from read_records' "file.jsonl:12" or "file.json record 3"."""
    head, _, tail = where.rpartition(":")
    if head and tail.isdigit():
        return int(tail)
    return int(where.rsplit(" ", 1)[-1]) + 1


def read_preferences(path: str | Path, *, on_error: str = "fatal") -> PreferenceData:
    """Read a JSONL / JSONL.gz / JSON-array file of preference records. Malformed records are
    collected in `.bad` (on_error="skip") or end the load with an LmforgeError naming the first one
    (on_error="fatal"). No usable pair at all is an error either way."""
    if on_error not in ON_ERROR:
        raise LmforgeError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"preference data file not found: {path}")
    out = PreferenceData()
    for where, rec in read_records(path, kind="preference"):
        out.records += 1
        try:
            fmt, pair = to_pair(rec, _line(where))
        except Excluded as e:
            out.excluded[str(e)] += 1
            continue
        except RecordError as e:
            bad = BadRecord(where, str(e))
            if on_error == "fatal":
                raise LmforgeError(
                    f"malformed preference record at {bad} (on_bad_record=skip skips such records)"
                ) from None
            out.bad.append(bad)
            continue
        out.formats[fmt] += 1
        out.pairs.append(pair)
    if not out.pairs:
        first = f"; first problem: {out.bad[0]}" if out.bad else ""
        why = f"; excluded {dict(out.excluded)}" if out.excluded else ""
        raise LmforgeError(f"{path}: no usable preference pair in {out.records} records{first}{why}")
    return out
