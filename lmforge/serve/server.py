"""The HTTP app (FastAPI) and how it is run (uvicorn): API, web pages, errors, API key, /health.

Every error leaves as an OpenAI-style body `{"error": {"message", "type", "param", "code"}}`:
malformed JSON and out-of-range parameters are 400 (FastAPI's own 422 is translated), an unknown
model 404, a missing or wrong API key 401; the server keeps serving after each.
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
from lmforge.serve.schema import APIError

log = logging.getLogger("lmforge.serve")


def create_app(models: Sequence[ServedModel], api_key: str | None = None,
               human_db: str | Path | None = None) -> FastAPI:
    """The app serving `models` under /v1, the chat page, and (with `human_db`) human evaluation."""
    by_name: dict[str, ServedModel] = {}
    for m in models:
        if m.name in by_name:
            raise LmforgeError(f"two models are named {m.name!r}; name them with --run NAME=PATH")
        by_name[m.name] = m
    app = FastAPI(title="lmforge", description="OpenAI-compatible API, chat and human evaluation",
                  docs_url="/docs", redoc_url=None)

    def auth(request: Request) -> None:
        """Bearer API key, when the server has one (compared in constant time)."""
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else None
        err = APIError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code=kind)
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = APIError(500, f"internal server error: {type(exc).__name__}", type="server_error")
        return JSONResponse(err.body(), status_code=500)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": list(by_name)}

    app.include_router(make_router(by_name, auth))
    from lmforge.serve.web import make_web_router

    app.include_router(make_web_router(by_name, auth, human_db))
    return app


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's list of validation errors as one OpenAI-style 400 naming the first problem."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return APIError(400, f"We could not parse the JSON body of your request ({detail}); send valid JSON",
                        code="invalid_json")
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

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
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
    print(f"[lmforge] serving on {url}  (API {url}/v1, chat page {url}/chat, health {url}/health)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the signal it caught
        pass
    finally:
        sock.close()
    print("[lmforge] server stopped", flush=True)
