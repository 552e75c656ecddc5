"""SFT record formats -> conversations; malformed records reported with line numbers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import needs_shared, shared_path

from lmforge.errors import LmforgeError
from lmforge.tune.formats import convert, detect_format, from_oasst, load_conversations

INSTRUCT = shared_path("instruct")
U, A = "user", "assistant"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    "record, fmt, expected",
    [
        ({"instruction": "Add", "input": "1 2", "output": "3"}, "alpaca", [(U, "Add\n\n1 2"), (A, "3")]),
        ({"instruction": "Hi", "input": "", "output": "Hello"}, "alpaca", [(U, "Hi"), (A, "Hello")]),
        (
            {"instruction": "Sum it", "context": "a text", "response": "ok", "category": "qa"},
            "dolly",
            [(U, "Sum it\n\na text"), (A, "ok")],
        ),
        ({"prompt": "p", "response": "r"}, "prompt_response", [(U, "p"), (A, "r")]),
        ({"prompt": "p", "completion": "c"}, "prompt_response", [(U, "p"), (A, "c")]),
        (
            {"question": "2+3?", "answer": "2+3 = <<2+3=5>>5\n#### 5"},
            "gsm8k",
            [(U, "2+3?"), (A, "2+3 = 5\n#### 5")],
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages",
            [("system", "s"), (U, "u"), (A, "a")],
        ),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "sharegpt",
            [(U, "q"), (A, "a")],
        ),
    ],
)
def test_formats(record, fmt, expected):
    assert detect_format(record) == fmt
    (conv,) = convert(record, fmt)
    assert [(m["role"], m["content"]) for m in conv] == expected


def test_self_instruct_gives_one_conversation_per_instance():
    rec = {
        "instruction": "Say it",
        "instances": [{"input": "a", "output": "A"}, {"input": "", "output": "B"}],
    }
    assert detect_format(rec) == "self_instruct"
    assert [c[1]["content"] for c in convert(rec, "self_instruct")] == ["A", "B"]


def test_system_prompt_added_when_missing():
    (conv,) = convert({"prompt": "p", "response": "r"}, "prompt_response", system_prompt="Be nice.")
    assert conv[0] == {"role": "system", "content": "Be nice."}


def node(role, text, replies=(), rank=None, **kw):
    return {"role": role, "text": text, "rank": rank, "replies": list(replies), **kw}


def test_oasst_tree_paths():
    tree = {
        "message_tree_id": "t",
        "prompt": node(
            "prompter",
            "Q",
            [
                node(
                    "assistant",
                    "A1",
                    [node("prompter", "Q2", [node("assistant", "A2")]), node("prompter", "dangling")],
                    rank=1,
                ),
                node("assistant", "A0", rank=0),
                node("assistant", "gone", deleted=True, rank=2),
                node("assistant", "bad", review_result=False),
            ],
        ),
    }
    all_paths = sorted([[m["content"] for m in c] for c in from_oasst(tree, "all")])
    # the dangling prompter leaf is cut off, which makes its path equal to ["Q", "A1"] (kept once)
    assert all_paths == [["Q", "A0"], ["Q", "A1"], ["Q", "A1", "Q2", "A2"]]
    assert [[m["content"] for m in c] for c in from_oasst(tree, "best")] == [["Q", "A0"]]


@needs_shared("instruct")
def test_real_files_load_without_errors():
    oasst = load_conversations(INSTRUCT / "oasst" / "en_100_tree.jsonl", oasst_paths="all", on_bad="error")
    assert oasst.format == "oasst" and oasst.records == 100 and len(oasst.conversations) > 100
    assert len(set(oasst.record_of)) == 100  # every tree gave at least one conversation
    seeds = load_conversations(INSTRUCT / "self_instruct" / "seed_tasks.jsonl", on_bad="error")
    assert seeds.format == "self_instruct" and len(seeds.conversations) >= 175


BAD = [
    {
        "messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine"}]
    },  # line 1: good
    "{not json",  # 2
    {"messages": [{"content": "no role"}]},  # 3
    {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},  # 4: empty
    {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},  # 5: wrong type
    {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},  # 6: order
    {"messages": [{"role": "user", "content": "only a question"}]},  # 7: nothing to learn
    [1, 2],  # 8: not an object
    {"messages": [{"role": "wizard", "content": "x"}]},  # 9: unknown role
]


def test_malformed_records_reported_with_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", BAD)
    got = load_conversations(path, on_bad="skip")
    assert len(got.conversations) == 1 and got.records == 9
    lines = [b.where for b in got.bad]
    assert lines == [f"d.jsonl:{n}" for n in range(2, 10)]
    reasons = " | ".join(b.reason for b in got.bad)
    for part in [
        "not valid JSON",
        "has no role",
        "empty content",
        "not a string",
        "alternate",
        "no assistant message",
        "not a JSON object",
        "role 'wizard'",
    ]:
        assert part in reasons


def test_malformed_record_fatal_when_asked(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", BAD)
    with pytest.raises(LmforgeError, match=r"d\.jsonl:2: not valid JSON"):
        load_conversations(path, on_bad="error")


def test_gz_and_json_array_and_empty(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert len(load_conversations(gz).conversations) == 1
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"instruction": "i", "output": "o"}, {"instruction": "i"}]))
    got = load_conversations(arr)
    assert got.format == "alpaca" and [b.where for b in got.bad] == ["a.json record 1"]
    with pytest.raises(LmforgeError, match="no usable conversation"):
        load_conversations(write_jsonl(tmp_path / "e.jsonl", [{"foo": 1}]))
    with pytest.raises(LmforgeError, match="not found"):
        load_conversations(tmp_path / "missing.jsonl")
