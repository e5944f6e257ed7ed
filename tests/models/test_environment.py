"""The environment is checked by every command before any work: a bad NEEDLEWORK_THREADS or
NEEDLEWORK_CACHE is one line naming the variable, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from needlework.cli import main

ROOT = Path(__file__).parents[2]


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    return err


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_a_bad_thread_count_is_one_line(monkeypatch, capsys, value):
    monkeypatch.setenv("NEEDLEWORK_THREADS", value)
    assert main(["ls"]) == 2
    err = one_error(capsys)
    assert "environment: field 'NEEDLEWORK_THREADS'" in err and repr(value) in err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "scripted:echo", "--benchmark", "kv_retrieval", "--limit", "1"],
        ["train", "--config", str(ROOT / "configs/train/hf_tiny_cpu.yaml")],
        ["generate", "--config", str(ROOT / "configs/datagen/tiny_cpu.yaml")],
    ],
    ids=["eval", "train", "generate"],
)
@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_a_cache_that_cannot_be_a_folder_stops_every_command(
    tmp_path, monkeypatch, capsys, argv, where
):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("NEEDLEWORK_CACHE", str(blocker if where == "file" else blocker / "c"))
    monkeypatch.chdir(tmp_path)
    assert main([*argv, f"out_dir={tmp_path / 'out'}"]) == 2
    err = one_error(capsys)
    assert f"field 'NEEDLEWORK_CACHE': {blocker} is a file; expected a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_cache_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    from needlework.errors import UserError
    from needlework.models import gguf

    src = tmp_path / "fake.gguf"
    src.write_bytes(b"GGUF" + bytes(64))
    monkeypatch.setenv("NEEDLEWORK_CACHE", str(tmp_path / "cache"))
    real = Path.mkdir

    def refuse(self: Path, *args, **kwargs):
        if "cache" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError) as info:
        gguf.cached_import(src)
    text = str(info.value)
    assert text.startswith("NEEDLEWORK_CACHE: cannot create ") and "Permission denied" in text
