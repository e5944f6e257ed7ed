"""End-to-end proof on CPU: 64 fixed KV chats through ``train(cfg)`` to >= 95% greedy exact match.

This is a memorization test (stack-notes §6): it shows the whole path is right — answer-only
labels not shifted or masked away, ``<|im_end|>`` trained so generation stops, the same chat
template at training and inference time, save and reload — not that the model generalises
(a from-scratch model does not learn retrieval in CI time). Recipe from stack-notes §6.
"""

from __future__ import annotations

import pytest

from needlework.models import read_model_json

pytest.importorskip("trl")

from needlework.training.api import train  # noqa: E402

from .helpers import kv_rows, train_config, write_rows  # noqa: E402


@pytest.mark.slow
def test_memorizes_64_examples_and_stops_after_the_answer(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = kv_rows(64, num_dicts=4, pairs=2, seed=7)
    path = write_rows(tmp_path / "train.jsonl", rows)
    cfg = train_config(
        tmp_path / "run",
        path,
        model_path="tiny:llama-h128-l2-a4",
        max_steps=450,
        learning_rate=3e-3,
        per_device_batch_size=16,
        lr_scheduler="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=30,
        logging_steps=50,
        save_steps=10_000,
        trl_overrides={"adam_beta2": 0.98, "max_grad_norm": 1.0},
    )
    run = train(cfg)

    # Load exactly what model.json says, as an evaluator would.
    spec = read_model_json(run / "model.json")
    tok = AutoTokenizer.from_pretrained(spec["path"])
    model = AutoModelForCausalLM.from_pretrained(spec["path"]).eval()
    assert tok.padding_side == "left"
    prompts = [
        tok.apply_chat_template(r["messages"][:1], add_generation_prompt=True, tokenize=False)
        for r in rows
    ]
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    new = out[:, batch["input_ids"].shape[1] :].tolist()
    exact, stopped = 0, 0
    for row, ids in zip(rows, new):
        answer = row["messages"][1]["content"]
        end = ids.index(tok.eos_token_id) if tok.eos_token_id in ids else len(ids)
        stopped += end < len(ids)
        exact += tok.decode(ids[:end]).strip() == answer
    assert exact / len(rows) >= 0.95, f"exact match {exact}/{len(rows)}"
    assert stopped / len(rows) >= 0.95, f"stopped after the answer {stopped}/{len(rows)}"
