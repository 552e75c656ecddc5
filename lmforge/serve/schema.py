"""Request bodies of the OpenAI-compatible API, as pydantic models, and OpenAI-style errors.

Ranges follow the OpenAI API reference (temperature in [0, 2], top_p in (0, 1], at most 4 stop
sequences, max_tokens >= 1, seed a 64-bit integer). Unknown fields are rejected, as OpenAI does ("Unrecognized
request argument"), so a typo never silently becomes a default. Options the server cannot honour
(penalties, logit_bias, tools, suffix, chat logprobs) are accepted only at their neutral values
and otherwise answered with a 400 that names them; completions take `logprobs` (0-5, with or
without `echo`). `top_k` is an extension (vLLM and llama.cpp
accept it too); the openai client sends it with `extra_body={"top_k": 40}`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmforge.serve.config import SampleConfig

MAX_CHOICES = 8  # n * number of prompts; each choice is a full generation


class APIError(Exception):
    """An OpenAI-style error: HTTP status + {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="forbid")
    model: str
    temperature: float | None = Field(None, ge=0, le=2)  # None = 1.0, OpenAI's default
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)  # extension
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # OpenAI's range (a 64-bit integer)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise APIError(400, f"stop takes at most 4 sequences, got {len(stops)}", "stop")
        if any(not s for s in stops):
            raise APIError(400, "stop sequences must be non-empty strings", "stop")
        return stops

    def check_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported by this server (only 0)", name)
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this server", "logit_bias")

    def sample_config(self, max_tokens: int, choice: int = 0) -> SampleConfig:
        """Decoding options for choice number `choice` (choices of one request differ by seed)."""
        self.check_unsupported()
        seed = None if self.seed is None else self.seed + choice
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = None if self.top_p in (None, 1.0) else self.top_p
        return SampleConfig(
            max_new_tokens=max_tokens,
            temperature=temperature,
            top_k=self.top_k,
            top_p=top_p,
            seed=seed,
            stop=self.stops(),
        )


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)  # top alternatives per token (OpenAI's range)
    best_of: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string, or token ids."""
        if self.suffix is not None:
            raise APIError(400, "suffix is not supported by this server", "suffix")
        if self.logprobs is not None and self.stream:
            raise APIError(400, "logprobs are not supported with stream=true on this server", "logprobs")
        if self.best_of not in (None, 1):
            raise APIError(400, "best_of is not supported by this server (only 1)", "best_of")
        p = self.prompt
        if isinstance(p, str):
            out: list = [p]
        elif p and all(isinstance(x, int) for x in p):
            out = [list(p)]
        else:
            out = list(p)
        if not out:
            raise APIError(400, "prompt is empty", "prompt")
        if len(out) * self.n > MAX_CHOICES:
            raise APIError(
                400,
                f"{len(out)} prompts x n={self.n} is more than {MAX_CHOICES} completions in one request",
                "n",
            )
        return out


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_call_id, refusal ...: not used
    role: str
    content: str | list[ContentPart] | None = None

    def plain(self) -> dict[str, Any]:
        """{"role", "content": str} for the chat template; 'developer' is OpenAI's new name for system."""
        role = "system" if self.role == "developer" else self.role
        content = (
            self.content
            if isinstance(self.content, str) or self.content is None
            else "".join(part.text for part in self.content)
        )
        return {"role": role, "content": content}


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # None = until the reply ends or the context is full
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def check_chat(self) -> None:
        if self.logprobs or self.top_logprobs:
            raise APIError(400, "logprobs are not supported by this server", "logprobs")
        if self.tools or self.tool_choice not in (None, "none"):
            raise APIError(400, "tools are not supported by this server", "tools")
        if self.response_format not in (None, {"type": "text"}):
            raise APIError(400, 'only response_format {"type": "text"} is supported', "response_format")
