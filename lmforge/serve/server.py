"""The HTTP app (FastAPI) and how it is run (uvicorn): API, web pages, errors, API key, /health.

Every error leaves as an OpenAI-style body `{"error": {"message", "type", "param", "code"}}`:
malformed JSON (a lone surrogate included) and out-of-range parameters are 400 (FastAPI's own 422
is translated), an unknown model or path 404, a missing or wrong key 401, a body over
`max_request_bytes` 413 (lmforge/serve/guards.py); the server keeps serving after each.

Keys: the API key opens everything; a rater key opens only human evaluation (/human/api), so
raters never hold a credential that reaches the models.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import LmforgeError
from lmforge.serve.api import make_router
from lmforge.serve.engine import ServedModel
from lmforge.serve.guards import DEFAULT_MAX_REQUEST_BYTES, ErrorResponse, RequestGuard
from lmforge.serve.inspect_page import make_inspect_router
from lmforge.serve.schema import APIError
from lmforge.serve.web import make_web_router

log = logging.getLogger("lmforge.serve")


def create_app(
    models: Sequence[ServedModel],
    api_key: str | None = None,
    human_db: str | Path | None = None,
    rater_key: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> FastAPI:
    """The app serving `models` under /v1, the chat page, and (with `human_db`) human evaluation.
    `api_key` guards /v1 and /human/api; `rater_key` opens /human/api only; request bodies over
    `max_request_bytes` are refused (413)."""
    by_name: dict[str, ServedModel] = {}
    for m in models:
        if m.name in by_name:
            raise LmforgeError(f"two models are named {m.name!r}; name them with --run NAME=PATH")
        by_name[m.name] = m
    if max_request_bytes < 1:
        raise LmforgeError(f"the request size limit must be >= 1 byte, got {max_request_bytes}")
    app = FastAPI(
        title="lmforge",
        description="OpenAI-compatible API, chat and human evaluation",
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(RequestGuard, max_bytes=max_request_bytes)
    api_keys = [api_key] if api_key else []
    rater_keys = [k for k in (api_key, rater_key) if k]

    def auth(request: Request) -> None:
        """The API key, when the server has one: for /v1."""
        check_key(request, api_keys, "API key")

    def rater_auth(request: Request) -> None:
        """The rater key or the API key: for /human/api."""
        check_key(request, rater_keys, "rater key (or API key)")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return ErrorResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return ErrorResponse(validation_error(exc).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        err = APIError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code=kind)
        return ErrorResponse(err.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = APIError(500, f"internal server error: {type(exc).__name__}", type="server_error")
        return ErrorResponse(err.body(), status_code=500)

    @app.get("/health")
    async def health() -> dict:  # on the event loop: it answers while every worker thread is busy
        return {"status": "ok", "models": list(by_name)}

    app.include_router(make_router(by_name, auth))
    app.include_router(
        make_inspect_router(by_name, auth)
    )  # /inspect: attention and surprise, behind the API key

    app.include_router(make_web_router(by_name, rater_auth, human_db))
    return app


def check_key(request: Request, keys: list[str], what: str) -> None:
    """A 401 unless the request's bearer token is one of `keys` (compared in constant time); no
    keys, no check."""
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    matches = [hmac.compare_digest(given, k.encode()) for k in keys]  # all compared: no early exit
    if scheme.lower() != "bearer" or not any(matches):
        raise APIError(
            401, f"Incorrect or missing {what}: send 'Authorization: Bearer <key>'", code="invalid_api_key"
        )


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's list of validation errors as one OpenAI-style 400 naming the first problem."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return APIError(
            400,
            f"We could not parse the JSON body of your request ({detail}); send valid JSON",
            code="invalid_json",
        )
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    # Unions report each member's failure with the member's type in the path: keep the field path.
    loc = [x for x in loc if not any(c in x for c in "[]") and x not in ("str", "int", "list")]
    param = ".".join(loc) or None
    if first.get("type") == "missing" and not loc:
        return APIError(400, "the request needs a JSON body")
    value = first.get("input")
    shown = f" (got {value!r})" if first.get("type") != "missing" and len(repr(value)) <= 60 else ""
    return APIError(400, f"{param or 'body'}: {first.get('msg', 'invalid value')}{shown}", param)


# ---- running it


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 = any free port), so the caller knows the port before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LmforgeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RunningServer:
    """A uvicorn server in a background thread (tests, benchmarks): `.url`, `.stop()`."""

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.02)
        if not self.server.started:
            raise LmforgeError(f"the server on {self.url} did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run until Ctrl-C, printing where the API and pages are."""
    import uvicorn

    sock = bind(host, port)
    url = url_of(sock)
    print(
        f"[lmforge] serving on {url}  (API {url}/v1, chat page {url}/chat, health {url}/health)", flush=True
    )
    try:
        uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)).run(
            sockets=[sock]
        )
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the signal it caught
        pass
    finally:
        sock.close()
    print("[lmforge] server stopped", flush=True)
