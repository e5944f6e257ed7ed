"""hf_sft on CPU with tiny in-process models: masking on a real batch, learning, files, reloads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from needlework.models import read_model_json

pytest.importorskip("trl")

import torch  # noqa: E402

from needlework.cli import main as cli_main  # noqa: E402
from needlework.config import load_config  # noqa: E402
from needlework.errors import DataError, UserError  # noqa: E402
from needlework.training.api import train  # noqa: E402
from needlework.training.config import TrainConfig  # noqa: E402
from needlework.training.data import read_chat_rows  # noqa: E402
from needlework.training.sft_run import check_prepared, prepare  # noqa: E402

from .helpers import answer_loss, kv_rows, labelled_spans, train_config, write_rows  # noqa: E402


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One real full-finetuning run shared by the checks below (about 10 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("full")
    rows = kv_rows(32, num_dicts=2)
    path = write_rows(tmp / "train.jsonl", rows)
    cfg = train_config(tmp / "run", path, max_steps=30, logging_steps=5, save_steps=15)
    return cfg, train(cfg), rows


def test_run_folder_holds_config_versions_logs_model(full_run):
    cfg, run, _ = full_run
    assert load_config(TrainConfig, run / "config.yaml") == cfg
    info = json.loads((run / "run.json").read_text())
    assert info["versions"]["trl"] and info["backend"] == "hf_sft"
    assert info["data"]["rows"] == 32 and info["lengths"]["rows"] == 32
    assert info["chat_format"] == "assistant_mask"
    assert info["max_length"] == info["lengths"]["max_tokens"]  # auto: the longest example
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps[0] == 1 and steps[-1] == 30
    assert (run / "train_log.csv").read_text().startswith("step,epoch,loss,learning_rate")
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    model = json.loads((run / "model.json").read_text())
    assert model == {"backend": "hf", "path": "./model", "adapter": None}  # moves with the run
    assert read_model_json(run / "model.json")["path"] == str((run / "model").resolve())
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (run / "model" / name).is_file(), name
    assert (run / "checkpoints" / "checkpoint-15").is_dir()


def test_a_moved_run_folder_still_loads(full_run, tmp_path):
    """model.json names its own folder relatively, so a copied run is evaluated from there."""
    import shutil

    from needlework.models import parse_model_spec

    _, run, _ = full_run
    moved = tmp_path / "elsewhere"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("checkpoints"))
    spec = parse_model_spec(str(moved))
    assert spec == {"name": "hf", "path": str((moved / "model").resolve()), "adapter": None}


def test_answer_loss_falls_and_the_model_reloads(full_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run, rows = full_run
    path = read_model_json(run / "model.json")["path"]
    tok = AutoTokenizer.from_pretrained(path)
    before = answer_loss(AutoModelForCausalLM.from_pretrained(run / "base_model"), tok, rows)
    after = answer_loss(AutoModelForCausalLM.from_pretrained(path), tok, rows)
    assert after < 0.8 * before, (before, after)
    assert tok.chat_template == AutoTokenizer.from_pretrained(run / "base_model").chat_template


def test_real_batch_masks_every_prompt_token(tmp_path, tiny_checkpoint):
    rows = kv_rows(16)
    path = write_rows(tmp_path / "t.jsonl", rows)
    cfg = train_config(tmp_path / "run", path, model_path=str(tiny_checkpoint))
    prep = prepare(cfg.trainer, cfg, tmp_path / "run", read_chat_rows(path))
    tok = prep.trainer.processing_class
    answers = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    batch = next(iter(prep.trainer.get_train_dataloader()))
    for ids, trained in labelled_spans(batch):
        assert trained == list(range(trained[0], trained[-1] + 1)), "one contiguous answer span"
        prompt = tok.decode(ids[: trained[0]])
        assert prompt.endswith("<|im_start|>assistant\n")
        question = prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        # every answer token and the end-of-turn token carry loss, nothing else does
        assert tok.decode([ids[i] for i in trained]) == answers[question] + "<|im_end|>"


def test_lora_trains_only_adapters_and_merge_gives_identical_logits(tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = write_rows(tmp_path / "t.jsonl", kv_rows(16))
    cfg = train_config(
        tmp_path / "run",
        path,
        method="lora",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        merge_lora=True,
        max_steps=8,
        learning_rate=1e-2,
    )
    run = train(cfg)
    assert json.loads((run / "model.json").read_text()) == {
        "backend": "hf",
        "path": "./merged",
        "adapter": None,
    }
    assert (run / "model" / "adapter_config.json").is_file()
    assert not (run / "model" / "model.safetensors").exists()

    base = AutoModelForCausalLM.from_pretrained(run / "base_model").state_dict()
    peft_model = AutoPeftModelForCausalLM.from_pretrained(run / "model").eval()
    lora = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    for name, param in peft_model.named_parameters():
        if "lora_" not in name:
            clean = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param, base[clean]), f"base weight {clean} changed"
    assert any(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n), "adapters trained"
    info = json.loads((run / "run.json").read_text())
    assert info["trainable_parameters"] == sum(p.numel() for p in lora.values())

    tok = AutoTokenizer.from_pretrained(run / "merged")
    ids = tok("{12: 345}\nWhat is the value of 12?", return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(run / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(
            peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5
        )


def test_an_example_longer_than_max_length_stops_before_the_model_loads(tmp_path, monkeypatch):
    rows = kv_rows(8) + kv_rows(1, num_dicts=12, seed=5)
    path = write_rows(tmp_path / "t.jsonl", rows)
    import trl.trainer.sft_trainer as sft

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(sft, "create_model_from_path", no_model)
    cfg = train_config(tmp_path / "run", path, max_length=150)
    with pytest.raises(DataError, match=rf"^{path}:9: example has \d+ tokens .*max_length=150"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_auto_max_length_keeps_rows_that_trl_would_silently_drop(tmp_path, tiny_checkpoint):
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    rows = kv_rows(6, num_dicts=2) + kv_rows(6, num_dicts=12, seed=3)  # ~75 and ~250 tokens
    path = write_rows(tmp_path / "t.jsonl", rows)
    cfg = train_config(tmp_path / "run", path, model_path=str(tiny_checkpoint))
    chat_rows = read_chat_rows(path)
    prep = prepare(cfg.trainer, cfg, tmp_path / "run", chat_rows)
    assert len(prep.trainer.train_dataset) == 12 and prep.max_length > 200

    # The trap we guard against: plain TRL with a shorter max_length drops rows without a word.
    args = SFTConfig(
        output_dir=str(tmp_path / "raw"),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        assistant_only_loss=True,
        max_length=100,
        report_to="none",
    )
    from datasets import Dataset

    raw = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_checkpoint),
        args=args,
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in rows]),
        processing_class=prep.trainer.processing_class,
    )
    assert len(raw.train_dataset) == 6
    with pytest.raises(RuntimeError, match="prepared 6 of 12 rows"):
        check_prepared(raw.train_dataset, chat_rows, prep.infos, packed=False)


def test_bad_model_path_is_one_line_before_any_work(tmp_path, capsys):
    path = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    cfg = train_config(tmp_path / "run", path, model_path=str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"trainer.model_path: .*nope does not exist"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"trainer: {{name: hf_sft, model_path: {tmp_path / 'nope'}}}\n"
        f"train_path: {path}\nout_dir: {tmp_path / 'run'}\n"
    )
    assert cli_main(["train", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("needlework train: error: trainer.model_path:") and "\n" not in err


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", kv_rows(16))
    cfg = train_config(tmp_path / "run", path, max_steps=6, save_steps=3, logging_steps=1)
    run = train(cfg)
    with pytest.raises(UserError, match="already holds a training run"):
        train(cfg)
    assert train(cfg, resume=True) == run  # finished: returned as is
    # Simulate a crash after step 3: drop what steps 4-6 and the final save wrote.
    for name in ("model.json", "model", "checkpoints/checkpoint-6"):
        target = run / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    changed = train_config(
        tmp_path / "run", path, max_steps=6, save_steps=3, logging_steps=1, learning_rate=1e-4
    )
    with pytest.raises(UserError, match="different config.*learning_rate"):
        train(changed, resume=True)
    train(cfg, resume=True)
    info = json.loads((run / "run.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-3") and "resumed" in info
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps[:-1] == [1, 2, 3, 4, 5, 6]  # restored history continued, not duplicated
    assert (run / "model.json").is_file()


def test_padding_free_batches_give_the_same_loss_as_padded_ones(tmp_path, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    path = write_rows(tmp_path / "t.jsonl", kv_rows(8) + kv_rows(8, num_dicts=3, seed=2))
    rows = read_chat_rows(path)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    losses = {}
    for mode in ("padded", "padding_free"):
        cfg = train_config(
            tmp_path / mode,
            path,
            model_path=str(tiny_checkpoint),
            padding_free=mode == "padding_free",
        )
        loader = prepare(cfg.trainer, cfg, tmp_path / mode, rows).trainer.get_train_dataloader()
        batch = {k: v.cpu() if hasattr(v, "cpu") else v for k, v in next(iter(loader)).items()}
        if mode == "padding_free":
            assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        with torch.no_grad():  # use_cache=False as TRL's compute_loss sets it
            losses[mode] = model(**batch, use_cache=False).loss.item()
    assert losses["padded"] == pytest.approx(losses["padding_free"], abs=1e-5)


def test_packing_keeps_every_row_and_trains(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", kv_rows(12) + kv_rows(4, num_dicts=6, seed=1))
    cfg = train_config(tmp_path / "run", path, packing=True, max_steps=3)
    run = train(cfg)  # check_prepared inside: all 16 rows in the packed blocks
    assert json.loads((run / "run.json").read_text())["train_metrics"]["train_loss"] > 0


def test_model_json_for_an_unmerged_adapter_points_at_the_base(tmp_path):
    from needlework.training.sft_run import model_json

    cfg = train_config(tmp_path, Path("t.jsonl"), method="lora", model_path="org/base")
    assert model_json(cfg.trainer, "org/base", tmp_path) == {
        "backend": "hf",
        "path": "org/base",
        "adapter": str((tmp_path / "model").resolve()),
    }


def test_qlora_on_cpu_is_a_clear_error(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", kv_rows(4))
    cfg = train_config(tmp_path / "run", path, method="qlora")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="qlora needs a CUDA GPU"):
        train(cfg)


def test_the_shipped_tiny_cpu_config_trains(tmp_path):
    root = Path(__file__).resolve().parents[2]
    path = write_rows(tmp_path / "t.jsonl", kv_rows(16))
    cfg = load_config(
        TrainConfig,
        root / "configs/train/hf_tiny_cpu.yaml",
        [f"train_path={path}", f"out_dir={tmp_path / 'run'}", "trainer.max_steps=3"],
    )
    run = train(cfg)
    assert json.loads((run / "run.json").read_text())["trainable_parameters"] > 500_000
    assert (run / "model.json").is_file()


def test_a_pinned_hub_base_stays_pinned_in_training_and_in_model_json(tmp_path):
    from needlework.training.sft_run import model_init_kwargs, model_json

    cfg = train_config(
        tmp_path, Path("t.jsonl"), method="lora", model_path="org/base", model_revision="abc123"
    )
    assert model_init_kwargs(cfg.trainer, cuda=False, bf16=False)["revision"] == "abc123"
    assert model_json(cfg.trainer, "org/base", tmp_path)["revision"] == "abc123"  # eval loads it
    unpinned = train_config(tmp_path, Path("t.jsonl"), method="lora", model_path="org/base")
    assert "revision" not in model_init_kwargs(unpinned.trainer, cuda=False, bf16=False)
