"""The CLI's contract: registered units listed, configs validated, user errors exit 2."""

from __future__ import annotations

import pytest

from needlework.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "needlework" in capsys.readouterr().out


def test_validate_unknown_kind_exits_2(tmp_path, capsys):
    p = tmp_path / "x.yaml"
    p.write_text("foo: 1\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(p) in err and "top-level keys" in err


def test_validate_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_unknown_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ls", "--bogus"])
    assert info.value.code == 2
