"""The /inspect page of `lmforge serve`: type a text, pick a layer and head, hover a token to see
where it attends (lmforge/serve/web/inspect.html + inspect.js). The pictures' arithmetic is
lmforge/inspect/; this is its HTTP face, so serve imports inspect and never the other way.

    GET  /inspect        the page (plain HTML/JS, like /chat)
    POST /inspect/api    {"model", "text"} -> every attention map and the per-token surprise, as
                         JSON; behind the API key like /v1
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lmforge.errors import LmforgeError
from lmforge.inspect.attention import attention_maps
from lmforge.inspect.inputs import read
from lmforge.inspect.surprise import token_surprise
from lmforge.serve.schema import APIError

PAGE = Path(__file__).resolve().parent / "web" / "inspect.html"


class InspectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # default: the first served model
    text: str = Field(min_length=1, max_length=20_000)
    top_k: int = Field(5, ge=1, le=20)


def inspect_json(served, text: str, top_k: int = 5) -> dict:
    """Attention maps and surprise of `text` under the model's lock (recording switches the
    model's attention modules to the explicit path, so no request may decode meanwhile)."""
    with served.lock:
        reading = read(served.model, served.tokenizer, text)
        maps = attention_maps(served.model, served.tokenizer, reading)
        surprise = token_surprise(served.model, served.tokenizer, reading, top_k)
    return {
        "model": served.name,
        "text": text,
        "tokens": reading.tokens,
        "labels": reading.labels,
        "maps": [m.to_json() for m in maps],
        "surprise": surprise.to_json(),
    }


def make_inspect_router(models: dict, auth: Callable) -> APIRouter:
    router = APIRouter()

    @router.get("/inspect", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @router.post("/inspect/api", dependencies=[Depends(auth)])
    async def inspect(req: InspectRequest):
        if not models:
            raise APIError(404, "this server has no models to inspect", code="model_not_found")
        name = req.model or next(iter(models))
        if name not in models:
            raise APIError(
                404,
                f"The model '{name}' does not exist; served: {', '.join(models)}",
                param="model",
                code="model_not_found",
            )
        try:
            return await run_in_threadpool(inspect_json, models[name], req.text, req.top_k)
        except LmforgeError as e:  # empty after tokenizing, longer than the context
            raise APIError(400, str(e), param="text") from None

    return router
