"""Resuming gives the uninterrupted result; bad settings and folders fail in one line, early."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("trl")

from needlework.cli import main as cli_main  # noqa: E402
from needlework.config import load_config  # noqa: E402
from needlework.errors import UserError  # noqa: E402
from needlework.io import exclusive_lock  # noqa: E402
from needlework.training.api import train  # noqa: E402
from needlework.training.config import TrainConfig  # noqa: E402

from .helpers import kv_rows, train_config, write_rows  # noqa: E402

# 16 rows, batch 4: 4 steps an epoch, so 6 steps end mid-epoch (1.5 epochs) -- the case where the
# Trainer, resumed from its final checkpoint, used to train a 7th step.
SCHEDULE = {"max_steps": 6, "per_device_batch_size": 4, "save_steps": 3, "logging_steps": 2}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def clone(run: Path, dest: Path) -> Path:
    """A copy of a run folder that resumes there (its config.yaml names the new out_dir)."""
    shutil.copytree(run, dest)
    config = dest / "config.yaml"
    config.write_text(config.read_text().replace(str(run), str(dest)))
    return dest


def drop(run: Path, *names: str) -> None:
    """Remove what a kill before these files were (fully) written would have left out."""
    for name in names:
        target = run / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted run: its config, folder, final weights' sha256 and run.json."""
    tmp = tmp_path_factory.mktemp("resume")
    data = write_rows(tmp / "train.jsonl", kv_rows(16))
    cfg = train_config(tmp / "run", data, **SCHEDULE)
    run = train(cfg)
    info = json.loads((run / "run.json").read_text())
    return cfg, run, sha256(run / "model" / "model.safetensors"), info, log_rows(run)


def test_resuming_after_the_final_checkpoint_trains_nothing_more(finished, tmp_path):
    cfg, run, weights, info, rows = finished
    copy = clone(run, tmp_path / "run")
    cfg = train_config(copy, cfg.train_path, **SCHEDULE)
    drop(copy, "model.json", "model")  # killed after checkpoint-6, before the final save
    train(cfg, resume=True)
    assert sha256(copy / "model" / "model.safetensors") == weights
    assert sorted(p.name for p in (copy / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-3",
        "checkpoint-6",
    ]
    resumed = log_rows(copy)
    assert resumed[-1]["step"] == 6 and resumed[:-1] == rows[:-1]
    metrics = json.loads((copy / "run.json").read_text())["train_metrics"]
    assert metrics["train_loss"] == info["train_metrics"]["train_loss"]
    assert metrics["epoch"] == info["train_metrics"]["epoch"] == 1.5


def test_resuming_mid_run_gives_the_same_weights_logs_and_whole_run_loss(finished, tmp_path):
    cfg, run, weights, info, rows = finished
    copy = clone(run, tmp_path / "run")
    cfg = train_config(copy, cfg.train_path, **SCHEDULE)
    drop(copy, "model.json", "model", "checkpoints/checkpoint-6")
    # a save killed midway (no trainer_state.json yet) is skipped and removed
    (copy / "checkpoints" / "checkpoint-6").mkdir()
    (copy / "checkpoints" / "checkpoint-6" / "model.safetensors").write_bytes(b"partial")
    train(cfg, resume=True)
    assert sha256(copy / "model" / "model.safetensors") == weights
    info2 = json.loads((copy / "run.json").read_text())
    assert info2["resumed_from"].endswith("checkpoint-3")
    # run.json's train_loss covers the whole run, not only steps 4-6 of the resumed process
    whole = info["train_metrics"]["train_loss"]
    assert info2["train_metrics"]["train_loss"] == pytest.approx(whole)
    resumed = log_rows(copy)
    drop_timing = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}
    assert resumed[:-1] == rows[:-1]  # every logged row identical, num_tokens included
    assert {k: v for k, v in resumed[-1].items() if k not in drop_timing} == pytest.approx(
        {k: v for k, v in rows[-1].items() if k not in drop_timing}
    )
    # a row at every checkpoint: the saved history covers each step trained before it
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 6]


def test_a_damaged_checkpoint_is_one_line_naming_its_folder(finished, tmp_path, capsys):
    cfg, run, *_ = finished
    copy = clone(run, tmp_path / "run")
    drop(copy, "model.json")
    weights = copy / "checkpoints" / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    cfg_file = tmp_path / "c.yaml"
    shutil.copy(copy / "config.yaml", cfg_file)
    assert cli_main(["train", "--config", str(cfg_file), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "checkpoint-6: damaged checkpoint (model.safetensors:" in err
    assert "delete this folder to resume from the previous checkpoint" in err


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr_scheduler": "foo"}, r"'trainer.lr_scheduler': foo is not a valid SchedulerType"),
        ({"lr_scheduler_kwargs": {"bogus": 1}}, r"'trainer.lr_scheduler_kwargs': .*bogus"),
        (
            {"method": "lora", "lora_target_modules": ["nosuchmod"]},
            r"'trainer.lora_target_modules': \['nosuchmod'\] matches no module",
        ),
        (
            {"trl_overrides": {"adam_beta2": "banana"}},
            r"'trainer.trl_overrides.adam_beta2': expected float, got 'banana'",
        ),
        ({"trl_overrides": {"adam_beta3": 0.9}}, r"'trainer.trl_overrides.adam_beta3': unknown"),
        ({"attn_implementation": "sdpaa"}, r"unknown attention implementation 'sdpaa'"),
        ({"model_path": "tiny:llama-h0"}, r"spec 'tiny:llama-h0': hidden=0.*must be >= 1"),
        ({"model_path": "tiny:llama-h130-a4"}, r"hidden=130 must split into heads=4"),
    ],
)
def test_bad_trainer_settings_fail_before_the_run_folder_exists(tmp_path, settings, message):
    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    with pytest.raises(UserError, match=message):
        train(train_config(tmp_path / "run", data, **settings))
    assert not (tmp_path / "run").exists()


def test_flash_attention_without_its_package_fails_early(tmp_path):
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available(kernels_fallback_ok=True):
        pytest.skip("flash-attn is usable here")
    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    cfg = train_config(tmp_path / "run", data, attn_implementation="flash_attention_2")
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA GPU and its flash-attn"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_chat_template_with_a_syntax_error_names_file_and_line(tmp_path):
    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m.content }\n")
    with pytest.raises(UserError, match=r"bad.jinja: line 2: Jinja syntax error"):
        train(train_config(tmp_path / "run", data, chat_template_path=str(bad)))
    assert not (tmp_path / "run").exists()


def test_model_and_tokenizer_folders_without_a_tokenizer(tmp_path, tiny_checkpoint):
    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_checkpoint / name, weights_only / name)
    with pytest.raises(UserError, match=r"trainer.model_path: .*weights holds no tokenizer"):
        train(train_config(tmp_path / "run", data, model_path=str(weights_only)))
    cfg = train_config(
        tmp_path / "run", data, model_path=str(tiny_checkpoint), tokenizer_path=str(weights_only)
    )
    with pytest.raises(UserError, match=r"trainer.tokenizer_path: .*weights holds no tokenizer"):
        train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", -1, r"'seed': expected >= 0, got -1"),
        ("trainer.lora_alpha", -3, r"'trainer.lora_alpha': expected >= 1"),
    ],
)
def test_out_of_range_numbers_are_refused_when_the_config_loads(tmp_path, key, value, message):
    data = {
        "trainer": {"name": "hf_sft", "model_path": "tiny:llama", "method": "lora"},
        "train_path": str(tmp_path / "t.jsonl"),
        "out_dir": str(tmp_path / "run"),
    }
    if key == "seed":
        data["seed"] = value
    else:
        data["trainer"]["lora_alpha"] = value
    with pytest.raises(UserError, match=message):
        load_config(TrainConfig, data=data)


def test_out_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    (tmp_path / "f").write_text("hi")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"trainer: {{name: hf_sft, model_path: 'tiny:llama'}}\ntrain_path: {data}\n"
        f"out_dir: {tmp_path / 'f'}\n"
    )
    assert cli_main(["train", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("f: out_dir is a file, not a folder; choose a folder path")
    assert "\n" not in err and (tmp_path / "f").read_text() == "hi"


@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_that_is_not_a_training_run_is_refused(tmp_path, resume):
    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"junk: not empty and not a needlework training.*notes"):
        train(train_config(junk, data), resume=resume)
    dataset = tmp_path / "dataset"  # what `needlework generate` leaves: config.yaml and run.json
    (dataset / "seed0").mkdir(parents=True)
    (dataset / "config.yaml").write_text("generator: {name: simple_dict_kv}\nout_dir: dataset\n")
    (dataset / "run.json").write_text("{}")
    with pytest.raises(UserError, match="its config.yaml is not a training config") as err:
        train(train_config(dataset, data), resume=resume)
    assert "already holds a training run" not in str(err.value)
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in dataset.iterdir()) == ["config.yaml", "run.json", "seed0"]


def test_a_second_process_training_into_a_locked_folder_stops_at_once(finished, tmp_path):
    cfg, run, *_ = finished
    data = cfg.train_path
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with exclusive_lock(fresh / ".lock"):  # another process is setting up this (empty) folder
        with pytest.raises(UserError, match="another needlework train is running into this"):
            train(train_config(fresh, data, **SCHEDULE))
        assert [p.name for p in fresh.iterdir()] == [".lock"]
    busy = pytest.raises(UserError, match="another needlework train is running into this")
    with exclusive_lock(run / ".lock"), busy:  # ...or training this run
        train(cfg, resume=True)


def test_a_base_model_with_its_own_code_names_the_flag_and_nothing_asks(
    tmp_path, tiny_checkpoint, monkeypatch
):
    import builtins

    from tests.models.test_hf_backend import remote_code_checkpoint

    data = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    custom = remote_code_checkpoint(tiny_checkpoint, tmp_path / "custom")
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("asked on stdin"))
    with pytest.raises(
        UserError, match=r"^trainer.model_path: .*set trainer.trust_remote_code: true"
    ):
        train(train_config(tmp_path / "run", data, model_path=str(custom)))
    assert not (tmp_path / "run").exists()
