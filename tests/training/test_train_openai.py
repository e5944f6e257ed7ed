"""The OpenAI finetuning backend against a local HTTP server: happy path, 429, 500, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openai")

from needlework.cli import main as cli_main  # noqa: E402
from needlework.config import load_config  # noqa: E402
from needlework.errors import DataError, UserError  # noqa: E402
from needlework.training import openai as openai_ft  # noqa: E402
from needlework.training.api import train  # noqa: E402
from needlework.training.config import TrainConfig  # noqa: E402

from .fake_openai import FAILURE, FakeOpenAI  # noqa: E402
from .helpers import kv_rows, write_rows  # noqa: E402

SYSTEM = "Write a response that appropriately completes the request."


@pytest.fixture
def server(monkeypatch):
    fake = FakeOpenAI()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    sleeps: list[float] = []
    monkeypatch.setattr(openai_ft, "SLEEP", sleeps.append)
    fake.sleeps = sleeps
    yield fake
    fake.close()


def config(tmp_path, base_url: str, n: int = 12, **unit):
    path = write_rows(tmp_path / "train.jsonl", kv_rows(n))
    unit = {
        "name": "openai",
        "model": "gpt-3.5-turbo-1106",
        "epochs": 3,
        "base_url": base_url,
        "poll_interval_s": 0,
        "max_retries": 2,
        "token_counter": "char",
        "system_message": SYSTEM,
        **unit,
    }
    data = {"trainer": unit, "train_path": str(path), "out_dir": str(tmp_path / "run")}
    return load_config(TrainConfig, data=data)


def test_job_runs_to_a_model_and_every_id_is_recorded(tmp_path, server):
    server.fail["POST /files"] = [429]  # rate-limited once, then accepted
    run = train(config(tmp_path, server.base_url))
    model = json.loads((run / "model.json").read_text())
    assert model == {
        "backend": "openai",
        "model": "ft:gpt-3.5-turbo-1106:needlework::ftjob-1",
        "base_url": server.base_url,
    }
    state = json.loads((run / "openai_job.json").read_text())
    assert state["file_id"] == "file-1" and state["job_id"] == "ftjob-1"
    assert state["status"] == "succeeded" and state["fine_tuned_model"] == model["model"]
    messages = [e["message"] for e in state["events"]]
    assert messages == [
        f"Job is {s} (poll {i})" for i, s in enumerate(["running", "running", "succeeded"], 1)
    ]
    assert server.calls["POST /files"] == 2  # the SDK retried the 429 (retry-after-ms: 1)
    assert server.uploads[0] == (run / "train.openai.jsonl").read_bytes()
    first = json.loads(server.uploads[0].splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == SYSTEM
    hyper = server.job_requests[0]["method"]["supervised"]["hyperparameters"]
    assert hyper == {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert set(server.auth_headers) == {"Bearer sk-test-key"}
    report = json.loads((run / "openai_validation.json").read_text())
    assert report["examples"] == 12 and report["tokens_per_example"]["max"] > 60
    assert report["billed_tokens_estimate"] == 3 * report["total_tokens"]


def test_missing_api_key_stops_before_anything_is_sent(tmp_path, server, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    cfg = config(tmp_path, server.base_url)
    with pytest.raises(UserError, match=r"\$OPENAI_API_KEY is not set"):
        train(cfg)
    assert sum(server.calls.values()) == 0 and not (tmp_path / "run").exists()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"trainer: {{name: openai, base_url: '{server.base_url}'}}\n"
        f"train_path: {tmp_path / 'train.jsonl'}\nout_dir: {tmp_path / 'run'}\n"
    )
    assert cli_main(["train", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert "OPENAI_API_KEY is not set" in err and "\n" not in err


def test_server_errors_are_retried_a_bounded_number_of_times_then_resume(tmp_path, server):
    server.always_fail["POST /fine_tuning/jobs"] = 500
    cfg = config(tmp_path, server.base_url)
    with pytest.raises(UserError, match=r"create fine-tuning job failed after 3 tries: HTTP 500"):
        train(cfg)
    assert server.calls["POST /fine_tuning/jobs"] == 3
    state = json.loads((tmp_path / "run" / "openai_job.json").read_text())
    assert state["file_id"] == "file-1" and "job_id" not in state
    del server.always_fail["POST /fine_tuning/jobs"]
    run = train(cfg, resume=True)
    assert server.calls["POST /files"] == 1, "the uploaded file is re-used"
    assert json.loads((run / "model.json").read_text())["model"].startswith("ft:")


def test_interrupted_polling_resumes_the_recorded_job(tmp_path, server, monkeypatch):
    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(openai_ft, "SLEEP", interrupt)
    cfg = config(tmp_path, server.base_url)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    state = json.loads((tmp_path / "run" / "openai_job.json").read_text())
    assert state["job_id"] == "ftjob-1" and state["status"] == "running"
    assert not (tmp_path / "run" / "model.json").exists()
    monkeypatch.setattr(openai_ft, "SLEEP", lambda s: None)
    run = train(cfg, resume=True)
    assert server.calls["POST /fine_tuning/jobs"] == 1 and server.calls["POST /files"] == 1
    state = json.loads((run / "openai_job.json").read_text())
    assert state["status"] == "succeeded"
    assert len({e["id"] for e in state["events"]}) == len(state["events"]) == 3


def test_a_failed_job_is_a_one_line_error(tmp_path, server):
    server.outcome = FAILURE
    with pytest.raises(UserError, match=r"^openai: job ftjob-1 failed: bad file$"):
        train(config(tmp_path, server.base_url))
    assert not (tmp_path / "run" / "model.json").exists()
    assert json.loads((tmp_path / "run" / "openai_job.json").read_text())["status"] == "failed"


def test_polling_gives_up_after_max_wait_and_says_how_to_resume(tmp_path, server):
    with pytest.raises(UserError, match="still running after .*--resume"):
        train(config(tmp_path, server.base_url, max_wait_s=0))


def test_token_counts_with_the_real_gpt35_tokenizer(tmp_path, server):
    path = Path(__file__).resolve().parents[3] / "shared/data/tokenizers/cl100k_base.tiktoken"
    if not path.is_file():
        pytest.skip(f"{path} not present (CI and dev machines have ../shared/data)")
    run = train(config(tmp_path, server.base_url, token_counter=f"tiktoken:cl100k_base@{path}"))
    report = json.loads((run / "openai_validation.json").read_text())
    rows = [json.loads(x) for x in (run / "train.openai.jsonl").read_text().splitlines()]
    chars = sum(len(m["content"]) for r in rows for m in r["messages"])
    # cl100k merges words and up to 3 digits per token: well under one token per character
    assert 0 < report["total_tokens"] < 0.7 * chars
    assert report["token_counter"].startswith("tiktoken:cl100k_base@")


def test_local_validation_runs_before_upload(tmp_path, server):
    with pytest.raises(DataError, match="needs at least 10"):
        train(config(tmp_path, server.base_url, n=5))
    with pytest.raises(
        DataError,
        match=r"train.jsonl:\d+: example has \d+ tokens, more than "
        r"trainer.max_example_tokens=50",
    ):
        train(config(tmp_path / "b", server.base_url, max_example_tokens=50))
    assert sum(server.calls.values()) == 0
