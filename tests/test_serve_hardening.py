"""The server under hostile input (issue 13, server items 1-6), for real: uvicorn on 127.0.0.1,
raw HTTP, tiny random runs built here. Each test is a case that once failed: a value that passed
validation and crashed its whole batch, a body that froze the event loop, a lone surrogate, a long
static name, streams capped by a thread pool, a read that grew the human-eval database."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import types

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.human_eval import HumanEvalStore, prepare
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run

KEY, RATER_KEY = "api-key", "rater-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return make_tiny_run(root / "alpha", seed=0, block_size=64), make_tiny_run(
        root / "beta", seed=1, block_size=64
    )


@pytest.fixture(scope="module")
def alpha(runs):
    m = ServedModel.load(str(runs[0]))
    m.max_batch = 8  # the default of `lmforge serve`
    return m


@pytest.fixture(scope="module")
def human_db(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("human")
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"prompt {i}"}) for i in range(3)), encoding="utf-8")
    return prepare(
        [str(r) for r in runs],
        prompts,
        root / "human.sqlite",
        SampleConfig(max_new_tokens=4, temperature=0.0, top_k=None),
        log=lambda m: None,
    )


@pytest.fixture(scope="module")
def server(alpha, human_db):
    app = create_app([alpha], api_key=KEY, human_db=human_db, rater_key=RATER_KEY, max_request_bytes=2**20)
    with RunningServer(app) as srv:
        yield srv


def post(server, path: str, body, headers=AUTH, **kw) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        timeout=120,
        headers={"Content-Type": "application/json", **headers},
        **kw,
    )


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def alone(model: ServedModel, prompt: str, **sample) -> str:
    """The text a request gets decoded alone (max_batch 1), under the model's lock (its batches wait)."""
    cfg = SampleConfig(top_k=None, **{"temperature": 1.0, **sample})
    with model.lock:
        return (
            ServedModel(model.name, model.model, model.tokenizer).complete(model.text_ids(prompt), cfg).text
        )


# ---- 1. values that passed validation and crashed the batch


@pytest.mark.parametrize("seed", [2**64, 10**30, 2**63, -(2**63) - 1])
def test_a_seed_outside_64_bits_is_a_400(server, seed):
    body = {"model": "alpha", "prompt": "hi", "max_tokens": 3, "seed": seed}
    assert assert_openai_error(post(server, "/v1/completions", body), 400)["param"] == "seed"


def test_the_extreme_seeds_and_a_tiny_temperature_decode(server, alpha):
    """2**63 - 1 and -2**63 are valid (n=2 uses seed + 1 past 2**63); temperature 1e-300 is the
    greedy limit, not a nan probability."""
    for seed in (2**63 - 1, -(2**63)):
        r = post(
            server,
            "/v1/completions",
            {"model": "alpha", "prompt": "hi", "max_tokens": 4, "seed": seed, "n": 2},
        )
        assert r.status_code == 200, r.text
    for temperature in (1e-300, 5e-324, 1e-30):
        r = post(
            server,
            "/v1/completions",
            {
                "model": "alpha",
                "prompt": "the quick",
                "max_tokens": 8,
                "temperature": temperature,
                "top_p": 0.5,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == alone(alpha, "the quick", max_new_tokens=8, temperature=0)


def test_one_failing_row_ends_only_itself_in_its_batch(alpha):
    """Eight rows decoded as one batch: one whose stream callback raises, one whose cancellation
    check raises, one with a sampling temperature that once made nan; the others answer exactly
    what they answer alone, and the failing rows raise their own errors."""
    prompts = ["the quick", "hello", "a model", "numbers: 1 2", "fox", "lazy dog", "how are", "fine"]

    def bad_stream(piece: str) -> None:
        raise RuntimeError("the client's stream broke")

    checks = []

    def bad_cancel() -> bool:  # fine when the batch is formed, broken two tokens into it
        checks.append(1)
        if len(checks) > 2:
            raise ValueError("the cancellation check broke")
        return False

    want = [
        alone(alpha, p, max_new_tokens=6 + i, temperature=0 if i == 3 else 0.9, seed=i)
        for i, p in enumerate(prompts)
    ]
    rows = []
    with alpha.lock:  # the model is busy: all eight wait, then run as one batch
        for i, p in enumerate(prompts):
            cfg = SampleConfig(
                max_new_tokens=6 + i, temperature=1e-300 if i == 3 else 0.9, top_k=None, seed=i
            )
            rows.append(
                alpha.submit(
                    alpha.text_ids(p),
                    cfg,
                    on_text=bad_stream if i == 1 else None,
                    cancelled=bad_cancel if i == 2 else None,
                )
            )
        while len(alpha.batcher.waiting) < len(prompts):
            time.sleep(0.01)
    with pytest.raises(RuntimeError, match="stream broke"):
        rows[1].wait()
    with pytest.raises(ValueError, match="cancellation check broke"):
        rows[2].wait()
    for i, row in enumerate(rows):
        if i not in (1, 2):
            assert row.wait().text == want[i], i
    assert alpha.batcher.sizes[len(prompts)] >= 1


def test_concurrent_requests_with_odd_values_all_answer(server, alpha):
    """The issue's case over HTTP: 8 requests batched together, one at temperature 1e-300, one with
    an invalid seed (400 before it is queued): 7 x 200 and 1 x 400, never 7 x 500."""
    bodies = [{"model": "alpha", "prompt": f"prompt {i}", "max_tokens": 12, "seed": i} for i in range(8)]
    bodies[2]["temperature"] = 1e-300
    bodies[5]["seed"] = 2**64
    statuses: list = [None] * 8

    def send(i: int) -> None:
        statuses[i] = post(server, "/v1/completions", bodies[i]).status_code

    with alpha.lock:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        while statuses[5] is None or alpha.batcher is None or len(alpha.batcher.waiting) < 7:
            time.sleep(0.01)
    for t in threads:
        t.join(120)
    assert statuses == [200] * 5 + [400] + [200] * 2


# ---- 2. a big body never freezes the server


def health_while(server, big_request) -> tuple[httpx.Response, list[float]]:
    """Run `big_request(release)` in a thread; it sends half its body, waits for `release`, sends
    the rest. Meanwhile (and until it is answered) time /health round trips."""
    release, answer = threading.Event(), {}
    worker = threading.Thread(target=lambda: answer.setdefault("r", big_request(release)))
    worker.start()
    times: list[float] = []
    with httpx.Client(base_url=server.url, timeout=5) as c:
        c.get("/health")  # connect first: the timings are the server's, not a TCP handshake's
        while worker.is_alive():
            t0 = time.perf_counter()
            assert c.get("/health").status_code == 200
            times.append(time.perf_counter() - t0)
            if len(times) == 3:
                release.set()  # three round trips with the body half sent, then the rest of it
            time.sleep(0.01)
    worker.join()
    return answer["r"], times


def paused_body(text_bytes: int, release: threading.Event) -> tuple:
    """A completions body with a prompt of `text_bytes` bytes, sent in two halves (the second once
    `release` is set), and its length."""
    first = b'{"model": "alpha", "max_tokens": 4, "prompt": "' + b"the quick brown fox " * (text_bytes // 40)
    second = b"jumps over the lazy " * (text_bytes // 40) + b'"}'

    def chunks():
        yield first
        release.wait(60)
        yield second

    return chunks(), len(first) + len(second)


@pytest.fixture(scope="module")
def served_process(runs):
    """`lmforge serve` in a process of its own (2 MiB limit): the timings are the server's, with
    no test thread sharing its GIL."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LMFORGE_API_KEY": KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmforge.serve.cli",
            "serve",
            "--run",
            f"alpha={runs[0]}",
            "--port",
            "0",
            "--log-level",
            "warning",
            "--max-request-bytes",
            str(2 * 2**20),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"serving on (http://127\.0\.0\.1:\d+)", line):
                yield types.SimpleNamespace(url=m.group(1))
                break
        else:
            pytest.fail(f"the server did not start: {''.join(lines)}")
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def test_a_10mb_prompt_is_refused_while_health_answers_within_100ms(served_process):
    size = 10 * 2**20

    def big(release: threading.Event) -> httpx.Response:
        body, length = paused_body(size, release)
        return httpx.post(
            f"{served_process.url}/v1/completions",
            content=body,
            timeout=120,
            headers={**AUTH, "Content-Type": "application/json", "Content-Length": str(length)},
        )

    r, times = health_while(served_process, big)
    err = assert_openai_error(r, 413)
    assert err["code"] == "request_too_large" and "2,097,152 bytes" in err["message"]
    assert len(times) >= 3 and max(times) < 0.1, times
    chunked = httpx.post(
        f"{served_process.url}/v1/completions",
        headers=AUTH,
        timeout=60,
        content=(b"x" * 2**16 for _ in range(40)),
    )  # no Content-Length: counted as it comes
    assert_openai_error(chunked, 413)
    assert httpx.get(f"{served_process.url}/health").status_code == 200


def test_a_prompt_within_the_size_limit_but_past_the_context_is_refused_untokenized(served_process):
    """A 1 MB prompt, under the limit, reaches the route: it is refused by its length alone
    (tokenizing it took over 10 s on the event loop), and /health answers meanwhile, after at most
    the pause of parsing 1 MB of JSON (on the event loop, in FastAPI; milliseconds on an idle
    machine, so the bound leaves room for a loaded one)."""
    url = served_process.url

    def big(release: threading.Event) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/completions",
            content=paused_body(2**20, release)[0],
            timeout=120,
            headers={**AUTH, "Content-Type": "application/json"},
        )

    r, times = health_while(served_process, big)
    err = assert_openai_error(r, 400)
    assert err["code"] == "context_length_exceeded" and "is at least" in err["message"]
    assert max(times) < 1.0, times
    chat = {"model": "alpha", "messages": [{"role": "user", "content": "word " * 300_000}]}
    err = assert_openai_error(post(served_process, "/v1/chat/completions", chat), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"


# ---- 3. lone surrogates, 4. long static names


SURROGATE = '"\\ud800"'  # the JSON escape of a lone high surrogate


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/completions", '{"model": "alpha", "prompt": %s}'),
        ("/v1/completions", '{"model": "alpha", "prompt": ["ok", %s]}'),
        ("/v1/completions", '{"model": "alpha", "prompt": "ok", "stop": [%s]}'),
        ("/v1/completions", '{"model": %s, "prompt": "ok"}'),
        ("/v1/completions", '{"model": "alpha", "prompt": "ok", %s: 1}'),
        ("/v1/chat/completions", '{"model": "alpha", "messages": [{"role": "user", "content": %s}]}'),
        (
            "/v1/chat/completions",
            '{"model": "alpha", "messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}]}',
        ),
        ("/human/api/vote", '{"task": %s, "choice": "tie"}'),
    ],
)
def test_a_lone_surrogate_anywhere_is_a_400(server, path, body):
    err = assert_openai_error(post(server, path, body % SURROGATE), 400)
    assert err["code"] == "invalid_json" and "lone UTF-16 surrogate" in err["message"]
    raw = '{"model": "alpha", "prompt": "\xed\xa0\x80"}'.encode("latin-1")  # the raw bytes of one
    assert_openai_error(post(server, "/v1/completions", raw), 400)
    paired = post(
        server, "/v1/completions", '{"model": "alpha", "prompt": "\\ud83d\\ude00", "max_tokens": 2}'
    )
    assert paired.status_code == 200  # a surrogate pair is one character, and fine


def test_in_process_a_lone_surrogate_is_an_error_not_a_crash(alpha):
    from lmforge.errors import LmforgeError

    with pytest.raises(LmforgeError, match="lone UTF-16 surrogate"):
        alpha.text_ids("a\ud800b")
    with pytest.raises(LmforgeError, match="message 0 holds a lone"):
        alpha.chat_ids([{"role": "user", "content": "\udcff"}])


@pytest.mark.parametrize(
    "name", ["a" * 255 + ".js", "a" * 300, "é" * 200 + ".css", "..%2Fapi.py", "common.js.bak"]
)
def test_any_static_name_that_is_not_a_file_is_a_404(server, name):
    assert_openai_error(httpx.get(f"{server.url}/static/{name}"), 404)
    assert httpx.get(f"{server.url}/static/common.js").status_code == 200


# ---- 5. streams are not capped by a thread pool


def test_sixteen_streams_run_at_once(runs):
    """16 streams against a model that batches 16: every stream is submitted (and shows its first
    chunk) while the model is still busy, so all 16 decode as one batch. A 6-thread pool (asyncio's
    default on 2 cores) used to hold back the 7th and later until earlier streams ended."""
    m = ServedModel.load(str(runs[0]))
    m.max_batch = 16
    first_chunk = [threading.Event() for _ in range(16)]
    texts = [""] * 16

    def stream(i: int) -> None:
        body = {
            "model": m.name,
            "messages": [{"role": "user", "content": f"stream {i}"}],
            "stream": True,
            "max_tokens": 8,
            "temperature": 0,
        }
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    first_chunk[i].set()
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    texts[i] += delta.get("content") or ""

    with RunningServer(create_app([m])) as srv:
        with m.lock:  # the model is busy: no stream can end before all have started
            threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for i, event in enumerate(first_chunk):
                assert event.wait(60), f"stream {i} got no first chunk while the model was busy"
            deadline = time.monotonic() + 60
            while m.batcher is None or len(m.batcher.waiting) < 16:
                assert time.monotonic() < deadline, "not all 16 streams reached the model"
                time.sleep(0.01)
        for t in threads:
            t.join(120)
    assert dict(m.batcher.sizes) == {16: 1}
    assert all(texts)


# ---- 6. human evaluation: reading writes nothing; the rater key opens /human only


def row_counts(db) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


def test_reading_comparisons_never_grows_the_database(server, human_db):
    rater = {"Authorization": f"Bearer {RATER_KEY}"}
    with httpx.Client(base_url=server.url, headers=rater, timeout=60) as c:
        c.get("/human/api/next", params={"rater": "warmup"})  # the first use may store the signing secret
        before = row_counts(human_db)
        tasks = [c.get("/human/api/next", params={"rater": "reader"}).json()["task"] for _ in range(300)]
        assert row_counts(human_db) == before  # 300 reads, no rows
        assert len(set(tasks)) == 300
        assert c.post("/human/api/vote", json={"task": tasks[0], "choice": "tie"}).status_code == 200
        assert row_counts(human_db)["votes"] == before["votes"] + 1
        store = HumanEvalStore(human_db)
        same = next(t for t in tasks[1:] if store.read_task(t)[0] == store.read_task(tasks[0])[0])
        assert_openai_error(c.post("/human/api/vote", json={"task": same, "choice": "left"}), 409)
        forged = tasks[2][:-4] + ("0000" if not tasks[2].endswith("0000") else "1111")
        assert_openai_error(c.post("/human/api/vote", json={"task": forged, "choice": "tie"}), 404)
        assert_openai_error(c.get("/human/api/next", params={"rater": "r" * 201}), 400)


def test_the_rater_key_opens_human_eval_and_nothing_else(server):
    rater = {"Authorization": f"Bearer {RATER_KEY}"}
    assert httpx.get(f"{server.url}/human/api/tally", headers=rater).status_code == 200
    assert httpx.get(f"{server.url}/human/api/tally", headers=AUTH).status_code == 200  # the API key too
    assert_openai_error(httpx.get(f"{server.url}/human/api/tally"), 401)
    assert_openai_error(httpx.get(f"{server.url}/v1/models", headers=rater), 401)
    err = assert_openai_error(
        post(server, "/v1/completions", {"model": "alpha", "prompt": "x"}, headers=rater), 401
    )
    assert err["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/v1/models", headers=AUTH).status_code == 200
