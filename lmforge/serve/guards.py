"""What stands between a hostile request and the app: a body-size limit, strict JSON, error bodies
that always encode.

- `BodyLimit` (ASGI middleware) reads each request body before the app does and answers 413 when
  it is larger than `max_bytes` (the Content-Length says so, or the bytes counted while a chunked
  body arrives). Reading is asynchronous: a big body never holds up other requests.
- `StrictJSONRoute` parses JSON bodies as usual but refuses a string holding a lone UTF-16
  surrogate (`"\\ud800"`): Python's json accepts the escape, yet the text is not Unicode, and it
  would fail later (the tokenizer, SQLite, the UTF-8 encoding of a reply). It becomes a 400
  (`invalid_json`) naming where it was.
- `ErrorResponse` renders error bodies with ASCII escapes, so any text echoed in a message encodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse

from lmforge.serve.config import DEFAULT_MAX_REQUEST_BYTES
from lmforge.serve.schema import APIError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "BodyLimit", "ErrorResponse", "StrictJSONRoute", "loads_strict"]
# Past this many bytes of a refused body the connection is closed instead of read to its end (the
# client may then see the connection reset rather than the 413).
DRAIN_LIMIT = 64 * 2**20


class ErrorResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def too_large(max_bytes: int) -> APIError:
    return APIError(413, f"the request body is larger than this server's limit of {max_bytes:,} bytes "
                    "(lmforge serve --max-request-bytes)", code="request_too_large")


class BodyLimit:
    """ASGI middleware: buffer each HTTP request body up to `max_bytes`, then hand it to the app
    in one piece; a larger body gets a 413 error body instead."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            # A client waiting for "100 Continue" never sends the body; any other is read to its end
            # (asynchronously, discarding it), so that it sees the 413 rather than a reset connection.
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive, declared)
            await self._refuse(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:  # a chunked body past the limit
                if message.get("more_body", False):
                    await self._drain(receive, size)
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect when the client leaves

        await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive: Callable, seen: int) -> None:
        while seen <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            seen += len(message.get("body", b""))

    async def _refuse(self, send: Callable) -> None:
        err = too_large(self.max_bytes)
        body = ErrorResponse(err.body()).body
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ---- strict JSON

# Where a lone surrogate can come from: a \uD800-\uDFFF escape, or its raw (CESU-8) bytes, which
# json.loads lets through ('surrogatepass'). Bodies with neither prefix skip the walk over the
# values; substring search is memchr-fast, where a regular expression took 150 ms on 10 MB.
_SURROGATE_HINTS = (b"\\ud", b"\\uD", b"\xed")


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path ('messages.0.content', or '' for the body itself) of the first string, key or
    value, that holds a lone surrogate; None if there is none."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and lone_surrogate(key) is not None:
            return f"{path or 'body'} (in a key)"
        found = lone_surrogate(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def loads_strict(body: bytes) -> Any:
    """json.loads, refusing lone surrogates with a JSONDecodeError (FastAPI answers it as a 400)."""
    value = json.loads(body)
    if any(hint in body for hint in _SURROGATE_HINTS):
        where = lone_surrogate(value)
        if where is not None:
            raise json.JSONDecodeError(f"the string at {where} holds a lone UTF-16 surrogate (an "
                                       "unpaired \\ud800-\\udfff), which is not Unicode text", "", 0)
    return value


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON bodies are parsed by `loads_strict`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict_handler(request: Request):
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict_handler
