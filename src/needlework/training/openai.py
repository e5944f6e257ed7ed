"""OpenAI supervised finetuning: validate locally, upload, create the job, poll until it ends.

The paper's GPT-3.5 Turbo path (Xiong et al., arXiv:2406.19292 §3.1: gpt-3.5-turbo-1106 on 150
multi-subkey samples, 3 epochs; App. A.1 says 2 — see configs/train/openai_gpt35_multi_subkey.yaml).

Run:  OPENAI_API_KEY=... needlework train --config configs/train/openai_gpt35_multi_subkey.yaml

Every step is recorded in ``<run>/openai_job.json`` as soon as it happens (file id, job id, status,
events, fine-tuned model), so ``--resume`` after an interruption re-uses the uploaded file and
polls the recorded job instead of paying for a second one. The API key is read from the
environment only. HTTP retries are the SDK's (``max_retries``, ``timeout_s``: 408/409/429/5xx and
connection errors, honouring Retry-After); polling waits through an injectable ``sleep``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from needlework.config import NonNegativeInt, PositiveInt, config, validate
from needlework.errors import ConfigError, DataError, UserError
from needlework.io import sha256_file, write_json, write_jsonl
from needlework.registry import trainers

if TYPE_CHECKING:
    from needlework.training.config import TrainConfig
    from needlework.training.data import ChatRow

STATE = "openai_job.json"
UPLOAD = "train.openai.jsonl"
VALIDATION = "openai_validation.json"
TERMINAL = ("succeeded", "failed", "cancelled")
MIN_EXAMPLES = 10  # the API rejects smaller training files
SLEEP: Callable[[float], None] = time.sleep  # tests replace this to poll instantly


@trainers.register("openai")
@config
class OpenAIFT:
    """OpenAI fine-tuning API (any compatible server via base_url)."""

    model: str = "gpt-3.5-turbo-1106"
    epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    suffix: Annotated[str, Field(max_length=64)] | None = None
    """Up to 64 characters added to the fine-tuned model's name."""
    system_message: str | None = None
    """Prepended to rows without a system message (the official code used "Write a response that
    appropriately completes the request.")."""
    base_url: str | None = None
    """API root, e.g. http://127.0.0.1:8000/v1; None = api.openai.com."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key (never put keys in configs)."""
    token_counter: str | None = "tiktoken:cl100k_base"
    """needlework.tokenization spec for local per-example token counts; None skips counting."""
    max_example_tokens: PositiveInt = 16385
    """Longest accepted example (gpt-3.5-turbo-1106 context); checked locally before upload."""
    poll_interval_s: NonNegativeFloat = 30.0
    max_wait_s: NonNegativeFloat | None = None
    """Stop polling after this long (the job keeps running; --resume polls it again)."""
    max_retries: NonNegativeInt = 5
    """Retries per HTTP call on 429 / 5xx / connection errors (then a one-line error)."""
    timeout_s: PositiveFloat = 60.0

    def __post_init__(self) -> None:
        # `PositiveInt | Literal["auto"]` would say the same, but a union's errors name the
        # union member (`epochs.constrained-int`) instead of the field
        for name in ("epochs", "batch_size", "learning_rate_multiplier"):
            value = getattr(self, name)
            if value != "auto" and value <= 0:
                raise ValueError(f"{name}: expected 'auto' or > 0, got {value}")

    def preflight(self, cfg: TrainConfig) -> None:
        from needlework.models.base import need

        api_key(self)
        need("openai", "trainer: the openai backend", "pip install 'needlework[openai]'")

    def train(
        self, cfg: TrainConfig, run_dir: Path, rows: list[ChatRow], *, resume: bool
    ) -> dict[str, Any]:
        return OpenAIJob(self, run_dir, sleep=SLEEP).run(rows)


def api_key(unit: OpenAIFT) -> str:
    key = os.environ.get(unit.api_key_env, "").strip()
    if not key:
        raise UserError(
            f"trainer.api_key_env: ${unit.api_key_env} is not set (the OpenAI API "
            f"key is read from the environment only)"
        )
    return key


def openai_rows(unit: OpenAIFT, rows: list[ChatRow]) -> list[dict[str, Any]]:
    """Rows in the chat finetuning format, with the configured system message where missing."""
    out = []
    for row in rows:
        messages = list(row.messages)
        if unit.system_message is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": unit.system_message})
        out.append({"messages": messages})
    return out


def validate_upload(
    unit: OpenAIFT, rows: list[ChatRow], payload: list[dict[str, Any]]
) -> dict[str, Any]:
    """Local checks the API would otherwise fail on after upload; returns token statistics.

    Role order and a final non-empty assistant turn were checked when the rows were read.
    Counts follow OpenAI's chat accounting: 3 tokens per message + role + content, 3 to prime
    the reply.
    """
    if len(payload) < MIN_EXAMPLES:
        raise DataError(
            f"{rows[0].source.rsplit(':', 1)[0]}: {len(payload)} examples; the "
            f"OpenAI finetuning API needs at least {MIN_EXAMPLES}"
        )
    report: dict[str, Any] = {"examples": len(payload), "token_counter": unit.token_counter}
    if unit.token_counter is None:
        return report
    from needlework.tokenization import load_counter

    try:
        counter = load_counter(unit.token_counter)
    except UserError as exc:
        raise ConfigError(str(exc), field="trainer.token_counter") from None
    counts = [
        3
        + sum(
            3 + len(counter.encode(m["role"])) + len(counter.encode(m["content"]))
            for m in item["messages"]
        )
        for item in payload
    ]
    longest = max(range(len(counts)), key=counts.__getitem__)
    if counts[longest] > unit.max_example_tokens:
        raise DataError(
            f"{rows[longest].source}: example has {counts[longest]} tokens, more "
            f"than trainer.max_example_tokens={unit.max_example_tokens}"
        )
    epochs = unit.epochs if unit.epochs != "auto" else None
    report.update(
        tokens_per_example={
            "min": min(counts),
            "max": max(counts),
            "mean": round(sum(counts) / len(counts), 1),
        },
        total_tokens=sum(counts),
        billed_tokens_estimate=sum(counts) * epochs if epochs else None,
    )
    return report


class OpenAIJob:
    """Upload -> create -> poll, resumable from ``openai_job.json``."""

    def __init__(
        self,
        unit: OpenAIFT,
        run_dir: Path,
        *,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.unit, self.run_dir, self.sleep, self.log, self.clock = unit, run_dir, sleep, log, clock
        self.client = client
        self.state_path = run_dir / STATE
        self.state: dict[str, Any] = {}
        if self.state_path.is_file():
            import json

            try:
                text = json.loads(self.state_path.read_text(encoding="utf-8"))
            except ValueError:
                raise UserError(
                    f"{self.state_path}: not the JSON job record this run wrote; move it away "
                    "to start the finetuning job afresh"
                ) from None
            self.state = validate(dict[str, Any], text, source=str(self.state_path))

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        write_json(self.state_path, self.state)

    def run(self, rows: list[ChatRow]) -> dict[str, Any]:
        unit = self.unit
        if self.client is None:
            import openai

            self.client = openai.OpenAI(
                api_key=api_key(unit),
                base_url=unit.base_url,
                max_retries=unit.max_retries,
                timeout=unit.timeout_s,
            )
        if not self.state.get("file_id"):
            payload = openai_rows(unit, rows)
            report = validate_upload(unit, rows, payload)
            write_json(self.run_dir / VALIDATION, report)
            upload = self.run_dir / UPLOAD
            write_jsonl(upload, payload)
            with upload.open("rb") as fh:
                created = self.call(
                    "upload training file", self.client.files.create, file=fh, purpose="fine-tune"
                )
            self.save(file_id=created.id, file_sha256=sha256_file(upload), examples=len(payload))
            self.log(f"openai: uploaded {upload.name} as {created.id} ({len(payload)} examples)")
        if not self.state.get("job_id"):
            job = self.call(
                "create fine-tuning job", self.client.fine_tuning.jobs.create, **self.job_params()
            )
            self.save(job_id=job.id, status=job.status, model=unit.model, events=[])
            self.log(f"openai: created job {job.id} on {unit.model}")
        else:
            self.log(f"openai: resuming job {self.state['job_id']} ({self.state.get('status')})")
        return self.poll()

    def job_params(self) -> dict[str, Any]:
        unit = self.unit
        hyper = {
            "n_epochs": unit.epochs,
            "batch_size": unit.batch_size,
            "learning_rate_multiplier": unit.learning_rate_multiplier,
        }
        params: dict[str, Any] = {
            "model": unit.model,
            "training_file": self.state["file_id"],
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }
        if unit.suffix:
            params["suffix"] = unit.suffix
        return params

    def poll(self) -> dict[str, Any]:
        job_id, start = self.state["job_id"], self.clock()
        while True:
            job = self.call("retrieve job", self.client.fine_tuning.jobs.retrieve, job_id)
            self.record_events(job_id)
            if job.status != self.state.get("status"):
                self.log(f"openai: job {job_id} is {job.status}")
            self.save(
                status=job.status,
                fine_tuned_model=job.fine_tuned_model,
                trained_tokens=getattr(job, "trained_tokens", None),
                error=_error_text(job),
            )
            if job.status == "succeeded":
                return {
                    "backend": "openai",
                    "model": job.fine_tuned_model,
                    "base_url": self.unit.base_url,
                }
            if job.status in TERMINAL:
                raise UserError(
                    f"openai: job {job_id} {job.status}: "
                    f"{self.state['error'] or 'no error message'}"
                )
            waited = self.clock() - start
            if self.unit.max_wait_s is not None and waited >= self.unit.max_wait_s:
                raise UserError(
                    f"openai: job {job_id} still {job.status} after {waited:.0f}s; "
                    f"run again with --resume to keep polling it"
                )
            self.sleep(self.unit.poll_interval_s)

    def record_events(self, job_id: str) -> None:
        """Merge the newest events into the state (the API lists them newest first)."""
        page = self.call(
            "list job events", self.client.fine_tuning.jobs.list_events, job_id, limit=100
        )
        known = {e["id"] for e in self.state.get("events", [])}
        new = [e.model_dump(mode="json") for e in reversed(page.data) if e.id not in known]
        for event in new:
            self.log(f"openai: {event.get('message', '')}")
        if new:
            self.save(events=self.state.get("events", []) + new)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; an error the SDK's own retries did not cure is one line."""
        import openai

        transient = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
        try:
            return fn(*args, **kwargs)
        except openai.APIError as exc:
            if isinstance(exc, openai.AuthenticationError):
                why = f": the API key in ${self.unit.api_key_env} was rejected"
            elif isinstance(exc, transient):
                why = f" failed after {self.unit.max_retries + 1} tries: {_short(exc)}"
            else:
                why = f": {_short(exc)}"
            raise UserError(f"openai: {what}{why}") from None


def _short(exc: Exception) -> str:
    """``HTTP 429: <server message>`` (one line) for an SDK exception."""
    from needlework.models.openai import _message

    status = getattr(exc, "status_code", None)
    return f"HTTP {status}: {_message(exc)}" if status else _message(exc)


def _error_text(job: Any) -> str | None:
    error = getattr(job, "error", None)
    if not error:
        return None
    message = getattr(error, "message", None) or (
        error.get("message") if isinstance(error, dict) else None
    )
    return message or str(error)
