"""The web pages (plain HTML + JS in lmforge/serve/web/, no build step) and the human-eval API.

/chat            chat with any served model (streams from /v1/chat/completions)
/human           rate two anonymised answers: A / B / tie / both bad, optional 1-5 scores
/human/results   win rates with bootstrap CIs and Bradley-Terry ratings
/human/api/...   next (a comparison), vote, tally, results: JSON, behind the rater key or the
                 API key when the server has either (the rater key opens nothing else)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lmforge.serve.engine import ServedModel
from lmforge.serve.human_eval import HumanEvalStore, VoteError
from lmforge.serve.schema import APIError

WEB = Path(__file__).parent / "web"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The files /static serves, listed once: a request's name is looked up, never opened as a path.
STATIC = frozenset(p.name for p in WEB.iterdir() if p.suffix in TYPES)
NO_HUMAN_EVAL = (
    "<!doctype html><title>lmforge</title><p>This server has no human evaluation. Prepare one "
    "with <code>lmforge eval human --models runA runB --prompts prompts.jsonl</code> and start "
    "the server with <code>--human-eval human_eval.sqlite</code>. <a href='/chat'>Chat</a></p>"
)


class Vote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    choice: str
    score_a: int | None = Field(None, ge=1, le=5)  # as shown: A is the left answer
    score_b: int | None = Field(None, ge=1, le=5)


def make_web_router(models: dict[str, ServedModel], auth: Callable, human_db: str | Path | None) -> APIRouter:
    """The pages and /human/api; `auth` guards /human/api (the rater key or the API key)."""
    router = APIRouter()
    store = HumanEvalStore(human_db) if human_db is not None else None

    def page(name: str) -> FileResponse:
        return FileResponse(WEB / name, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @router.get("/", include_in_schema=False)
    def home():
        return RedirectResponse("/chat" if models or store is None else "/human")

    @router.get("/chat", include_in_schema=False)
    def chat_page():
        return page("chat.html")

    @router.get("/human", include_in_schema=False)
    def human_page():
        return page("human.html") if store else HTMLResponse(NO_HUMAN_EVAL, status_code=404)

    @router.get("/human/results", include_in_schema=False)
    def results_page():
        return page("results.html") if store else HTMLResponse(NO_HUMAN_EVAL, status_code=404)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            shown = name if len(name) <= 80 else name[:80] + "..."
            raise APIError(404, f"no static file {shown!r}", code="not_found")
        path = WEB / name
        return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    def need_store() -> HumanEvalStore:
        if store is None:
            raise APIError(
                404, "this server has no human evaluation (start it with --human-eval FILE)", code="not_found"
            )
        return store

    async def call(fn, *args):
        try:
            return await run_in_threadpool(fn, *args)
        except VoteError as e:
            raise APIError(e.status, str(e), code="vote_rejected") from None

    @router.get("/human/api/next", dependencies=[Depends(auth)])
    async def next_comparison(rater: str = ""):
        s = need_store()
        task = await call(s.next_task, rater)
        return {"done": task is None, **(task or {}), "tally": await call(s.tally, rater)}

    @router.post("/human/api/vote", dependencies=[Depends(auth)])
    async def vote(v: Vote):
        s = need_store()
        await call(s.vote, v.task, v.choice, v.score_a, v.score_b)
        return {"ok": True}

    @router.get("/human/api/tally", dependencies=[Depends(auth)])
    async def tally(rater: str = ""):
        return await call(need_store().tally, rater)

    @router.get("/human/api/results", dependencies=[Depends(auth)])
    async def results():
        return await call(need_store().results)

    return router
