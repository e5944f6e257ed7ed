"""A local stand-in for the few OpenAI endpoints the finetuning backend uses (stdlib only).

Serves ``POST /v1/files``, ``POST /v1/fine_tuning/jobs``, ``GET /v1/fine_tuning/jobs/{id}`` and
``GET /v1/fine_tuning/jobs/{id}/events`` on 127.0.0.1. A job advances one status per retrieve
(validating_files -> running -> running -> succeeded, or -> failed). ``fail`` queues error
statuses per route, e.g. ``{"POST /files": [429]}`` answers the first upload with a rate limit.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SUCCESS = ["validating_files", "running", "running", "succeeded"]
FAILURE = ["validating_files", "failed"]


class FakeOpenAI:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.uploads: list[bytes] = []
        self.job_requests: list[dict[str, Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, list[int]] = {}
        self.always_fail: dict[str, int] = {}
        self.outcome = SUCCESS
        self.auth_headers: list[str] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self.thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- endpoint logic -------------------------------------------------------------------------
    def route(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any], dict]:
        path = path.split("?")[0].removeprefix("/v1")
        key = f"{method} {re.sub(r'/ftjob-[^/]+', '/{id}', path)}"
        self.calls[key] += 1
        if key in self.always_fail:
            return self.always_fail[key], {"error": {"message": "server exploded"}}, {}
        if self.fail.get(key):
            status = self.fail[key].pop(0)
            return status, {"error": {"message": "slow down"}}, {"retry-after-ms": "1"}
        if key == "POST /files":
            self.uploads.append(_file_part(body))
            return (
                200,
                {
                    "id": f"file-{len(self.uploads)}",
                    "object": "file",
                    "bytes": len(self.uploads[-1]),
                    "created_at": 1,
                    "filename": "train.openai.jsonl",
                    "purpose": "fine-tune",
                    "status": "processed",
                },
                {},
            )
        if key == "POST /fine_tuning/jobs":
            request = json.loads(body)
            self.job_requests.append(request)
            job_id = f"ftjob-{len(self.jobs) + 1}"
            self.jobs[job_id] = {"request": request, "polls": 0, "events": []}
            return 200, self.job(job_id), {}
        match = re.fullmatch(r"/fine_tuning/jobs/(ftjob-[^/]+)(/events)?", path)
        if method == "GET" and match and match.group(1) in self.jobs:
            job_id = match.group(1)
            if match.group(2):
                events = self.jobs[job_id]["events"][::-1]  # newest first, as the API does
                return 200, {"object": "list", "data": events, "has_more": False}, {}
            self.advance(job_id)
            return 200, self.job(job_id), {}
        return 404, {"error": {"message": f"no route {key}"}}, {}

    def advance(self, job_id: str) -> None:
        job = self.jobs[job_id]
        job["polls"] = min(job["polls"] + 1, len(self.outcome) - 1)
        status = self.outcome[job["polls"]]
        n = len(job["events"])
        job["events"].append(
            {
                "id": f"ftevent-{n}",
                "object": "fine_tuning.job.event",
                "created_at": 100 + n,
                "level": "info",
                "type": "message",
                "message": f"Job is {status} (poll {job['polls']})",
            }
        )

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        status = self.outcome[job["polls"]]
        request = job["request"]
        return {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": 1,
            "model": request["model"],
            "training_file": request["training_file"],
            "status": status,
            "organization_id": "org-test",
            "result_files": [],
            "seed": 0,
            "validation_file": None,
            "finished_at": None,
            "hyperparameters": request["method"]["supervised"]["hyperparameters"],
            "fine_tuned_model": (
                f"ft:{request['model']}:needlework::{job_id}" if status == "succeeded" else None
            ),
            "trained_tokens": 1234 if status == "succeeded" else None,
            "error": (
                {"code": "invalid_training_file", "message": "bad file", "param": None}
                if status == "failed"
                else None
            ),
        }


def _file_part(body: bytes) -> bytes:
    """The uploaded file's bytes out of a multipart/form-data body."""
    assert b'name="purpose"' in body and b"fine-tune" in body
    start = body.index(b"\r\n\r\n", body.index(b"filename=")) + 4
    return body[start : body.index(b"\r\n--", start)]


def _handler(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.auth_headers.append(self.headers.get("Authorization", ""))
            status, payload, headers = fake.route(method, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
