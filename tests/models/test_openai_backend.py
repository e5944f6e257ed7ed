"""The ``openai`` backend against a local OpenAI-compatible server on 127.0.0.1: the SDK's
retries on 429/5xx/timeouts, ours on unusable 200s, one-line errors for a wrong key, an
unreachable port or a bad request."""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("openai")

from tests.models.openai_server import FakeOpenAI  # noqa: E402

from needlework.errors import UserError  # noqa: E402
from needlework.models import PromptTooLongError, load_backend  # noqa: E402
from needlework.models.openai import OpenAIChat  # noqa: E402

KEY_ENV = "NW_TEST_OPENAI_KEY"
KEY = {"api_key_env": KEY_ENV}


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAI(api_key="sk-test") as srv:
        yield srv


def test_answers_in_order_with_usage_and_greedy_requests(server):
    model = OpenAIChat(model="gpt-test", base_url=server.base_url, concurrency=4, **KEY)
    texts = [f"question {i} " + "w " * i for i in range(20)]
    outs = model.generate([conv(t) for t in texts], max_new_tokens=7)
    assert outs == [f"echo: {t}" for t in texts]
    body = server.bodies[0]
    assert body["model"] == "gpt-test" and body["temperature"] == 0 and body["max_tokens"] == 7
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    usage = model.usage()
    assert usage["requests"] == 20 and usage["retries"] == 0
    assert usage["prompt_tokens"] == sum(len(t.split()) for t in texts)
    assert usage["completion_tokens"] == 40
    assert model.describe() == f"openai:gpt-test@127.0.0.1:{server.port}"


def test_requests_run_concurrently_up_to_the_limit(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAI(delay_s=0.1) as srv:
        model = OpenAIChat(model="m", base_url=srv.base_url, concurrency=3, **KEY)
        start = time.monotonic()
        model.generate([conv(f"q{i}") for i in range(9)], max_new_tokens=4)
        elapsed = time.monotonic() - start
    assert srv.max_in_flight == 3
    assert elapsed < 0.9 * 0.1 * 9  # far below sequential time (3 waves ~ 0.3 s)


@pytest.mark.parametrize("trigger", ["RATE_LIMIT_ONCE", "ERROR_500_ONCE"])
def test_retryable_status_then_success(server, trigger):
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    assert model.generate([conv(f"{trigger} x"), conv("fine")], max_new_tokens=4) == [
        f"echo: {trigger} x",
        "echo: fine",
    ]
    assert server.attempts[f"{trigger} x"] == 2 and server.attempts["fine"] == 1
    assert model.usage()["retries"] == 1


def test_timeout_then_success(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAI(slow_s=4.0) as srv:
        model = OpenAIChat(model="m", base_url=srv.base_url, timeout_s=0.3, **KEY)
        start = time.monotonic()
        assert model.generate([conv("SLOW_ONCE z")], max_new_tokens=4) == ["echo: SLOW_ONCE z"]
        assert time.monotonic() - start < 3.5  # did not wait for the slow answer
        assert srv.attempts["SLOW_ONCE z"] == 2 and model.usage()["retries"] == 1


def test_gives_up_after_bounded_retries(server):
    model = OpenAIChat(model="m", base_url=server.base_url, max_retries=2, **KEY)
    with pytest.raises(UserError) as info:
        model.generate([conv("ALWAYS_500")], max_new_tokens=4)
    assert server.attempts["ALWAYS_500"] == 3
    msg = str(info.value)
    assert "\n" not in msg and "giving up after 3 attempts" in msg and "500" in msg


def test_wrong_key_fails_at_once(monkeypatch, server):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    with pytest.raises(UserError) as info:
        model.generate([conv("hello")], max_new_tokens=4)
    msg = str(info.value)
    assert f"rejected the API key from ${KEY_ENV} (401; check the key)" in msg
    assert "sk-wrong" not in msg and "\n" not in msg
    assert server.attempts["hello"] == 1  # not retried


def test_missing_key(monkeypatch, server):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(UserError, match=f"environment variable {KEY_ENV} is not set"):
        OpenAIChat(model="m", **KEY).generate([conv("x")], max_new_tokens=4)
    # another server: no key is fine unless the server asks for one, then the error says so
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    with pytest.raises(UserError, match=r"\(401; it is not set\)"):
        model.generate([conv("x")], max_new_tokens=4)
    with FakeOpenAI(api_key=None) as open_server:
        model = OpenAIChat(model="m", base_url=open_server.base_url, **KEY)
        assert model.generate([conv("x")], max_new_tokens=4) == ["echo: x"]


def test_unreachable_endpoint_is_a_clear_error_after_bounded_retries(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAIChat(model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, **KEY)
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        model.generate([conv("x")], max_new_tokens=4)
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "giving up after 3 attempts" in msg
    assert "APIConnectionError" in msg and "\n" not in msg
    assert model.usage()["retries"] == 2


def test_context_length_error_is_a_too_long_prompt(server):
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    with pytest.raises(PromptTooLongError) as info:
        model.generate([conv("ok"), conv("TOO_LONG please")], max_new_tokens=4)
    assert info.value.items == [(1, None)]
    assert "maximum context length is 4097" in str(info.value)
    assert server.attempts["TOO_LONG please"] == 1


def test_quota_is_named_and_a_bad_request_is_not_retried(server):
    model = OpenAIChat(model="m", base_url=server.base_url, max_retries=1, **KEY)
    with pytest.raises(UserError, match="quota exhausted"):
        model.generate([conv("QUOTA")], max_new_tokens=4)
    with pytest.raises(UserError, match=r"rejected the request \(400\): Invalid value"):
        model.generate([conv("BAD_REQUEST")], max_new_tokens=4)
    # a 429 is the SDK's to retry (quota or rate limit alike); a 400 never is
    assert server.attempts["QUOTA"] == 2 and server.attempts["BAD_REQUEST"] == 1


def test_finished_requests_come_out_before_an_error(server):
    model = OpenAIChat(model="m", base_url=server.base_url, concurrency=4, **KEY)
    got = []
    with pytest.raises(UserError, match="400"):
        for i, _text in model.generate_iter(
            [conv("a"), conv("b"), conv("BAD_REQUEST_LATE"), conv("c")], max_new_tokens=4
        ):
            got.append(i)
    assert {0, 1, 3} <= set(got)  # all four were in flight: every success is delivered


def test_an_html_page_stops_at_once_naming_the_endpoint(server):
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    with pytest.raises(UserError) as info:
        model.generate([conv("HTML_PAGE")], max_new_tokens=4)
    msg = str(info.value)
    assert server.base_url in msg and "200" in msg and "text/html" in msg and "\n" not in msg
    assert "base_url must be the API root" in msg
    assert server.attempts["HTML_PAGE"] == 1  # a login page will not change: not retried


@pytest.mark.parametrize(
    ("trigger", "what"),
    [
        ("TRUNCATED_JSON", "invalid or truncated JSON"),
        ("NO_CHOICES", "field 'choices': is required but missing"),
        ("NULL_CONTENT", "field 'choices.0.message.content': expected str, got None"),
    ],
)
def test_unusable_200s_are_retried_then_stop_with_one_line(server, trigger, what):
    model = OpenAIChat(model="m", base_url=server.base_url, max_retries=2, **KEY)
    with pytest.raises(UserError) as info:
        model.generate([conv(trigger), conv("fine")], max_new_tokens=4)
    msg = str(info.value)
    assert what in msg and server.base_url in msg and "giving up after 3 attempts" in msg
    assert "\n" not in msg and server.attempts[trigger] == 3
    assert model.usage()["bad_responses"] == 3


@pytest.mark.parametrize("trigger", ["TRUNCATED_ONCE", "RESET_ONCE"])
def test_a_transient_broken_body_is_retried(server, trigger):
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    assert model.generate([conv(f"{trigger} q")], max_new_tokens=4) == [f"echo: {trigger} q"]
    assert server.attempts[f"{trigger} q"] == 2 and model.usage()["retries"] == 1


def test_a_finished_empty_completion_is_an_answer(server):
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    assert model.generate([conv("EMPTY_CONTENT")], max_new_tokens=4) == [""]
    assert model.usage()["empty"] == 1 and server.attempts["EMPTY_CONTENT"] == 1


def test_eval_against_a_garbage_server_exits_2_and_records_nothing(server, tmp_path, capsys):
    """Through the CLI: one line, exit 2, no prediction row for an answer never received."""
    import json
    from pathlib import Path

    from needlework.cli import main

    fixture = Path(__file__).parents[1] / "fixtures" / "kv_eval_tiny.jsonl"
    rows = [json.loads(line) for line in fixture.read_text().splitlines()[:2]]
    rows[1]["messages"][0]["content"] = "NO_CHOICES " + rows[1]["messages"][0]["content"]
    data = tmp_path / "kv.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(
        [
            "eval",
            "--model",
            f"openai:m@{server.base_url}",
            "--benchmark",
            "kv_retrieval",
            f"benchmarks.0.data_path={data}",
            f"out_dir={tmp_path / 'runs'}",
            "model.max_retries=1",
            f"model.api_key_env={KEY_ENV}",
            "model.concurrency=1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "field 'choices': is required" in err and "Traceback" not in err, err
    preds = list((tmp_path / "runs").rglob("predictions.jsonl"))
    recorded = [ln for p in preds for ln in p.read_text().splitlines()]
    assert all("NO_CHOICES" not in ln for ln in recorded)


def test_the_sdk_client_gets_the_bounds(server):
    """Retries and timeouts are the SDK's: the configured bounds reach its client."""
    model = OpenAIChat(model="m", base_url=server.base_url, max_retries=3, timeout_s=2.5, **KEY)
    client = model._client()
    assert client.max_retries == 3 and client.timeout == 2.5


def test_a_servers_retry_after_is_honoured(server):
    """``retry-after-ms: 1200`` on the 429: the SDK waits that, not its own first 0.4-0.5 s."""
    model = OpenAIChat(model="m", base_url=server.base_url, **KEY)
    start = time.monotonic()
    assert model.generate([conv("RATE_LIMIT_WAIT r")], max_new_tokens=4) == [
        "echo: RATE_LIMIT_WAIT r"
    ]
    assert time.monotonic() - start >= 1.2 and server.attempts["RATE_LIMIT_WAIT r"] == 2


def test_spec_forms():
    m = load_backend("openai:gpt-4o-mini")
    assert isinstance(m, OpenAIChat) and m.model == "gpt-4o-mini" and m.base_url is None
    m = load_backend("openai:ft:gpt-3.5-turbo-1106:org::abc@http://127.0.0.1:8000/v1")
    assert m.model == "ft:gpt-3.5-turbo-1106:org::abc"
    assert m.base_url == "http://127.0.0.1:8000/v1"
    with pytest.raises(UserError, match=r"field 'model.base_url': .*https\?://.*'127.0.0.1:8000'"):
        load_backend({"name": "openai", "model": "m", "base_url": "127.0.0.1:8000"})
    with pytest.raises(UserError, match="field 'model.concurrency': expected >= 1"):
        load_backend({"name": "openai", "model": "m", "concurrency": 0})


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ({"id": "x"}, "field 'choices': is required but missing"),
        ({"choices": []}, "field 'choices': expected at least 1 item"),
        ({"choices": "nope"}, "field 'choices': expected a list, got 'nope'"),
        ({"choices": [1]}, "field 'choices.0': expected a mapping, got 1"),
    ],
)
def test_a_200_without_usable_choices_says_what_it_holds(data, what):
    import json as _json

    from needlework.models import openai as backend

    with pytest.raises(backend.BadResponse) as info:
        backend._parse(200, {"content-type": "application/json"}, _json.dumps(data).encode())
    assert what in str(info.value)
