"""Helpers for the training tests: small KV chat rows and configs built in-process."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any


def kv_rows(n: int, *, seed: int = 0, num_dicts: int = 4, pairs: int = 2) -> list[dict[str, Any]]:
    """``n`` tiny key-value retrieval chats: 2-digit keys, 3-digit values, one question each."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        dicts = [
            [(rng.randint(10, 99), rng.randint(100, 999)) for _ in range(pairs)]
            for _ in range(num_dicts)
        ]
        key, value = rng.choice(rng.choice(dicts))
        context = "\n".join("{" + ", ".join(f"{k}: {v}" for k, v in d) + "}" for d in dicts)
        rows.append(
            {
                "id": f"kv-{seed}-{i}",
                "meta": {"gold_value": value},
                "messages": [
                    {"role": "user", "content": f"{context}\nWhat is the value of {key}?"},
                    {"role": "assistant", "content": str(value)},
                ],
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train_config(out_dir: Path, train_path: Path, **trainer: Any):
    """A TrainConfig for the hf_sft backend through the real YAML-to-dataclass loader."""
    from needlework.config import load_config
    from needlework.training.config import TrainConfig

    unit = {
        "name": "hf_sft",
        "model_path": "tiny:llama-h64-l2-a4",
        "max_steps": 10,
        "learning_rate": 3e-3,
        "per_device_batch_size": 8,
        "logging_steps": 2,
        "save_steps": 1000,
        "bf16": False,  # tiny models test correctness in float32; bf16 has its own tests
        **trainer,
    }
    data = {"trainer": unit, "train_path": str(train_path), "out_dir": str(out_dir)}
    return load_config(TrainConfig, data=data)


def answer_loss(model, tokenizer, rows: list[dict[str, Any]]) -> float:
    """Mean NLL of the answer (+ end-of-turn) tokens, masked by the generation markers."""
    import torch

    losses = []
    for row in rows:
        enc = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = torch.tensor([enc["input_ids"]])
        labels = ids.masked_fill(torch.tensor([enc["assistant_masks"]]) == 0, -100)
        with torch.no_grad():
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return sum(losses) / len(losses)


def labelled_spans(batch) -> list[tuple[list[int], list[int]]]:
    """(input ids, indices whose label is not -100) for every row of a collated batch."""
    out = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert all(labels[i] == ids[i] for i in trained), "labels must equal the input ids"
        out.append((ids, trained))
    return out
