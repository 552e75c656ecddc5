"""Fuzz the server from its own OpenAPI schema (schemathesis): every operation gets requests that
fit the schema and requests that break it, sent to uvicorn on 127.0.0.1 with a tiny random model
and a human-evaluation file. No answer may be a 5xx, every error must be an OpenAI-style body, and
the server must still answer afterwards. Bounded: a fixed number of examples per operation and
mode, derandomized so a CI run is reproducible. (schemathesis's own pytest plugin is not used:
it does not run under pytest 9; its case strategies are, with hypothesis.)"""

from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from hypothesis import HealthCheck, Phase, given, settings

from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.human_eval import prepare
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run

KEY = "fuzz-key"
EXAMPLES = 12  # per operation and generation mode (positive, negative)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    runs = [make_tiny_run(root / name, seed=k, block_size=32) for k, name in enumerate(("alpha", "beta"))]
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"prompt {i}"}) for i in range(2)), encoding="utf-8")
    db = prepare(
        [str(r) for r in runs],
        prompts,
        root / "human.sqlite",
        SampleConfig(max_new_tokens=3, temperature=0.0, top_k=None),
        log=lambda m: None,
    )
    alpha = ServedModel.load(str(runs[0]))
    alpha.max_batch = 8
    with RunningServer(create_app([alpha], api_key=KEY, human_db=db, max_request_bytes=2**20)) as srv:
        yield srv


# Every operation of the schema; a route added to the server fails `test_every_operation_is_fuzzed`
# until it is listed here.
OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name}"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/inspect/api"),
    ("GET", "/human/api/next"),
    ("POST", "/human/api/vote"),
    ("GET", "/human/api/tally"),
    ("GET", "/human/api/results"),
]


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def test_every_operation_is_fuzzed(api_schema):
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


def check(response) -> None:
    """No 5xx; an error is an OpenAI-style body."""
    request = f"{response.request.method} {response.request.url}"
    assert response.status_code < 500, (request, response.text[:500])
    if response.status_code >= 400:
        err = response.json().get("error")
        assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, (
            request,
            response.text,
        )
        assert isinstance(err["message"], str) and err["message"]


# Operations whose inputs no request can break: none at all, or a path segment (any text is a string).
UNBREAKABLE = {
    ("GET", "/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name}"),
    ("GET", "/human/api/results"),
}
CASES = [
    (m, p, mode)
    for m, p in OPERATIONS
    for mode in ("positive", "negative")
    if mode == "positive" or (m, p) not in UNBREAKABLE
]


@pytest.mark.parametrize("method,path,mode", CASES)
def test_no_request_gets_a_5xx_or_a_bare_error(api_schema, method, path, mode):
    from schemathesis.generation.modes import GenerationMode

    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def fuzz(case) -> None:
        check(case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=60))

    fuzz()


def test_the_server_still_answers_after_the_fuzzing(fuzz_server):
    assert httpx.get(f"{fuzz_server.url}/health").json()["status"] == "ok"
    r = httpx.post(
        f"{fuzz_server.url}/v1/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
        json={"model": "alpha", "prompt": "the quick", "max_tokens": 4, "temperature": 0},
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
