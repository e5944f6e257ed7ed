"""The ``scripted`` backend and the model-spec forms accepted by ``load_backend``."""

from __future__ import annotations

import json

import pytest

from needlework.errors import ConfigError
from needlework.models import load_backend, parse_model_spec
from needlework.models.scripted import Scripted

CONVS = [
    [{"role": "user", "content": "context\n\nQuestion: what?\n"}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "one line"}],
]


def test_scripted_modes():
    assert Scripted(mode="constant", text="42").generate(CONVS, max_new_tokens=3) == ["42", "42"]
    assert Scripted(mode="echo").generate(CONVS, max_new_tokens=3) == [
        CONVS[0][0]["content"],
        "one line",
    ]
    assert Scripted(mode="last_line").generate(CONVS, max_new_tokens=3) == [
        "Question: what?",
        "one line",
    ]
    echo = load_backend("scripted:echo")
    echo.generate(CONVS, max_new_tokens=3)
    assert echo.describe() == "scripted:echo" and echo.usage() == {"requests": 2}
    with pytest.raises(ConfigError, match="expected one of 'constant'"):
        load_backend("scripted:gold")  # the oracle run is the runner's gold_answers option


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("hf:./m", {"name": "hf", "path": "./m"}),
        ("vllm:org/model", {"name": "vllm", "path": "org/model"}),
        ("openai:gpt-4o", {"name": "openai", "model": "gpt-4o"}),
        ("openai:m@http://h:1/v1", {"name": "openai", "model": "m", "base_url": "http://h:1/v1"}),
        ("scripted:echo", {"name": "scripted", "mode": "echo"}),
        ({"name": "hf", "path": "p"}, {"name": "hf", "path": "p"}),
        (
            {"backend": "hf", "path": "p", "adapter": None},
            {"name": "hf", "path": "p", "adapter": None},
        ),
    ],
)
def test_parse_model_spec(spec, expected):
    assert parse_model_spec(spec) == expected


def test_training_run_folder_and_model_json(tmp_path):
    run = tmp_path / "train-run"
    run.mkdir()
    (run / "model.json").write_text(
        json.dumps(
            {"backend": "hf", "path": str(tmp_path / "base"), "adapter": str(run / "adapter")}
        )
    )
    model = load_backend(str(run))
    assert model.path == str(tmp_path / "base") and model.adapter == str(run / "adapter")
    assert load_backend(str(run / "model.json")) == model
    (run / "model.json").write_text(
        json.dumps({"backend": "openai", "model": "ft:gpt-3.5:x", "base_url": None})
    )
    assert load_backend(str(run)).model == "ft:gpt-3.5:x"


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("hf", "expected hf:PATH"),
        ("hf:", "expected hf:PATH"),
        ("gguf:model", "expected hf:PATH"),
        ({"path": "x"}, "expected a mapping with a 'name:' key"),
        ({"name": "hf", "backend": "vllm", "path": "x"}, "unknown key(s) 'backend'"),
        ({"name": "hf", "path": "x", "bogus": 1}, "unknown key(s) 'bogus'"),
        ({"name": "hf"}, "field 'model.path': is required"),
        ("scripted:telepathy", "expected one of 'constant'"),
    ],
)
def test_bad_specs_are_one_line_config_errors(spec, needle):
    with pytest.raises(ConfigError) as info:
        load_backend(spec)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_model_json(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_backend(str(tmp_path))


def test_a_bad_field_in_model_json_names_the_file(tmp_path):
    from needlework.models import parse_model_spec

    (tmp_path / "model.json").write_text('{"backend": "hf", "path": "./model", "extra": 1}')
    with pytest.raises(ConfigError) as info:
        parse_model_spec(str(tmp_path))
    assert str(tmp_path / "model.json") in str(info.value) and "'extra'" in str(info.value)
