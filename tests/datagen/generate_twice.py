"""Shared by the generator tests: a small end-to-end ``generate()`` run, done twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from needlework.config import load_config
from needlework.datagen.pipeline import GenerateConfig, generate


def generate_twice(tmp_path: Path, generator: dict[str, Any], max_context_tokens: int) -> Path:
    """Generate 4 train + 2 eval samples (char tokenizer, 20-token reserve) twice into the same
    folder, assert both runs wrote the same bytes, and return the dataset folder."""
    out = tmp_path / "ds"
    data = {
        "generator": generator,
        "tokenizer": "char",
        "max_context_tokens": max_context_tokens,
        "reserve_tokens": 20,
        "seeds": [0],
        "num_train": 4,
        "num_eval": 2,
        "formats": ["openai", "trl"],
        "out_dir": str(out),
    }
    cfg = load_config(GenerateConfig, data=data)
    generate(cfg, progress=False)
    first = {p.name: p.read_bytes() for p in sorted((out / "seed0").iterdir())}
    generate(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in sorted((out / "seed0").iterdir())} == first
    return out
