"""The OpenAI-compatible server, for real: uvicorn on 127.0.0.1, talked to with the official
`openai` client (streaming included) and raw HTTP for malformed requests, on tiny random runs."""

from __future__ import annotations

import json
import threading

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run

KEY = "test-key"
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = ServedModel.load(str(make_tiny_run(root / "alpha", seed=0, block_size=64)))
    b = ServedModel.load(f"beta={make_tiny_run(root / 'b', seed=1, block_size=64)}")
    a.max_batch = (
        8  # alpha batches concurrent requests (lmforge/serve/batching.py), beta runs them one at a time
    )
    return a, b


@pytest.fixture(scope="module")
def server(models):
    with RunningServer(create_app(list(models), api_key=KEY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def post(server, path: str, body, key: str | None = KEY) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=120)


def expected_chat(model: ServedModel, messages, max_tokens: int, **sample) -> str:
    """The reply computed in-process, without the server: what the server must return."""
    cfg = SampleConfig(max_new_tokens=max_tokens, top_k=None, **{"temperature": 1.0, **sample})
    return model.complete(model.chat_ids(messages), cfg, model.chat_stop_ids()).text


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == ["alpha", "beta"]
    assert client.models.retrieve("beta").id == "beta"
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "models": ["alpha", "beta"]}


def test_completion_usage_and_greedy_equals_in_process(client, models):
    r = client.completions.create(model="alpha", prompt="the quick brown", max_tokens=12, **GREEDY)
    alpha = models[0]
    ids = alpha.text_ids("the quick brown")
    want = alpha.complete(ids, SampleConfig(max_new_tokens=12, temperature=0, top_k=None))
    assert r.choices[0].text == want.text and r.choices[0].text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == len(ids) + 12
    assert r.object == "text_completion" and r.model == "alpha"


def test_chat_completion_and_stream_agree(client, models):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    r = client.chat.completions.create(model="beta", messages=messages, max_tokens=15, **GREEDY)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected_chat(models[1], messages, 15, temperature=0)
    assert r.usage.prompt_tokens == len(models[1].chat_ids(messages))
    assert r.usage.completion_tokens == 15

    chunks = list(
        client.chat.completions.create(
            model="beta",
            messages=messages,
            max_tokens=15,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # streamed, not sent in one piece
    assert "".join(pieces) == r.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 15 and not chunks[-1].choices


def test_completion_stream(client):
    full = client.completions.create(model="alpha", prompt="hello", max_tokens=10, **GREEDY).choices[0].text
    stream = client.completions.create(model="alpha", prompt="hello", max_tokens=10, stream=True, **GREEDY)
    assert "".join(c.choices[0].text for c in stream) == full


def test_seed_temperature_top_p_and_n(client, models):
    messages = [{"role": "user", "content": "tell me"}]
    kw = {"model": "alpha", "messages": messages, "max_tokens": 20, "temperature": 1.2, "top_p": 0.9}
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == expected_chat(models[0], messages, 20, temperature=1.2, top_p=0.9, seed=7)
    r = client.chat.completions.create(seed=7, n=3, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.choices[0].message.content == a  # choice i uses seed + i
    assert len({c.message.content for c in r.choices}) > 1
    assert r.usage.completion_tokens == 60


def test_stop_sequences(client):
    full = (
        client.completions.create(model="alpha", prompt="the lazy", max_tokens=30, **GREEDY).choices[0].text
    )
    stop = full[10:13]
    r = client.completions.create(
        model="alpha", prompt="the lazy", max_tokens=30, stop=[stop, "\x00"], **GREEDY
    )
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="alpha", prompt="the lazy", max_tokens=30, stop=stop, stream=True, **GREEDY
    )
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_end_token_stops_the_reply(models):
    alpha = models[0]
    ids = alpha.chat_ids([{"role": "user", "content": "hi"}])
    cfg = SampleConfig(max_new_tokens=10, temperature=0, top_k=None)
    first = alpha.complete(ids, cfg)
    token = alpha.tokenizer.encode(first.text)[0]
    r = alpha.complete(ids, cfg, stop_ids=[token])  # as if the model had emitted <|end|>
    assert (r.text, r.completion_tokens, r.finish_reason) == ("", 0, "stop")


def test_concurrent_requests_are_not_interleaved(server, client, models):
    """8 clients at once, greedy and seeded sampling, streaming and not: each answer equals the one
    computed alone, so no request saw another's KV cache, RNG or tokens."""
    jobs = [(f"question number {i}", i % 2 == 0, i % 3 == 0) for i in range(8)]
    want = [
        expected_chat(
            models[0],
            [{"role": "user", "content": q}],
            16,
            **({"temperature": 1.0, "seed": 100 + i} if sampled else {"temperature": 0}),
        )
        for i, (q, _, sampled) in enumerate(jobs)
    ]
    got: list = [None] * len(jobs)

    def ask(i: int) -> None:
        q, stream, sampled = jobs[i]
        kw = {"temperature": 1.0, "seed": 100 + i} if sampled else GREEDY
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
        r = c.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": q}], max_tokens=16, stream=stream, **kw
        )
        got[i] = (
            "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices)
            if stream
            else r.choices[0].message.content
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == want


def test_api_key(server):
    body = {"model": "alpha", "prompt": "x", "max_tokens": 1}
    for key in (None, "wrong"):
        r = post(server, "/v1/completions", body, key=key)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key


@pytest.mark.parametrize(
    "path,body,status,param,code",
    [
        ("/v1/completions", "{not json", 400, None, "invalid_json"),
        ("/v1/completions", "[1, 2]", 400, None, None),
        ("/v1/completions", {"prompt": "x"}, 400, "model", None),
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model",
            "model_not_found",
        ),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "temperature": 3}, 400, "temperature", None),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "top_p": 0}, 400, "top_p", None),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "max_tokens": 0}, 400, "max_tokens", None),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "n": 99}, 400, "n", None),
        (
            "/v1/completions",
            {"model": "alpha", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
            400,
            "stop",
            None,
        ),
        ("/v1/completions", {"model": "alpha", "prompt": "x", "temprature": 1}, 400, "temprature", None),
        (
            "/v1/completions",
            {"model": "alpha", "prompt": "x", "presence_penalty": 1},
            400,
            "presence_penalty",
            None,
        ),
        ("/v1/completions", {"model": "alpha", "prompt": [99999]}, 400, "prompt", None),
        (
            "/v1/completions",
            {"model": "alpha", "prompt": "word " * 200},
            400,
            "prompt",
            "context_length_exceeded",
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": "word " * 200}]},
            400,
            "messages",
            "context_length_exceeded",
        ),
        ("/v1/chat/completions", {"model": "alpha", "messages": []}, 400, "messages", None),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages",
            None,
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": ""}]},
            400,
            "messages",
            None,
        ),
        (
            "/v1/chat/completions",
            {
                "model": "alpha",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
                "temperature": -1,
            },
            400,
            "temperature",
            None,
        ),
        ("/v1/nothing", {}, 404, None, "not_found"),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(
    server, client, path, body, status, param, code
):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] == code
    assert client.completions.create(model="alpha", prompt="ok", max_tokens=1, **GREEDY).choices[0].text


def test_openai_client_raises_on_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": "word " * 200}], stream=True
        )


def test_context_limit_ends_with_length(client, models):
    prompt = models[0].tokenizer.encode("a") * 50
    r = client.completions.create(model="alpha", prompt=prompt, max_tokens=500, **GREEDY)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == 50
    assert r.usage.completion_tokens == 64 - 50 + 1  # the last token is never fed back


def test_client_leaving_a_stream_does_not_break_the_server(server, client):
    with httpx.stream(
        "POST",
        f"{server.url}/v1/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "alpha", "prompt": "go", "max_tokens": 60, "stream": True},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        next(r.iter_lines())
    r = client.completions.create(model="alpha", prompt="still there", max_tokens=3, **GREEDY)
    assert r.usage.completion_tokens == 3


def test_echo_and_token_prompts(client, models):
    ids = models[0].tokenizer.encode("the quick")
    by_ids = client.completions.create(model="alpha", prompt=ids, max_tokens=5, **GREEDY)
    by_text = client.completions.create(model="alpha", prompt="the quick", max_tokens=5, echo=True, **GREEDY)
    assert by_text.choices[0].text == "the quick" + by_ids.choices[0].text


def test_completion_logprobs_score_the_prompt_and_the_tokens(client, models, server):
    """echo + logprobs (what lm-eval's local-completions and the curation perplexity filter send):
    the prompt's token log-probabilities equal the model's own, computed here by cross-entropy."""
    import torch
    import torch.nn.functional as F

    alpha = models[0]
    prompt = "the quick brown fox jumps"
    ids = alpha.text_ids(prompt)
    r = client.completions.create(model="alpha", prompt=prompt, max_tokens=3, echo=True, logprobs=2, **GREEDY)
    lp = r.choices[0].logprobs
    generated = alpha.complete(ids, SampleConfig(max_new_tokens=3, temperature=0, top_k=None)).token_ids
    full = ids + generated
    with torch.no_grad():
        logits, _ = alpha.model(torch.tensor([full[:-1]]))
    want = (-F.cross_entropy(logits[0], torch.tensor(full[1:]), reduction="none")).tolist()
    assert len(lp.tokens) == len(full) and lp.token_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
    assert "".join(lp.tokens) == r.choices[0].text  # echoed prompt + completion, token by token
    assert lp.text_offset[1] == len(lp.tokens[0])
    for k in range(1, len(full)):  # the top alternatives are at least as likely as the actual token
        assert (
            len(lp.top_logprobs[k]) <= 2 and max(lp.top_logprobs[k].values()) >= lp.token_logprobs[k] - 1e-4
        )
    # greedy: each generated token is its position's likeliest
    for k in range(len(ids), len(full)):
        assert max(lp.top_logprobs[k].values()) == pytest.approx(lp.token_logprobs[k], abs=1e-5)
    # without echo: only the generated tokens
    r2 = client.completions.create(model="alpha", prompt=prompt, max_tokens=3, logprobs=0, **GREEDY)
    assert r2.choices[0].logprobs.token_logprobs == pytest.approx(want[len(ids) - 1 :], abs=1e-4)
    assert (
        post(server, "/v1/completions", {"model": "alpha", "prompt": "hi", "logprobs": 6}).status_code == 400
    )
    bad = post(server, "/v1/completions", {"model": "alpha", "prompt": "hi", "logprobs": 1, "stream": True})
    assert bad.status_code == 400 and "stream" in bad.json()["error"]["message"]
