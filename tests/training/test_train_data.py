"""Row validation, dataset mixing and config checks: everything that runs before a model loads."""

from __future__ import annotations

import json

import pytest

from needlework.config import load_config
from needlework.errors import ConfigError, DataError
from needlework.training.config import TrainConfig
from needlework.training.data import ChatRow, chat_row, mix_rows, read_chat_rows
from needlework.training.hf_sft import HfSFT
from needlework.training.sft_run import tiny_kwargs

from .helpers import kv_rows, write_rows

U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}


def test_reads_messages_and_prompt_completion_rows(tmp_path):
    rows = kv_rows(3)
    trl_row = {"prompt": rows[0]["messages"][:1], "completion": rows[0]["messages"][1:]}
    path = write_rows(tmp_path / "t.jsonl", [*rows, trl_row])
    got = read_chat_rows(path)
    assert len(got) == 4
    assert got[3].messages == got[0].messages
    assert got[1].source == f"{path}:2"
    assert got[0].completion == [rows[0]["messages"][1]]
    assert read_chat_rows(path, limit=2)[-1].source.endswith(":2")


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [json.dumps(r) for r in kv_rows(2)] + ["{not json", json.dumps(kv_rows(1)[0])]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:3: invalid JSON"):
        read_chat_rows(path)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([A, U], r"field 'messages\.0\.role': is 'assistant' but 'user' was expected"),
        ([U, U, A], r"field 'messages\.1\.role': is 'user' but 'assistant'"),
        ([U], "must end with an assistant turn"),
        (
            [U, {"role": "assistant", "content": "  "}],
            r"field 'messages\.1\.content': the final assistant turn is empty",
        ),
        ([U, {"role": "bot", "content": "x"}], r"field 'messages\.1\.role': expected one of"),
        ([U, {"role": "assistant", "content": 3}], r"field 'messages\.1\.content': expected str"),
        ([], r"field 'messages': expected at least 1 item"),
        ([{"role": "system", "content": "s"}, A], r"field 'messages\.1\.role': is 'assistant'"),
    ],
)
def test_bad_conversations_are_rejected_with_a_reason(messages, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        chat_row({"messages": messages}, "f.jsonl:7")
    assert str(info.value).startswith("f.jsonl:7: field ") and "\n" not in str(info.value)


def test_system_message_and_multi_turn_are_accepted():
    sys = {"role": "system", "content": "s"}
    assert len(chat_row({"messages": [sys, U, A, U, A]}, "w").messages) == 5


def test_missing_field_and_empty_file(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", [{"text": "x"}])
    with pytest.raises(ConfigError, match=r":1: field 'messages': is required but missing"):
        read_chat_rows(path)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        read_chat_rows(tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="file not found"):
        read_chat_rows(tmp_path / "missing.jsonl")


def _rows(prefix: str, n: int) -> list[ChatRow]:
    return [
        ChatRow((U, {"role": "assistant", "content": f"{prefix}{i}"}), f"{prefix}:{i}")
        for i in range(n)
    ]


def test_mixing_is_deterministic_and_hits_the_ratio():
    primary, other = _rows("p", 30), _rows("o", 100)
    mixed, stats = mix_rows(primary, other, 0.25, seed=1)
    again, _ = mix_rows(primary, other, 0.25, seed=1)
    other_seed, _ = mix_rows(primary, other, 0.25, seed=2)
    assert [r.source for r in mixed] == [r.source for r in again]
    assert [r.source for r in mixed] != [r.source for r in other_seed]
    assert stats["mix_rows"] == 10 and len(mixed) == 40 and stats["mix_passes"] == 0
    assert sum(r.source.startswith("o:") for r in mixed) == 10
    assert len({r.source for r in mixed}) == 40  # drawn without replacement
    assert all(r in mixed for r in primary)


def test_mixing_repeats_a_small_source_in_whole_passes():
    mixed, stats = mix_rows(_rows("p", 10), _rows("o", 4), 0.5, seed=0)
    assert stats["mix_rows"] == 10 and stats["mix_passes"] == 2
    counts = {}
    for r in mixed:
        if r.source.startswith("o:"):
            counts[r.source] = counts.get(r.source, 0) + 1
    assert sorted(counts.values()) == [2, 2, 3, 3]


def _cfg(**over):
    data = {
        "trainer": {"name": "hf_sft", "model_path": "m"},
        "train_path": "t.jsonl",
        "out_dir": "runs/x",
        **over,
    }
    return load_config(TrainConfig, data=data)


def test_ratio_zero_keeps_the_mix_path_and_mixes_nothing(tmp_path):
    """A ratio sweep's first point: same config as the others but for ``mix_ratio``."""
    from needlework.training.data import load_training_rows

    train = write_rows(tmp_path / "t.jsonl", kv_rows(5))
    cfg = _cfg(train_path=str(train), mix_path=str(tmp_path / "never-read.jsonl"), mix_ratio=0.0)
    rows, stats = load_training_rows(cfg)
    assert len(rows) == 5 and stats["mix_rows"] == 0 and stats["mix_ratio"] == 0.0


def test_a_datasets_folder_mixes_in_exactly_like_the_same_jsonl(tmp_path):
    """``mix_dataset`` goes through ``datasets.load_dataset`` (a hub id online, here a local
    folder offline): the same rows as ``mix_path`` on that file, so the same mix."""
    from needlework.training.data import load_training_rows

    train = write_rows(tmp_path / "t.jsonl", kv_rows(12))
    chat = [{"messages": [{**U, "content": f"hi {i}"}, {**A, "content": f"yo {i}"}], "x": i}
            for i in range(9)]  # fmt: skip
    folder = tmp_path / "chat_ds"
    folder.mkdir()
    jsonl = write_rows(folder / "train.jsonl", chat)
    by_path, s1 = load_training_rows(
        _cfg(train_path=str(train), mix_path=str(jsonl), mix_ratio=0.25)
    )
    by_ds, s2 = load_training_rows(
        _cfg(train_path=str(train), mix_dataset={"path": str(folder), "limit": 6}, mix_ratio=0.25)
    )
    whole, s3 = load_training_rows(
        _cfg(
            train_path=str(train), mix_dataset={"path": str(folder), "limit": None}, mix_ratio=0.25
        )
    )
    assert [r.messages for r in whole] == [r.messages for r in by_path]
    assert s1["mix_source_sha256"] == s3["mix_source_sha256"]
    assert s2["mix_source_rows"] == 6 and s2["mix_rows"] == 4 and len(by_ds) == 16
    assert s2["mix_dataset"] == str(folder) and s2["mix_split"] == "train"


def test_a_mix_dataset_that_cannot_load_is_one_line(tmp_path, monkeypatch):
    from needlework.training.data import load_training_rows

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    cfg = _cfg(train_path=str(train), mix_dataset={"path": "nobody/no-such-set"}, mix_ratio=0.5)
    with pytest.raises(DataError) as info:
        load_training_rows(cfg)
    msg = str(info.value)
    assert msg.startswith("mix_dataset.path: cannot load 'nobody/no-such-set' split 'train'")
    assert "\n" not in msg
    bad = tmp_path / "bad_ds"
    bad.mkdir()
    write_rows(bad / "train.jsonl", [{"messages": [U]}])
    cfg = _cfg(train_path=str(train), mix_dataset={"path": str(bad)}, mix_ratio=0.5)
    with pytest.raises(ConfigError, match=r"bad_ds\[train\]:0: field 'messages'"):
        load_training_rows(cfg)


def test_config_builds_the_registered_unit():
    cfg = _cfg()
    assert isinstance(cfg.trainer, HfSFT) and cfg.trainer.method == "full"
    assert cfg.trainer.answer_only_loss is True and cfg.trainer.max_length is None


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"mix_ratio": 0.2}, "mix_ratio"),
        ({"mix_ratio": 1.0, "mix_path": "o.jsonl"}, "mix_ratio"),
        ({"mix_path": "o.jsonl", "mix_dataset": {"path": "a/b"}}, "mix_dataset"),
        ({"mix_dataset": {"path": "a/b", "limit": 0}}, "mix_dataset.limit"),
        (
            {"trainer": {"name": "hf_sft", "model_path": "m", "trl_overrides": {"max_length": 9}}},
            "trainer.trl_overrides",
        ),
        (
            {
                "trainer": {
                    "name": "hf_sft",
                    "model_path": "m",
                    "global_batch_size": 16,
                    "gradient_accumulation_steps": 2,
                }
            },
            "trainer.global_batch_size",
        ),
        (
            {"trainer": {"name": "hf_sft", "model_path": "m", "merge_lora": True}},
            "trainer.merge_lora",
        ),
        (
            {"trainer": {"name": "hf_sft", "model_path": "m", "learning_rate": 0}},
            "trainer.learning_rate",
        ),
        ({"trainer": {"name": "hf_sft", "model_path": "m", "method": "dora"}}, "trainer.method"),
        ({"trainer": {"name": "hf_sfd", "model_path": "m"}}, "trainer.name"),
        ({"trainer": {"name": "openai", "epochs": 0}}, "trainer.epochs"),
    ],
)
def test_config_errors_name_the_field(over, field):
    with pytest.raises(ConfigError) as info:
        _cfg(**over)
    assert f"field '{field}'" in str(info.value)


def test_tiny_model_spec():
    assert tiny_kwargs("tiny:llama-h128-l2-a4") == {
        "arch": "llama",
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 512,
    }
    assert tiny_kwargs("tiny:mistral")["hidden_size"] == 64
    with pytest.raises(ConfigError, match="bad tiny model spec"):
        tiny_kwargs("tiny:gpt2-h3")
