"""An eval against a chaos server (127.0.0.1, bounded requests) answering 429/500/slow/truncated/
reset/no-choices/HTML at random either completes with every sample answered by a real response
or stops with one line and exit 2; resumed against a clean server it completes, with predictions
byte-identical to an undisturbed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openai")

from tests.models.openai_server import FakeOpenAI  # noqa: E402

from needlework.cli import main  # noqa: E402

KEY_ENV = "NW_TEST_OPENAI_KEY"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "kv_eval_tiny.jsonl"


def _eval(base_url: str, data: Path, out: Path) -> int:
    return main(
        [
            "eval",
            "--model",
            f"openai:m@{base_url}",
            "--benchmark",
            "kv_retrieval",
            f"benchmarks.0.data_path={data}",
            f"out_dir={out}",
            f"model.api_key_env={KEY_ENV}",
            "model.max_retries=3",
            "model.timeout_s=0.3",
            "model.concurrency=4",
        ]
    )


def _predictions(out: Path) -> Path:
    (path,) = out.rglob("predictions.jsonl")
    return path


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    """24 KV prompts (the fixture's 8, three times with fresh ids and a varied question)."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    out = []
    for copy in range(3):
        for row in rows:
            row = json.loads(json.dumps(row))
            row["id"] = f"{row['id']}-c{copy}"
            row["messages"][0]["content"] += f" (copy {copy})"
            out.append(row)
    path = tmp_path / "kv.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def _chaos_run(data: Path, tmp: Path, calm: bytes, capsys, seed: int) -> int:
    out = tmp / f"chaos{seed}"
    with FakeOpenAI(slow_s=0.6, chaos=0.2, chaos_seed=seed, max_requests=400) as chaos:
        code = _eval(chaos.base_url, data, out)
        assert sum(chaos.chaos_seen.values()) > 0 and len(chaos.bodies) <= 400
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err, err
    if code == 2:  # stopped: one line naming the endpoint
        (line,) = [ln for ln in err.splitlines() if "error" in ln.lower()] or [err]
        assert chaos.base_url in line, err
    found = list(out.rglob("predictions.jsonl"))
    recorded = found[0].read_text().splitlines() if found else []
    for row in map(json.loads, recorded):  # only real answers were ever recorded
        assert row["output"].startswith("echo: Do a task"), row
    if code == 0:
        assert len(recorded) == 24

    with FakeOpenAI(slow_s=0.6) as clean:  # another port: the endpoint may change on resume
        assert _eval(clean.base_url, data, out) == 0, capsys.readouterr().err
        if code == 0:
            assert clean.bodies == []  # finished: nothing is asked again
    assert _predictions(out).read_bytes() == calm
    return code


def test_chaos_then_clean_resume_equals_an_undisturbed_run(data, tmp_path, capsys):
    with FakeOpenAI(slow_s=0.6) as clean:
        assert _eval(clean.base_url, data, tmp_path / "calm") == 0
    calm = _predictions(tmp_path / "calm").read_bytes()
    capsys.readouterr()
    endings = [_chaos_run(data, tmp_path, calm, capsys, seed) for seed in range(6)]
    assert set(endings) == {0, 2}, endings  # the seeds cover a finish and a clean stop
