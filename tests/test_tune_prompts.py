"""Prompt templates: zero-shot, seeded k-shot, system prompts, text and chat renderings."""

from __future__ import annotations

import json

import pytest

from lmforge.chat.prompts import (
    PromptTemplate,
    draw_shots,
    load_pool,
    render_messages,
    render_text,
    with_system,
)
from lmforge.errors import LmforgeError

POOL = [{"q": f"{i}+{i}?", "a": str(2 * i)} for i in range(10)]
QA = PromptTemplate(query="Q: {q}\nA:", answer=" {a}")


def test_zero_shot_is_the_query_alone():
    assert render_text(QA, {"q": "1+2?"}) == "Q: 1+2?\nA:"
    assert render_messages(QA, {"q": "1+2?"}) == [{"role": "user", "content": "Q: 1+2?\nA:"}]


def test_k_shot_is_seeded_distinct_and_excludes_the_query():
    t = PromptTemplate(
        query="Q: {q}\nA:", answer=" {a}", shots=3, seed=7, instructions="Add.", system="Be exact."
    )
    query = POOL[0]
    text = render_text(t, query, POOL, index=5)
    assert text == render_text(t, query, POOL, index=5)  # same seed and index: same prompt
    blocks = text.split("\n\n")
    assert blocks[:2] == ["Be exact.", "Add."] and blocks[-1] == "Q: 0+0?\nA:" and len(blocks) == 6
    assert "Q: 0+0?\nA: 0" not in text  # the query is never its own shot
    shots = draw_shots(POOL, 3, 7, 5, exclude=query)
    assert len({s["q"] for s in shots}) == 3
    assert any(draw_shots(POOL, 3, 7, i, query) != shots for i in range(6, 12))  # other queries, other shots
    assert draw_shots(POOL, 3, 8, 5, query) != shots  # another seed, other shots


def test_chat_rendering_puts_shots_in_turns():
    t = PromptTemplate(query="{q}", answer="{a}", shots=2, system="Be exact.")
    msgs = render_messages(t, {"q": "5+5?"}, POOL)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Be exact." and msgs[-1]["content"] == "5+5?"
    assert (
        with_system(msgs, "New.")[0] == {"role": "system", "content": "New."}
        and len(with_system(msgs, "New.")) == 6
    )
    assert with_system(msgs[1:], None) == msgs[1:]


def test_errors(tmp_path):
    with pytest.raises(LmforgeError, match=r"uses \{question\}"):
        render_text(PromptTemplate(query="{question}"), {"q": "x"})
    with pytest.raises(LmforgeError, match="pool has 1"):
        render_text(PromptTemplate(query="{q}", shots=2), {"q": "x"}, [POOL[0]])
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(POOL[0]) + "\n[1]\n")
    with pytest.raises(LmforgeError, match="pool.jsonl:2"):
        load_pool(path)
