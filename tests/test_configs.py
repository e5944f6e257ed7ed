"""Every shipped config loads, validates and resolves its registry names (no broken examples)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from needlework.config import config_class, config_kind, load_config, read_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_loads(path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs use repo-relative paths, as their Run: lines do
    data = read_yaml(path)  # a recipe loads with every config it names
    load_config(config_class(config_kind(data)), path, data=data)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_opens_with_its_command(path: Path):
    head = path.read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert head.startswith("# Run:") and "needlework" in head, (
        f"{path}: first line must be '# Run: needlework ...'"
    )


def test_accelerate_configs_are_yaml():
    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert "distributed_type" in data, path


def test_there_are_configs_for_every_stage():
    stages = {p.parent.name for p in CONFIGS}
    assert {"datagen", "train", "eval", "recipes"} <= stages, stages
