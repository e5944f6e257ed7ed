"""Any OpenAI-compatible chat endpoint: OpenAI itself, ``vllm serve``, llama.cpp, Ollama, ...

Run:  OPENAI_API_KEY=... needlework eval --model openai:gpt-3.5-turbo-1106 --benchmark flenqa

Many requests are in flight at once (a thread pool of ``concurrency``); decoding is greedy
(``temperature=0``). HTTP retries are the SDK's (``max_retries``, ``timeout_s``): 408 / 409 / 429 /
5xx, timeouts and connection errors, with its capped exponential back-off and a server's
``Retry-After``. A wrong key (401/403), an unknown model (404) or a bad request (400) fail at
once with one line; a context-length 400 is reported as a too-long prompt; after the SDK gives
up, one line names the endpoint and the last error. Token usage and retries (HTTP requests sent
beyond one per prompt, counted on the SDK's HTTP client) go to ``run.json``.

A 200 response is parsed here, not trusted (the SDK does not retry a 200): a body that is not JSON
(an HTML gateway or login page: a wrong ``base_url``) stops the run at once; truncated JSON, no
``choices`` or a null answer is asked again at once, at most ``max_retries`` times, and then
stops the run with one line. Such a response is never
recorded as an (empty) prediction. An empty string from a finished completion is an answer.

API key: read from the environment variable ``api_key_env``, never from the config. It is
required for the OpenAI API (``base_url`` unset). For another server it is optional: local
servers (``vllm serve`` without ``--api-key``, llama.cpp, Ollama) need none, and a server that does
answers 401, which names the variable to set.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import field
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError
from typing_extensions import NotRequired, TypedDict

from needlework.config import (
    NonEmptyStr,
    NonNegativeInt,
    PositiveInt,
    adapter,
    config,
    config_error,
)
from needlework.errors import UserError
from needlework.models.base import PromptTooLongError, Streaming, need, validate_conversations
from needlework.records import Message
from needlework.registry import backends

OPENAI_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429}  # and >= 500: what the SDK retries
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "too many tokens",
    "prompt is too long",
)


class BadResponse(Exception):
    """A 200 response with no usable answer; ``retry`` says whether another attempt may help."""

    def __init__(self, what: str, *, retry: bool):
        super().__init__(what)
        self.retry = retry


@backends.register("openai")
@config
class OpenAIChat(Streaming):
    """An OpenAI-compatible /v1/chat/completions endpoint, many requests in flight."""

    # The endpoint is here too: the same model name on another server or port may resume a run
    # (the prompts are checked sample by sample; run.json records the change).
    speed_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "base_url",
            "api_key_env",
            "concurrency",
            "max_retries",
            "timeout_s",
        }
    )

    model: NonEmptyStr
    """Model name as the server knows it (e.g. gpt-3.5-turbo-1106, ft:..., a vllm serve path)."""
    base_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    """Server root ending in /v1 (e.g. http://127.0.0.1:8000/v1); None is api.openai.com."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put keys in configs)."""
    concurrency: PositiveInt = 16
    """Requests in flight at once."""
    max_retries: NonNegativeInt = 5
    """Retries per request after the first attempt: the SDK's for 408/409/429/5xx, timeouts and
    connection errors, and as many again for a 200 without a usable answer."""
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """Per-request timeout in seconds (the SDK's)."""
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """Request field for the answer budget (newer OpenAI models want max_completion_tokens)."""
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def url(self) -> str:
        return (self.base_url or OPENAI_URL).rstrip("/")

    short_form: ClassVar[str] = "MODEL[@BASE_URL]"
    """``openai:gpt-4o-mini`` or ``openai:MODEL@http://127.0.0.1:8000/v1``."""

    @classmethod
    def from_short(cls, value: str) -> dict[str, Any]:
        model, at, base_url = value.rpartition("@") if "@" in value else (value, "", "")
        return {"model": model, **({"base_url": base_url} if at else {})}

    def describe(self) -> str:
        host = urlparse(self.base_url).netloc if self.base_url else ""
        return f"openai:{self.model}" + (f"@{host}" if host else "")

    def token_counter(self) -> str | None:
        return None  # the server's tokenizer is not known here

    def usage(self) -> dict[str, int]:
        with self._lock():
            out = dict(self._state.get("usage", {}))
            if out:  # every HTTP request beyond the first of each prompt is a retry
                out["retries"] = out.pop("http_requests") - out.pop("prompts")
            return out

    def _lock(self) -> threading.Lock:
        return self._state.setdefault("lock", threading.Lock())

    def _client(self) -> Any:
        if "client" in self._state:
            return self._state["client"]
        key = os.environ.get(self.api_key_env, "")
        if not key and self.base_url is None:
            raise UserError(
                f"openai: environment variable {self.api_key_env} is not set (the "
                f"OpenAI API needs a key; for a local server set base_url)"
            )
        openai = need("openai", "openai", "pip install 'needlework[openai]'")
        client = openai.OpenAI(
            api_key=key or "no-key",
            base_url=self.url,
            max_retries=self.max_retries,
            timeout=self.timeout_s,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._sent]}),
        )
        self._state.update(
            client=client,
            key_set=bool(key),
            usage={
                "requests": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "prompts": 0,
                "http_requests": 0,
                "truncated": 0,
                "empty": 0,
                "bad_responses": 0,
            },
        )
        return client

    # -- generation ------------------------------------------------------------------------
    def generate_iter(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_new_tokens: int,
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, text)`` as requests finish; on an error, requests not yet sent are
        cancelled, those in flight still come out (nothing paid for is lost), then it raises."""
        validate_conversations(conversations)
        if not conversations:
            return
        self._client()
        pool = ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(conversations)), thread_name_prefix="openai"
        )
        futures: dict[Future, int] = {
            pool.submit(self._request, i, conv, max_new_tokens): i
            for i, conv in enumerate(conversations)
        }
        error: BaseException | None = None
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is None:
                        yield futures[fut], fut.result()
                    elif error is None:
                        error = exc
                        # requests not sent yet are dropped; those in flight are awaited, so
                        # an answer already paid for is still delivered before the error
                        pending = {other for other in pending if not other.cancel()}
        finally:  # normally everything is done here; on Ctrl-C do not wait for stragglers
            pool.shutdown(wait=False, cancel_futures=True)
        if error is not None:
            raise error

    def _sent(self, request: Any) -> None:
        """httpx hook: one more HTTP request on the wire (first attempts and retries alike)."""
        with self._lock():
            self._state["usage"]["http_requests"] += 1

    def _request(self, index: int, conv: Sequence[Message], max_new_tokens: int) -> str:
        import openai

        client = self._state["client"]
        messages = [{"role": m["role"], "content": m["content"]} for m in conv]
        with self._lock():
            self._state["usage"]["prompts"] += 1
        last: BadResponse | None = None
        for _ in range(self.max_retries + 1):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=self.model,
                    messages=messages,
                    temperature=0.0,
                    **{self.max_tokens_param: max_new_tokens},
                )
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                raise self._gave_up(exc) from None
            except openai.APIStatusError as exc:
                raise self._fatal(index, exc, max_new_tokens) from None
            try:
                return self._record(_parse(raw.status_code, raw.headers, raw.content))
            except BadResponse as exc:
                with self._lock():
                    self._state["usage"]["bad_responses"] += 1
                if not exc.retry:
                    raise UserError(f"openai: {self.url}: {exc}") from None
                last = exc  # the server is up, only this body was unusable: ask again now
        raise self._gave_up(last)

    def _gave_up(self, exc: Exception | None) -> UserError:
        return UserError(
            f"openai: {self.url}: giving up after {self.max_retries + 1} attempts "
            f"({_describe(exc)})"
        )

    def _fatal(self, index: int, exc: Any, max_new_tokens: int) -> Exception:
        status, msg = exc.status_code, _message(exc)
        if status in RETRY_STATUS or status >= 500:  # the SDK retried it max_retries times
            if _error_code(exc) == "insufficient_quota":
                return UserError(
                    f"openai: {self.url}: quota exhausted (429 insufficient_quota): {msg}"
                )
            return self._gave_up(exc)
        if status in (401, 403):
            hint = "check the key" if self._state.get("key_set") else "it is not set"
            return UserError(
                f"openai: {self.url} rejected the API key from ${self.api_key_env} "
                f"({status}; {hint}): {msg}"
            )
        if status == 404:
            return UserError(
                f"openai: {self.url}: model '{self.model}' or the chat endpoint "
                f"was not found (404): {msg}"
            )
        if status in (400, 413, 422) and any(m in msg.lower() for m in _CONTEXT_MARKERS):
            return PromptTooLongError(
                [(index, None)],
                limit=None,
                max_new_tokens=max_new_tokens,
                model=self.describe(),
                detail=msg,
            )
        return UserError(f"openai: {self.url} rejected the request ({status}): {msg}")

    def _record(self, answer: tuple[str, str | None, dict[str, Any]]) -> str:
        text, finish, usage = answer
        with self._lock():
            u = self._state["usage"]
            u["requests"] += 1
            for name in ("prompt_tokens", "completion_tokens"):
                value = usage.get(name)
                u[name] += value if isinstance(value, int) and value >= 0 else 0
            u["truncated"] += int(finish == "length")
            u["empty"] += int(not text)
        return text


class _Message(TypedDict):
    content: str


class _Choice(TypedDict):
    message: _Message
    finish_reason: NotRequired[str | None]


class _Completion(TypedDict):
    """What is read of a 200 chat completion (other keys are ignored)."""

    choices: Annotated[list[_Choice], Field(min_length=1)]
    usage: NotRequired[dict[str, Any] | None]


def _parse(status: int, headers: Any, body: bytes) -> tuple[str, str | None, dict[str, Any]]:
    """(answer text, finish_reason, usage) from a 200 chat completion, or BadResponse."""
    ctype = str(headers.get("content-type") or "")
    if "json" not in ctype.lower():
        head = " ".join(body[:80].decode("utf-8", "replace").split())
        raise BadResponse(
            f"answered {status} with {ctype or 'no content type'} ({head!r}...), not a JSON chat "
            "completion; base_url must be the API root, e.g. http://127.0.0.1:8000/v1",
            retry=False,
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadResponse(
            f"answered {status} with invalid or truncated JSON ({len(body)} bytes)", retry=True
        ) from None
    try:
        reply: _Completion = adapter(_Completion).validate_python(data)
    except ValidationError as exc:
        raise BadResponse(
            f"answered {status} with no usable answer ({config_error(exc, data, 'body')})",
            retry=True,
        ) from None
    choice = reply["choices"][0]
    return choice["message"]["content"], choice.get("finish_reason"), reply.get("usage") or {}


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return " ".join(str(err["message"]).split())[:300]
        if isinstance(err, str):
            return err[:300]
    return " ".join(str(getattr(exc, "message", exc)).split())[:300]


def _error_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    return err.get("code") if isinstance(err, dict) else getattr(exc, "code", None)


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "no attempt made"
    if isinstance(exc, BadResponse):
        return f"last: {exc}"
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} {status}: {_message(exc)}" if status else f"{name}: {_message(exc)}"
