"""Loading a config never demands local data: on a clone with ``NEEDLEWORK_DATA`` unset and no
``data/`` folder, every shipped config validates and every recipe lists its steps
(``run --dry-run``). Data presence is checked when a step runs, before its folder is made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from needlework.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(
    p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts
)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The configs alone, in a folder with no data/."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(ROOT / "configs", root / "configs")
    return root


@pytest.mark.parametrize("rel", CONFIGS, ids=str)
def test_config_validates_without_local_data(rel, clone, monkeypatch, capsys):
    monkeypatch.delenv("NEEDLEWORK_DATA", raising=False)
    monkeypatch.chdir(clone)
    assert not (clone / "data").exists()
    assert main(["validate", str(rel)]) == 0, capsys.readouterr().err
    if rel.parts[1] == "recipes":
        out = clone / "runs" / rel.stem
        assert main(["run", str(rel), "--dry-run", f"out_dir={out}"]) == 0, capsys.readouterr()
        assert not out.exists()
