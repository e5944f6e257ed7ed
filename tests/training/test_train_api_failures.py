"""A training run that fails before its first checkpoint leaves nothing a rerun trips on."""

from __future__ import annotations

import json

import pytest
from tests.training.helpers import kv_rows, train_config, write_rows

from needlework.errors import UserError
from needlework.training import api
from needlework.training.hf_sft import HfSFT


def test_failure_before_a_checkpoint_removes_the_new_run_folder(tmp_path, monkeypatch):
    data = write_rows(tmp_path / "train.jsonl", kv_rows(8))
    cfg = train_config(tmp_path / "run", data)

    def fail(self, cfg, run_dir, rows, *, resume):
        (run_dir / "base_model").mkdir()  # e.g. a built base model, then the failure
        raise UserError("hf_sft: simulated failure while loading")

    monkeypatch.setattr(HfSFT, "train", fail)
    with pytest.raises(UserError, match="simulated failure"):
        api.train(cfg)
    assert not (tmp_path / "run").exists()


def test_failure_after_a_checkpoint_keeps_it_and_records_why(tmp_path, monkeypatch):
    data = write_rows(tmp_path / "train.jsonl", kv_rows(8))
    cfg = train_config(tmp_path / "run", data)

    def fail(self, cfg, run_dir, rows, *, resume):
        (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(HfSFT, "train", fail)
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted" and (tmp_path / "run/checkpoints/checkpoint-2").is_dir()


def test_negative_max_steps_is_refused(tmp_path):
    data = write_rows(tmp_path / "train.jsonl", kv_rows(8))
    with pytest.raises(
        UserError, match=r"'trainer.max_steps': expected -1 \(train for epochs\) or >= 1"
    ):
        train_config(tmp_path / "run", data, max_steps=-5)
