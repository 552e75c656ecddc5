"""Perplexity filter: a reference language model scores each document (CCNet, Wenzek et al. 2020).

CCNet scores paragraphs with a KenLM 5-gram trained on Wikipedia and keeps the head and middle of
the perplexity distribution (cutoffs 340 / 520 for English, cc_net/data/cutoff.csv; Data-Juicer's
filter drops above 1,500). Text that reads unlike the reference corpus (spam, keyword lists,
tables of numbers) scores high. Here the reference is any model behind an OpenAI-compatible
`/v1/completions` endpoint that returns prompt log-probabilities (`echo` + `logprobs`): an lmforge
model under `lmforge serve` (e.g. one trained on the books or Wikipedia), or vLLM for scale. The
stage talks HTTP, so curation imports no model code and the scorer runs wherever it fits.

perplexity = exp(-mean log P(token | previous tokens)) over the first `max_chars` characters
(cut at a line end), in the reference model's tokens; thresholds therefore belong to one model.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request

from lmforge.data.curate.config import PerplexityConfig
from lmforge.errors import LmforgeError


class PerplexityScorer:
    def __init__(self, cfg: PerplexityConfig):
        if not cfg.endpoint:
            raise LmforgeError(
                "perplexity.enabled needs perplexity.endpoint: the /v1 URL of an OpenAI-compatible "
                "server with the reference model, e.g. http://127.0.0.1:8000/v1 from `lmforge serve`"
            )
        self.cfg = cfg
        self.base = cfg.endpoint.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.model = cfg.model or self._first_model()

    def _call(self, path: str, body: dict | None = None) -> dict:
        """One request with retries on connection errors and 5xx; LmforgeError naming the endpoint after."""
        url = f"{self.base}{path}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in range(self.cfg.retries + 1):
            req = urllib.request.Request(
                url, data=data, headers=self.headers, method="GET" if data is None else "POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code < 500 or attempt == self.cfg.retries:
                    raise _HTTPError(
                        e.code, f"perplexity endpoint {url} answered {e.code}: {detail}"
                    ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.cfg.retries:
                    raise LmforgeError(
                        f"perplexity endpoint {url} is unreachable ({e}); start the reference model's "
                        "server (lmforge serve) or fix perplexity.endpoint"
                    ) from None
            time.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _first_model(self) -> str:
        models = self._call("/models").get("data") or []
        if not models:
            raise LmforgeError(f"perplexity endpoint {self.base} serves no model")
        return models[0]["id"]

    def __call__(self, text: str) -> float | None:
        """The document's perplexity under the reference model; None if it has fewer than 2 tokens."""
        head = _head(text, self.cfg.max_chars)
        for _ in range(8):  # shorten the text while the model's context is too short for it
            body = {
                "model": self.model,
                "prompt": head,
                "max_tokens": 1,
                "temperature": 0,
                "echo": True,
                "logprobs": 0,
            }
            try:
                out = self._call("/completions", body)
                break
            except _HTTPError as e:
                if e.code != 400 or "context" not in str(e) or len(head) < 32:
                    raise
                # "... N tokens, longer than the model's context of C tokens": keep ~C/N of the text
                m = _TOO_LONG.search(str(e))
                keep = int(len(head) * int(m[2]) / int(m[1]) * 0.9) if m else len(head) // 2
                head = _head(head, max(16, min(keep, len(head) // 2 + len(head) // 4)))
        else:
            raise LmforgeError(
                "perplexity: no prefix of the document fits the reference model's context; "
                "lower perplexity.max_chars"
            )
        try:
            n_prompt = out["usage"]["prompt_tokens"]
            scores = [x for x in out["choices"][0]["logprobs"]["token_logprobs"][1:n_prompt] if x is not None]
        except (KeyError, IndexError, TypeError):
            raise LmforgeError(
                f"perplexity endpoint {self.base} returned no prompt log-probabilities; it must "
                "answer /v1/completions with echo=true and logprobs (lmforge serve and vLLM do)"
            ) from None
        if not scores:
            return None
        return math.exp(-sum(scores) / len(scores))


_TOO_LONG = re.compile(r"(\d+) tokens.*?context of (\d+)")


class _HTTPError(LmforgeError):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _head(text: str, max_chars: int) -> str:
    """The first `max_chars` characters, cut at the last line end (or space) inside them."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    for sep in ("\n", " "):
        i = cut.rfind(sep)
        if i > max_chars // 2:
            return cut[:i]
    return cut
