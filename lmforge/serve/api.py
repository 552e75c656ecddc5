"""The OpenAI-compatible routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions.

Every request is checked in full (model, parameters, prompt length) before any token is
generated, so a bad request gets a 4xx error body and a good one either a JSON answer or a
stream of server-sent events (`data: {chunk}` lines, then `data: [DONE]`, the OpenAI stream
format). Nothing slow runs on the event loop: a request's tokenization runs in a thread, and its
generation in a thread of its own (`in_thread`), never a fixed-size pool, so neither the number
of streams nor of requests in flight is capped by a pool size the user never set.
`ServedModel.complete` queues requests per model, or hands them to the model's batcher
(`--max-batch`), which decodes the requests waiting together. A streaming client that
disconnects cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import Completion, ContextLengthError, ServedModel
from lmforge.serve.logprobs import completion_logprobs
from lmforge.serve.schema import APIError, ChatRequest, CompletionRequest, _Sampling

T = TypeVar("T")


@dataclass
class Job:
    """One choice to generate: prompt ids, decoding options, the ids that end it."""

    ids: list[int]
    cfg: SampleConfig
    stop_ids: list[int]
    prefix: str = ""  # echo: the prompt text, sent before the completion


def usage(prompt_tokens: int, results: list[Completion]) -> dict:
    completion = sum(r.completion_tokens for r in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def make_router(models: dict[str, ServedModel], auth: Callable) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth)])

    def get_model(name: str) -> ServedModel:
        if name not in models:
            raise APIError(
                404,
                f"The model '{name}' does not exist; this server has: {', '.join(models)}",
                "model",
                "model_not_found",
            )
        return models[name]

    def card(m: ServedModel) -> dict:
        return {
            "id": m.name,
            "object": "model",
            "created": 0,
            "owned_by": "lmforge",
            "context_length": m.block_size,
        }

    @router.get("/models")
    def list_models() -> dict:
        return {"object": "list", "data": [card(m) for m in models.values()]}

    @router.get("/models/{name}")
    def get_model_card(name: str) -> dict:
        return card(get_model(name))

    @router.post("/completions")
    async def completions(req: CompletionRequest):
        served = get_model(req.model)
        jobs, prompt_tokens = await in_thread(completion_jobs, served, req)
        meta = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": served.name,
        }

        def choice(i: int, text: str, finish: str | None, logprobs: dict | None = None) -> dict:
            return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}

        if req.stream:
            return sse(
                served,
                jobs,
                prompt_tokens,
                meta,
                req,
                lambda i, piece: choice(i, piece, None),
                lambda i: None,
                lambda i, r: choice(i, "", r.finish_reason),
            )
        results = await in_thread(run_jobs, served, jobs)
        scores = [None] * len(jobs)
        if req.logprobs is not None:
            scores = await in_thread(score_jobs, served, jobs, results, req.logprobs, req.echo)
        return {
            **meta,
            "choices": [
                choice(i, j.prefix + r.text, r.finish_reason, lp)
                for i, (j, r, lp) in enumerate(zip(jobs, results, scores))
            ],
            "usage": usage(prompt_tokens, results),
        }

    @router.post("/chat/completions")
    async def chat_completions(req: ChatRequest):
        served = get_model(req.model)
        jobs, prompt_tokens = await in_thread(chat_jobs, served, req)
        meta = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served.name,
            "system_fingerprint": None,
        }

        if req.stream:

            def delta(i: int, d: dict, finish: str | None = None) -> dict:
                return {"index": i, "delta": d, "logprobs": None, "finish_reason": finish}

            return sse(
                served,
                jobs,
                prompt_tokens,
                {**meta, "object": "chat.completion.chunk"},
                req,
                lambda i, piece: delta(i, {"content": piece}),
                lambda i: delta(i, {"role": "assistant", "content": ""}),
                lambda i, r: delta(i, {}, r.finish_reason),
            )
        results = await in_thread(run_jobs, served, jobs)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text, "refusal": None},
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ]
        return {**meta, "choices": choices, "usage": usage(prompt_tokens, results)}

    return router


def completion_jobs(served: ServedModel, req: CompletionRequest) -> tuple[list[Job], int]:
    """The request's choices as Jobs (each prompt tokenized and checked) and its prompt tokens."""
    jobs, prompt_tokens = [], 0
    for prompt in req.prompts():
        if isinstance(prompt, list):
            with context_errors(served, "prompt"):
                served.check_length(prompt)  # before looking at each of a million ids
            ids = token_ids(served, prompt)
        else:
            with context_errors(served, "prompt"):
                served.check_text_length(len(prompt))
            try:
                ids = served.text_ids(prompt)
            except LmforgeError as e:  # a lone surrogate (requests from JSON never have one)
                raise APIError(400, str(e), "prompt") from None
        with context_errors(served, "prompt"):
            served.check_length(ids)
        prompt_tokens += len(ids)
        echo = (prompt if isinstance(prompt, str) else served.tokenizer.decode(ids)) if req.echo else ""
        for c in range(req.n):
            limit = req.max_tokens if req.max_tokens is not None else served.block_size
            jobs.append(Job(ids, req.sample_config(limit, c), [served.tokenizer.eot_id], echo))
    return jobs, prompt_tokens


def chat_jobs(served: ServedModel, req: ChatRequest) -> tuple[list[Job], int]:
    """The conversation's choices as Jobs (in the chat template, checked) and its prompt tokens."""
    req.check_chat()
    messages = [m.plain() for m in req.messages]
    with context_errors(served, "messages"):
        served.check_text_length(sum(len(m["content"] or "") for m in messages))
    try:
        ids = served.chat_ids(messages)
    except LmforgeError as e:  # unknown role, empty content, system message not first
        raise APIError(400, str(e), "messages") from None
    with context_errors(served, "messages"):
        served.check_length(ids)
    limit = req.limit() if req.limit() is not None else served.block_size
    return [Job(ids, req.sample_config(limit, c), served.chat_stop_ids()) for c in range(req.n)], len(ids)


def token_ids(served: ServedModel, ids: list[int]) -> list[int]:
    bad = next((t for t in ids if not 0 <= t < served.tokenizer.vocab_size), None)
    if bad is not None:
        raise APIError(
            400, f"token id {bad} is outside the vocabulary (0..{served.tokenizer.vocab_size - 1})", "prompt"
        )
    if not ids:
        raise APIError(400, "prompt is empty", "prompt")
    return ids


@contextmanager
def context_errors(served: ServedModel, param: str) -> Iterator[None]:
    """Turns a ContextLengthError inside the block into OpenAI's context_length_exceeded 400."""
    try:
        yield
    except ContextLengthError as err:
        size = f"at least {err.tokens}" if err.at_least else f"{err.tokens}"
        raise APIError(
            400,
            f"This model's maximum context length is {served.block_size} tokens, but the "
            f"{param} is {size} tokens. Please shorten it.",
            param,
            "context_length_exceeded",
        ) from None


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a thread of its own, awaited. Generation mostly waits (for the model, for its
    batch); a request that waits must not hold a thread of a fixed-size pool, whose size (anyio's
    40, asyncio's cores + 4) would cap how many requests or streams are in flight."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():  # the request was cancelled meanwhile
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as e:  # noqa: BLE001 -- re-raised in the request's coroutine
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    threading.Thread(target=work, name="lmforge-request", daemon=True).start()
    return await done


def run_jobs(served: ServedModel, jobs: list[Job]) -> list[Completion]:
    rows = [served.submit(j.ids, j.cfg, j.stop_ids) for j in jobs]  # all queued first: one batch for n > 1
    return [row.wait() for row in rows]


def score_jobs(
    served: ServedModel, jobs: list[Job], results: list[Completion], top: int, echo: bool
) -> list[dict]:
    """Each choice's `logprobs` object (prompt tokens too with echo), under the model's lock."""
    with served.lock:
        try:
            return [
                completion_logprobs(served.tokenizer, served.model, j.ids, r.token_ids, top, echo)
                for j, r in zip(jobs, results)
            ]
        except LmforgeError as e:
            raise APIError(400, f"{e} ({served.name!r} is not one)", "logprobs") from None


def sse(
    served: ServedModel,
    jobs: list[Job],
    prompt_tokens: int,
    meta: dict,
    req: _Sampling,
    piece_choice: Callable,
    start_choice: Callable,
    end_choice: Callable,
) -> StreamingResponse:
    """Stream the jobs' text as OpenAI chunks: an optional opening chunk per choice, one chunk per
    piece of text, a closing chunk with finish_reason, the usage chunk if asked for, [DONE]."""
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(choices: list, **extra) -> str:
        return f"data: {json.dumps({**meta, 'choices': choices, **extra})}\n\n"

    async def events() -> AsyncIterator[str]:
        results: list[Completion] = []
        async for kind, i, value in generate_in_thread(served, jobs):
            if kind == "start":
                first = start_choice(i)
                if first is not None:
                    yield chunk([first])
                if jobs[i].prefix:
                    yield chunk([piece_choice(i, jobs[i].prefix)])
            elif kind == "text":
                yield chunk([piece_choice(i, value)])
            elif kind == "end":
                results.append(value)
                yield chunk([end_choice(i, value)])
            elif kind == "error":
                err = APIError(500, f"generation failed: {value}", type="server_error")
                yield f"data: {json.dumps(err.body())}\n\n"
                return
        if include_usage:
            yield chunk([], usage=usage(prompt_tokens, results))
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def generate_in_thread(served: ServedModel, jobs: list[Job]) -> AsyncIterator[tuple[str, int, object]]:
    """Run the jobs in a worker thread and yield ("start"|"text"|"end"|"error", choice, value) as they
    happen. Leaving the loop early (the client went away) cancels the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def put(item: tuple) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            cancel.set()

    def work() -> None:
        try:
            for i, job in enumerate(jobs):
                if cancel.is_set():
                    return
                put(("start", i, None))
                result = served.complete(
                    job.ids,
                    job.cfg,
                    job.stop_ids,
                    on_text=lambda s, i=i: put(("text", i, s)),
                    cancelled=cancel.is_set,
                )
                put(("end", i, result))
        except Exception as e:  # noqa: BLE001 -- reported to the client as an error event
            put(("error", -1, f"{type(e).__name__}: {e}"))
        finally:
            put(("done", -1, None))

    # A thread of its own: a stream waits on the model for most of its life (see `in_thread`).
    threading.Thread(target=work, name="lmforge-stream", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item[0] == "done":
                break
            yield item
    finally:
        cancel.set()
