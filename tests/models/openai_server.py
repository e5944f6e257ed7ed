"""A tiny OpenAI-compatible /v1/chat/completions server on 127.0.0.1 for tests.

The last user message picks the behaviour, so concurrent requests stay independent:
``RATE_LIMIT_ONCE`` (429 with retry-after-ms: 20, then OK), ``RATE_LIMIT_WAIT`` (the same with
1200 ms), ``ERROR_500_ONCE``, ``SLOW_ONCE`` (first
answer after ``slow_s``, longer than the client's timeout), ``ALWAYS_500``, ``TOO_LONG`` (400
context_length_exceeded), ``BAD_REQUEST`` (400; ``BAD_REQUEST_LATE`` after 0.5 s), ``QUOTA``
(429 insufficient_quota); hostile
200s: ``HTML_PAGE`` (a login page), ``TRUNCATED_JSON`` / ``TRUNCATED_ONCE``, ``NO_CHOICES``,
``NULL_CONTENT``, ``EMPTY_CONTENT`` (a finished, empty completion), ``RESET_ONCE`` (connection
closed mid-body); anything else is answered ``echo: <content>`` after ``delay_s``.

``chaos`` (a probability) turns it into a chaos server: each attempt at each prompt is, with that
probability, answered by one hostile behaviour drawn from ``CHAOS`` by a generator seeded with
(``chaos_seed``, prompt, attempt), so a run is reproducible whatever the request order.
``max_requests`` bounds what one test may send; beyond it every request gets a 500.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAOS = ("RATE_LIMIT", "ERROR_500", "SLOW", "TRUNCATED", "RESET", "NO_CHOICES", "HTML_PAGE")


class FakeOpenAI:
    def __init__(
        self,
        api_key: str | None = "sk-test",
        delay_s: float = 0.0,
        slow_s: float = 1.0,
        chaos: float = 0.0,
        chaos_seed: int = 0,
        max_requests: int = 10_000,
    ):
        self.api_key, self.delay_s, self.slow_s = api_key, delay_s, slow_s
        self.chaos, self.chaos_seed, self.max_requests = chaos, chaos_seed, max_requests
        self.chaos_seen: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, extra = server.answer(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    reset = extra.pop("X-Reset", None)
                    self.send_response(status)
                    self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if reset:  # half the body, then the connection goes away
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, headers: dict[str, str], body: dict[str, Any]):
        if not path.endswith("/chat/completions"):
            return 404, _error("not found", "not_found"), {}
        with self.lock:
            self.bodies.append(body)
            self.headers.append(headers)
            content = body["messages"][-1]["content"]
            self.attempts[content] += 1
            n = self.attempts[content]
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided: sk-wr***", "invalid_api_key"), {}
        trigger = content
        if len(self.bodies) > self.max_requests:
            return 500, _error("request budget of this test server exhausted", None), {}
        if self.chaos:
            rng = random.Random(f"{self.chaos_seed}:{content}:{n}")
            if rng.random() < self.chaos:
                kind = rng.choice(CHAOS)
                with self.lock:
                    self.chaos_seen[kind] += 1
                trigger, n = (f"{kind}_ONCE" if kind != "HTML_PAGE" else kind), 1
        if trigger.startswith("RATE_LIMIT_ONCE") and n == 1:
            return (
                429,
                _error("Rate limit reached", "rate_limit_exceeded"),
                {"retry-after-ms": "20"},
            )
        if trigger.startswith("RATE_LIMIT_WAIT") and n == 1:
            return (
                429,
                _error("Rate limit reached", "rate_limit_exceeded"),
                {"retry-after-ms": "1200"},
            )
        if trigger.startswith("ERROR_500_ONCE") and n == 1:
            return 500, _error("The server had an error", None), {}
        if trigger.startswith("ALWAYS_500"):
            return 500, _error("The server had an error", None), {}
        if trigger.startswith("QUOTA"):
            return 429, _error("You exceeded your current quota", "insufficient_quota"), {}
        if trigger.startswith("TOO_LONG"):
            msg = "This model's maximum context length is 4097 tokens. However, you requested 5000"
            return 400, _error(msg, "context_length_exceeded"), {}
        if trigger.startswith("BAD_REQUEST"):
            if trigger.startswith("BAD_REQUEST_LATE"):  # the others are surely in flight by then
                time.sleep(0.5)
            return 400, _error("Invalid value for 'messages'", "invalid_value"), {}
        if trigger.startswith("HTML_PAGE"):
            page = b"<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>"
            return 200, page, {"Content-Type": "text/html; charset=utf-8"}
        if trigger.startswith("TRUNCATED_JSON") or (
            trigger.startswith("TRUNCATED_ONCE") and n == 1
        ):
            return 200, b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mess', {}
        if trigger.startswith("NO_CHOICES"):  # NO_CHOICES_ONCE too
            return 200, {"id": "x", "object": "chat.completion", "model": body["model"]}, {}
        if trigger.startswith("RESET_ONCE") and n == 1:
            return 200, _completion(body, "never seen", n), {"X-Reset": "1"}
        if trigger.startswith("SLOW_ONCE") and n == 1:
            time.sleep(self.slow_s)
        elif self.delay_s:
            time.sleep(self.delay_s)
        text: str | None = f"echo: {content}"
        if trigger.startswith("NULL_CONTENT"):
            text = None
        elif trigger.startswith("EMPTY_CONTENT"):
            text = ""
        return 200, _completion(body, text, n, prompt=content), {}


def _completion(body: dict[str, Any], text: str | None, n: int, prompt: str = "") -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": 2,
            "total_tokens": len(prompt.split()) + 2,
        },
    }


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
