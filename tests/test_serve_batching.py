"""Dynamic batching: requests decoded together answer exactly what each gets alone, with its own
settings, stream, usage and cancellation. The real server on loopback with the openai client, and
the scheduler in-process; tiny random runs built here. To make a batch certain, the test holds the
model's lock (as a running batch would) until every request is waiting."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from lmforge.model import ModelConfig, Transformer
from lmforge.serve.batching import batchable
from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "alpha", seed=0, block_size=64)


@pytest.fixture(scope="module")
def alone(run):
    return ServedModel.load(str(run))  # max_batch 1: the unbatched reference


@pytest.fixture(scope="module")
def batched(run):
    m = ServedModel.load(str(run))
    m.max_batch = 8
    return m


def wait_until_waiting(served: ServedModel, n: int, threads=()) -> None:
    """Block until `n` requests wait for the model (the caller holds its lock, so none starts)."""
    while served.batcher is None or len(served.batcher.waiting) < n:
        assert all(t.is_alive() for t in threads), "a request ended before its batch started"
        time.sleep(0.01)


# Different prompts, lengths, settings: greedy and seeded sampling, top-k/top-p, stop strings, n.
REQUESTS = [
    {"chat": "hello there", "max_tokens": 16, "temperature": 0},
    {"chat": "tell me about the quick brown fox", "max_tokens": 9, "temperature": 1.0, "seed": 3},
    {"prompt": "the lazy", "max_tokens": 20, "temperature": 0, "stream": True},
    {"prompt": "a", "max_tokens": 12, "temperature": 1.2, "top_p": 0.9, "seed": 11, "stream": True},
    {
        "chat": "question number four, a longer one than the others",
        "max_tokens": 6,
        "temperature": 0.7,
        "seed": 5,
        "stream": True,
    },
    {"prompt": "the quick brown", "max_tokens": 25, "temperature": 0, "stop": ["o"]},
    {"chat": "n of two", "max_tokens": 8, "temperature": 1.0, "seed": 21, "n": 2},
]


def expected(model: ServedModel, req: dict) -> list:
    """(text, finish_reason, completion tokens) of each choice, computed alone in-process."""
    out = []
    for c in range(req.get("n", 1)):
        seed = req["seed"] + c if "seed" in req else None
        cfg = SampleConfig(
            max_new_tokens=req["max_tokens"],
            temperature=req["temperature"],
            top_k=None,
            top_p=req.get("top_p"),
            seed=seed,
            stop=req.get("stop", []),
        )
        if "chat" in req:
            r = model.complete(
                model.chat_ids([{"role": "user", "content": req["chat"]}]), cfg, model.chat_stop_ids()
            )
        else:
            r = model.complete(model.text_ids(req["prompt"]), cfg)
        out.append((r.text, r.finish_reason, r.completion_tokens))
    return out


def ask(url: str, req: dict) -> list:
    """The same over HTTP: (text, finish_reason, completion tokens) of each choice."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
    kw = {k: v for k, v in req.items() if k not in ("chat", "prompt", "stream")}
    stream = req.get("stream", False)
    if "chat" in req:
        r = client.chat.completions.create(
            model="alpha",
            messages=[{"role": "user", "content": req["chat"]}],
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
            **kw,
        )
    else:
        r = client.completions.create(
            model="alpha",
            prompt=req["prompt"],
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
            **kw,
        )
    if not stream:
        texts = [c.message.content if "chat" in req else c.text for c in r.choices]
        return [(t, c.finish_reason, None) for t, c in zip(texts, r.choices)], r.usage.completion_tokens
    texts, finish, used = {}, {}, None
    for ch in r:
        if ch.usage:
            used = ch.usage.completion_tokens
        for c in ch.choices:
            piece = c.delta.content if "chat" in req else c.text
            texts[c.index] = texts.get(c.index, "") + (piece or "")
            finish[c.index] = c.finish_reason or finish.get(c.index)
    return [(texts[i], finish[i], None) for i in sorted(texts)], used


def test_concurrent_requests_in_one_batch_equal_each_alone(run, alone, batched):
    want = [expected(alone, req) for req in REQUESTS]
    got: list = [None] * len(REQUESTS)
    with RunningServer(create_app([batched])) as srv:

        def worker(i: int) -> None:
            got[i] = ask(srv.url, REQUESTS[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(REQUESTS))]
        rows = sum(req.get("n", 1) for req in REQUESTS)
        with batched.lock:  # the model is busy: every request waits, then all go in one batch
            for t in threads:
                t.start()
            wait_until_waiting(batched, rows, threads)
        for t in threads:
            t.join(600)
    assert batched.batcher.sizes[rows] >= 1  # they really were decoded together
    for (choices, used), w in zip(got, want):
        assert [(text, finish) for text, finish, _ in choices] == [(text, finish) for text, finish, _ in w]
        assert used == sum(n for _, _, n in w)  # usage counts each row's own tokens
    assert any(f == "stop" for choices, _ in got for _, f, _ in choices)  # the stop string ended a row early


def test_a_row_that_ends_is_answered_before_its_batch_ends(alone, batched):
    """A short row's request returns while a long row of its batch is still decoding; a cancelled
    row ends there, and neither changes the other rows."""
    ids = [alone.text_ids("short one"), alone.text_ids("the long row goes on"), alone.text_ids("cancel me")]
    cfgs = [SampleConfig(max_new_tokens=n, temperature=0, top_k=None) for n in (2, 30, 30)]
    want = [alone.complete(i, c, stop_ids=[]) for i, c in zip(ids, cfgs)]
    gate, pieces = threading.Event(), []

    def hold_long_row() -> bool:  # the long row's "client" answers only once the test lets it
        if len(long.tokens) >= 4:
            gate.wait()
        return False

    with batched.lock:
        short = batched.submit(ids[0], cfgs[0], stop_ids=[])
        long = batched.submit(ids[1], cfgs[1], stop_ids=[], cancelled=hold_long_row)
        cancelled = batched.submit(
            ids[2], cfgs[2], stop_ids=[], on_text=pieces.append, cancelled=lambda: len(cancelled.tokens) >= 5
        )
        wait_until_waiting(batched, 3)
    assert short.wait() == want[0]
    assert not long.done.is_set()  # held at its 4th token: the batch is still running
    gate.set()
    assert long.wait() == want[1]
    r = cancelled.wait()
    assert (r.finish_reason, r.completion_tokens) == ("cancelled", 5)
    assert r.token_ids == want[2].token_ids[:5] and "".join(pieces) == r.text


def test_requests_that_do_not_fit_one_context_wait_for_the_next_batch(alone, batched):
    """Left padding puts a short prompt's tokens after the longest prompt's: a 50-token prompt and a
    short prompt with a long budget do not fit 64 positions together, so they run one after the other."""
    tok = alone.tokenizer
    ids = [tok.encode("a") * 50, alone.text_ids("hi")]
    cfgs = [
        SampleConfig(max_new_tokens=10, temperature=0, top_k=None),
        SampleConfig(max_new_tokens=60, temperature=1.0, top_k=None, seed=1),
    ]
    want = [alone.complete(i, c) for i, c in zip(ids, cfgs)]
    before = batched.batcher.sizes.copy() if batched.batcher else Counter()
    with batched.lock:
        rows = [batched.submit(i, c) for i, c in zip(ids, cfgs)]
        wait_until_waiting(batched, 2)
    assert [r.wait() for r in rows] == want
    assert batched.batcher.sizes - before == Counter({1: 2})


def test_a_client_leaving_its_stream_does_not_disturb_its_batch(alone, batched):
    chat = [{"role": "user", "content": "stay"}]
    want = alone.complete(
        alone.chat_ids(chat),
        SampleConfig(max_new_tokens=30, temperature=0, top_k=None),
        alone.chat_stop_ids(),
    ).text
    got, first = [], []

    def stay() -> None:
        r = client.chat.completions.create(model="alpha", messages=chat, max_tokens=30, temperature=0)
        got.append(r.choices[0].message.content)

    def leave() -> None:  # read the first chunk and hang up
        with httpx.stream(
            "POST",
            f"{srv.url}/v1/completions",
            timeout=300,
            json={"model": "alpha", "prompt": "go", "max_tokens": 60, "stream": True},
        ) as r:
            first.append(next(r.iter_lines()))

    with RunningServer(create_app([batched])) as srv:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0, timeout=300)
        threads = [threading.Thread(target=stay), threading.Thread(target=leave)]
        with batched.lock:
            for t in threads:
                t.start()
            wait_until_waiting(batched, 2, threads)
        for t in threads:
            t.join(600)
        assert got == [want] and first[0].startswith("data: ")
        r = client.completions.create(model="alpha", prompt="still there", max_tokens=3, temperature=0)
        assert r.usage.completion_tokens == 3


def test_max_batch_1_and_unbatchable_models_run_one_at_a_time(alone):
    assert alone.batcher is None  # every request above ran without a scheduler
    enc_dec = Transformer(
        ModelConfig(kind="encoder-decoder", vocab_size=32, block_size=16, n_layer=1, n_embd=16, n_head=2)
    )
    assert not batchable(enc_dec) and batchable(alone.model)
