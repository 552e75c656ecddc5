"""Prompt templates (lmforge/chat/prompts.py) wired into generate, chat, serve and eval, plus eval's
--apply-chat-template; on tiny random runs, checking rendered token ids through the real engine."""

from __future__ import annotations

import io
import json

import pytest

from lmforge.chat.prompts import (
    PromptTemplate,
    load_template,
    prefix_messages,
    record_from_text,
    render_text,
    template_pool,
)
from lmforge.chat.template import render_chat
from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.tiny import make_tiny_run

POOL = [
    {"question": "2+2?", "answer": "4"},
    {"question": "capital of France?", "answer": "Paris"},
    {"question": "color of the sky?", "answer": "blue"},
]
GREEDY = SampleConfig(max_new_tokens=6, temperature=0.0, top_k=None, seed=None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("pt") / "tiny", block_size=128)


@pytest.fixture(scope="module")
def model(run):
    return ServedModel.load(str(run))


def write_template(folder, **over) -> str:
    (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in POOL))
    spec = {
        "system": "Answer briefly.",
        "query": "Q: {question}\nA:",
        "answer": " {answer}",
        "shots": 2,
        "seed": 7,
        "pool": "pool.jsonl",
        **over,
    }
    path = folder / "tpl.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_load_template_and_errors(tmp_path):
    t = load_template(write_template(tmp_path))
    assert t.shots == 2 and t.system == "Answer briefly." and len(template_pool(t)) == 3
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"query": "{input}", "pool": POOL[:1], "shots": 1}))
    assert template_pool(load_template(js)) == POOL[:1]
    for text, match in [
        ("query: [1", "not valid YAML"),
        ("- a\n- b", "mapping"),
        ("quary: x", "unknown"),
        ("shots: two", "integer"),
        ("shots: 2", "needs a pool"),
        ("query: 3", "string"),
        ("shots: -1", ">= 0"),
    ]:
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(LmforgeError, match=match):
            load_template(tmp_path / "bad.yaml")
    with pytest.raises(LmforgeError, match="not found"):
        load_template(tmp_path / "missing.yaml")
    assert record_from_text(t, "why?") == {"question": "why?"}
    assert record_from_text(t, '{"question": "x"}') == {"question": "x"}
    with pytest.raises(LmforgeError, match="JSON object"):
        record_from_text(PromptTemplate(query="{a} {b}"), "x")


def test_generate_with_a_k_shot_template_equals_the_rendered_prompt(run, tmp_path, capsys):
    from lmforge.cli import main

    tpl = write_template(tmp_path)
    t = load_template(tpl)
    manual = render_text(t, {"question": "3+3?"}, template_pool(t))
    assert manual.startswith("Answer briefly.\n\nQ: ") and manual.count("Q: ") == 3
    opts = ["sample.temperature=0", "sample.max_new_tokens=8", "sample.num_samples=1"]
    assert main(["generate", "--run", str(run), "--prompt", "3+3?", "--prompt-template", tpl, *opts]) == 0
    with_template = capsys.readouterr().out
    assert main(["generate", "--run", str(run), "--prompt", manual, *opts]) == 0
    by_hand = capsys.readouterr().out
    assert with_template == by_hand and with_template.startswith(manual)


def test_served_conversations_get_the_template_unless_they_bring_a_system_message(run, tmp_path):
    t = load_template(write_template(tmp_path))
    m = ServedModel.load(str(run))
    user = [{"role": "user", "content": "3+3?"}]
    plain = m.chat_ids(user)
    m.set_prompt_template(t)
    prefix = prefix_messages(t, template_pool(t))
    assert [x["role"] for x in prefix] == ["system", "user", "assistant", "user", "assistant"]
    ids = m.chat_ids(user)
    tok = m.tokenizer
    assert ids == render_chat(prefix + user, tok, add_generation_prompt=True)
    assert ids[:2] == [tok.eot_id, tok.system_id] and ids[
        2 : 2 + len(tok.encode("Answer briefly."))
    ] == tok.encode("Answer briefly.")
    assert ids[-len(plain) + 1 :] == plain[1:]  # the request's own turns follow the template's
    own = [{"role": "system", "content": "be terse"}, *user]
    assert m.chat_ids(own) == render_chat(own, tok, add_generation_prompt=True)  # used as it is
    m.set_prompt_template(None)
    assert m.chat_ids(user) == plain


def test_chat_cli_uses_the_template(run, tmp_path, monkeypatch, model):
    from lmforge.serve import chat
    from lmforge.serve.cli import main

    tpl = write_template(tmp_path)
    out, lines, real = io.StringIO(), iter(["3+3?", "/quit"]), chat.run_repl
    # the real REPL and session, fed two lines, writing to a buffer (run_repl's
    # default stdout is bound at import)
    monkeypatch.setattr(chat, "run_repl", lambda session: real(session, read=lambda _: next(lines), out=out))
    assert (
        main(["chat", "--run", str(run), "--prompt-template", tpl, "--temperature", "0", "--max-tokens", "6"])
        == 0
    )
    t = load_template(tpl)
    ids = render_chat(
        prefix_messages(t, template_pool(t)) + [{"role": "user", "content": "3+3?"}],
        model.tokenizer,
        add_generation_prompt=True,
    )
    want = model.complete(ids, GREEDY, model.chat_stop_ids()).text
    assert want and f"model> {want}" in out.getvalue()


def test_server_chat_completion_sees_the_template(run, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from lmforge.serve.server import RunningServer, create_app

    t = load_template(write_template(tmp_path))
    m = ServedModel.load(str(run))
    m.set_prompt_template(t)
    user = [{"role": "user", "content": "3+3?"}]
    ids = render_chat(prefix_messages(t, template_pool(t)) + user, m.tokenizer, add_generation_prompt=True)
    with RunningServer(create_app([m])) as srv:

        def ask(messages):
            r = httpx.post(
                f"{srv.url}/v1/chat/completions",
                timeout=120,
                json={"model": m.name, "messages": messages, "max_tokens": 6, "temperature": 0},
            )
            assert r.status_code == 200, r.text
            return r.json()

        got = ask(user)
        assert got["usage"]["prompt_tokens"] == len(ids)
        assert got["choices"][0]["message"]["content"] == m.complete(ids, GREEDY, m.chat_stop_ids()).text
        own = [{"role": "system", "content": "be terse"}, *user]
        assert ask(own)["usage"]["prompt_tokens"] == len(render_chat(own, m.tokenizer, True))


# ---- eval


def _eval_run(tmp_path):
    from tests.test_eval_cli import make_run, write_task

    return make_run(tmp_path / "r"), write_task(tmp_path)


def test_eval_accepts_prompt_template_and_apply_chat_template(tmp_path):
    from lmforge.eval.cli import main

    run, task = _eval_run(tmp_path)
    tpl = write_template(tmp_path, instructions="Pick one.")
    assert (
        main(
            [
                "--run",
                str(run),
                "--task-file",
                str(task),
                "--prompt-template",
                tpl,
                "--log-samples",
                "--no-cache",
                "--output",
                str(tmp_path / "o1"),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "o1" / "results.json").read_text())
    assert res["settings"]["system_prompt"] == "Answer briefly.\n\nPick one."
    assert (
        main(
            [
                "--run",
                str(run),
                "--task-file",
                str(task),
                "--apply-chat-template",
                "--no-cache",
                "--output",
                str(tmp_path / "o2"),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert res["settings"]["apply_chat_template"] is True and "capitals" in res["tasks"]
    assert (
        main(
            [
                "--run",
                str(run),
                "--task-file",
                str(task),
                "--prompt-template",
                tpl,
                "--system-prompt",
                "x",
                "--output",
                str(tmp_path / "o3"),
            ]
        )
        == 2
    )


def test_apply_chat_template_scores_chat_context_ids(tmp_path):
    from lmforge.eval import loglik, runner
    from lmforge.eval.lm import LmforgeLM
    from lmforge.eval.tasks.custom import load_task_file

    run, task_file = _eval_run(tmp_path)
    lm = LmforgeLM.from_run(run)
    task = load_task_file(task_file)
    seen = []
    real = loglik.loglikelihood_tokens

    def spy(lm_, pairs, *a, **kw):  # records the pairs, scores them for real
        seen.extend(pairs)
        return real(lm_, pairs, *a, **kw)

    tok = lm.tok
    docs = task.eval_docs()
    try:
        runner.loglikelihood_tokens = spy
        loglik.loglikelihood_tokens = spy
        chat = runner.run_task(
            lm,
            task,
            num_fewshot=1,
            system_prompt="Be right.",
            apply_chat_template=True,
            progress=False,
            log_samples=True,
        )
        chat_pairs = list(seen)
        seen.clear()
        plain = runner.run_task(
            lm, task, num_fewshot=1, system_prompt="Be right.", progress=False, log_samples=True
        )
        plain_pairs = list(seen)
    finally:
        runner.loglikelihood_tokens = real
        loglik.loglikelihood_tokens = real
    assert len(chat_pairs) == len(plain_pairs) == sum(len(task.choices(d)) for d in docs)
    head = [tok.eot_id, tok.system_id] + tok.encode("Be right.") + [tok.end_id, tok.user_id]
    for ctx, cont in chat_pairs:
        assert ctx[: len(head)] == head and ctx[-1] == tok.assistant_id
        assert ctx.count(tok.user_id) == 1 and tok.assistant_id in ctx
        assert tok.decode(cont).startswith(" ")  # target_delimiter + choice, after <|assistant|>
    # the user turn is exactly the plain context without its head: shots + question in one turn
    msgs = task.build_chat_messages(docs, 1, 1234, "Be right.")
    ctxs = task.build_contexts(docs, 1, 1234, "Be right.")
    for m, c in zip(msgs, ctxs):
        assert m[0]["content"] == "Be right." and c == "Be right." + m[1]["content"]
    assert chat["samples"][0]["context"].startswith("<|endoftext|><|system|>Be right.<|end|><|user|>")
    # without the flag: unchanged (no role tokens, the plain text context)
    for ctx, _ in plain_pairs:
        assert tok.user_id not in ctx and tok.assistant_id not in ctx
    assert plain["samples"][0]["context"] == ctxs[0]
