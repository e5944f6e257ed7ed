"""The CLI's contract: registered units listed, configs validated, user errors exit 2."""

from __future__ import annotations

from pathlib import Path

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


def test_validate_takes_folders_checks_every_file_and_recipe_references(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "accelerate").mkdir()
    (tmp_path / "accelerate" / "a.yaml").write_text("distributed_type: MULTI_GPU\n")
    recipe = (root / "configs/recipes/smollm2_demo.yaml").read_text()
    (tmp_path / "r_missing.yaml").write_text(
        recipe.replace("configs/train/hf_smollm2_lora_cpu.yaml", "configs/train/nope.yaml")
    )
    (tmp_path / "r_kind.yaml").write_text(
        recipe.replace("eval_config: configs/eval/smollm2_demo.yaml",
                       "eval_config: configs/datagen/smollm2_kv_demo.yaml")
    )  # fmt: skip
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dir.yaml").mkdir()  # a folder where a file is expected is skipped
    (tmp_path / "sub" / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    import os

    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(["validate", str(tmp_path)]) == 2
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    assert "skip " in out and "accelerate config" in out
    assert (
        "r_missing.yaml: field 'variants.lora_kv.train_config': configs/train/nope.yaml: file "
        "not found" in err
    )
    assert (
        "r_kind.yaml: field 'eval_config': configs/datagen/smollm2_kv_demo.yaml: is a "
        "generate config; expected an eval config" in err
    )
    assert "bin.yaml: not UTF-8 text" in err
    assert "3 of 4 config files failed" in err and "Traceback" not in err
    assert main(["validate", str(tmp_path / "sub" / "dir.yaml")]) == 2
    assert "a folder with no *.yaml or *.yml config files" in capsys.readouterr().err
    assert main(["eval", "--config", str(tmp_path / "sub")]) == 2
    assert "sub: is a folder; expected a YAML config file" in capsys.readouterr().err


def test_run_dry_run_checks_every_referenced_config_first(tmp_path, capsys, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    recipe = (root / "configs/recipes/smollm2_demo.yaml").read_text()
    bad = tmp_path / "r.yaml"
    bad.write_text(recipe.replace("configs/datagen/smollm2_kv_demo.yaml", "nope/gen.yaml"))
    assert main(["run", str(bad), "--dry-run", f"out_dir={tmp_path / 'exp'}"]) == 2
    err = capsys.readouterr().err
    assert "field 'datasets.kv.config': nope/gen.yaml: file not found" in err
    assert not (tmp_path / "exp").exists()


def test_unknown_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ls", "--bogus"])
    assert info.value.code == 2


def test_failed_evals_leave_no_run_folder(tmp_path, capsys, monkeypatch):
    """Missing data, a missing API key, a garbage model.json, general offline: one line,
    exit 2, and no empty run folder left behind."""
    monkeypatch.delenv("NW_NO_SUCH_KEY", raising=False)
    monkeypatch.delenv("NEEDLEWORK_DATA", raising=False)  # general: no local copy named
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    garbage = tmp_path / "model.json"
    garbage.write_bytes(b"\xff\xfe garbage")
    fixture = Path(__file__).parent / "fixtures" / "kv_eval_tiny.jsonl"
    cases = [
        (["--gold-answers", "--benchmark", "kv_retrieval",
          f"benchmarks.0.data_path={tmp_path / 'nope.jsonl'}"],
         "nope.jsonl: not found; make an eval split"),
        (["--model", "openai:gpt-x", "--benchmark", "kv_retrieval",
          f"benchmarks.0.data_path={fixture}", "model.api_key_env=NW_NO_SUCH_KEY"],
         "environment variable NW_NO_SUCH_KEY is not set"),
        (["--model", str(garbage), "--benchmark", "kv_retrieval"], "not UTF-8 text"),
        (["--model", "scripted:echo", "--suite", "general", "--limit", "1"],
         "HF_DATASETS_OFFLINE is set"),
    ]  # fmt: skip
    for i, (argv, needle) in enumerate(cases):
        out = tmp_path / f"runs{i}"
        assert main(["eval", *argv, f"out_dir={out}"]) == 2, argv
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if "error:" in ln]  # (a progress bar aside)
        assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err
        assert not out.exists(), sorted(out.rglob("*"))


def test_ls_name_shows_a_units_fields_with_their_docstrings(capsys):
    assert main(["ls", "mdqa"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mdqa (benchmark): Multi-document QA")
    assert "  num_docs: int (>= 1) = 20" in out and "gold_positions" in out
    assert "Fetch missing files from github.com/nelson-liu/lost-in-the-middle" in out
    assert main(["ls", "mdq"]) == 2
    assert "no unit named 'mdq'; did you mean mdqa?" in capsys.readouterr().err


def test_recipe_match_tokens_must_name_an_earlier_dataset(tmp_path, capsys, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    recipe = (root / "configs/recipes/smollm2_baselines.yaml").read_text()
    bad = tmp_path / "r.yaml"
    bad.write_text(recipe.replace("match_tokens: kv_template", "match_tokens: kv_templat", 1))
    assert main(["run", str(bad), "--dry-run", f"out_dir={tmp_path / 'exp'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'multidoc_qa' matches the tokens of 'kv_templat', which is not a dataset listed " in err
    assert err.count("\n") == 0 and not (tmp_path / "exp").exists()


def test_recipe_match_tokens_reaches_the_generate_config(tmp_path, monkeypatch):
    """The recipe's dataset key becomes the generate config's match_tokens section."""
    from needlework.experiment import load_recipe

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    recipe = load_recipe("configs/recipes/smollm2_baselines.yaml", [f"out_dir={tmp_path}"])
    configs = recipe.generate_configs
    assert configs["kv_template"].match_tokens is None
    match = configs["multidoc_qa"].match_tokens
    assert (match.dataset, match.count) == (tmp_path / "data" / "kv_template", "total")
