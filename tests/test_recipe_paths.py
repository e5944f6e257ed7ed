"""Recipes pass the paths inside their experiment folder as fields, never as placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from needlework.errors import ConfigError, UserError
from needlework.experiment import load_recipe, plan

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "recipes"


def test_no_config_holds_a_placeholder():
    for path in (ROOT / "configs").rglob("*.yaml"):
        assert "{out_dir}" not in path.read_text(encoding="utf-8"), path


def _noop():
    """A step standing in for a real one (the plan sets what it reads)."""
    from needlework.experiment import Step

    return Step("stand-in", lambda: True, lambda: None)


def test_eval_paths_held_out_and_variant_paths_land_under_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from needlework import experiment

    seen: dict = {}
    monkeypatch.setattr(
        experiment, "_eval_step", lambda data, *a: seen.setdefault("e", data) and _noop()
    )
    monkeypatch.setattr(experiment, "check_recipe", lambda *a: None)
    out = tmp_path / "exp"
    plan(load_recipe(RECIPES / "smollm2_baselines.yaml", [f"out_dir={out}"]))
    by_name: dict = {}
    for b in seen["e"]["benchmarks"]:
        by_name.setdefault(b["name"], []).append(b)
    assert by_name["kv_retrieval"][0]["data_path"] == str(out / "data/kv_template/seed0/eval.jsonl")
    held = [str(out / "data" / d) for d in ("multidoc_qa", "in2_style", "niah_train")]
    assert by_name["mdqa"][0]["held_out"] == held
    assert [g["held_out"] for g in by_name["general"]] == [held, held]
    assert "held_out" not in by_name["kv_retrieval"][0]  # it cannot exclude questions

    trains: list = []
    monkeypatch.setattr(experiment, "_train_step", lambda v, o, *a: trains.append(o) or _noop())
    plan(load_recipe(RECIPES / "smollm2_mix.yaml", [f"out_dir={out}"]))
    assert all(f"mix_path={str(out / 'data/chat/seed0/train.jsonl')!r}".replace("'", '"') in o
               for o in trains), trains  # fmt: skip


def test_tiny_base_sets_the_base_model_and_every_start(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from needlework import experiment

    out = tmp_path / "exp"
    recipe = load_recipe(RECIPES / "tiny_cpu.yaml", [f"out_dir={out}"])
    assert recipe.base_model.path == str(out / "base_model")
    trains: list = []
    monkeypatch.setattr(experiment, "_train_step", lambda v, o, *a: trains.append(o) or _noop())
    plan(recipe)
    assert trains and all(f"trainer.model_path={out / 'base_model'}" in o for o in trains)
    with pytest.raises(ConfigError, match="base_model.path.*set by tiny_base"):
        load_recipe(RECIPES / "tiny_cpu.yaml", [f"out_dir={out}", "base_model.path=x"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval_paths={benchmarks.kv_retrieval.data_path: /abs/eval.jsonl}", "absolute path"),
        ("held_out=[nope]", "field 'held_out': nope is not a dataset of the recipe"),
        ("variants.0.paths={mix_path: /abs/x.jsonl}", "absolute path"),
    ],
)
def test_bad_recipe_paths_are_one_line_errors(override, needle, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError) as info:
        load_recipe(RECIPES / "smollm2_mix.yaml", [override])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_bad_tiny_base_is_refused_when_the_recipe_loads(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="field 'tiny_base': bad tiny model spec 'tiny:bogus'"):
        load_recipe(RECIPES / "tiny_cpu.yaml", ["tiny_base=tiny:bogus"])


def test_a_step_whose_inputs_are_missing_names_them(tmp_path, monkeypatch, capsys):
    from needlework.cli import main

    monkeypatch.chdir(ROOT)
    code = main(["run", str(RECIPES / "tiny_cpu.yaml"), f"out_dir={tmp_path}", "--step", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "--step 3: reads what step(s) 1, 2 write, not done yet" in err
    assert list(tmp_path.iterdir()) == []  # nothing started


def test_an_experiment_out_dir_holding_other_files_is_refused(tmp_path, monkeypatch):
    from needlework.experiment import run_recipe

    monkeypatch.chdir(ROOT)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds notes.txt, which no needlework experiment writes"):
        run_recipe(RECIPES / "tiny_cpu.yaml", [f"out_dir={tmp_path}"], dry_run=True)
    afile = tmp_path / "notes.txt"
    with pytest.raises(UserError, match="exists and is not a folder"):
        run_recipe(RECIPES / "tiny_cpu.yaml", [f"out_dir={afile}"], dry_run=True)


def test_the_demo_without_mdqa_data_evaluates_kv_only(tmp_path, monkeypatch):
    from needlework import demo

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(demo, "oracle_folder", lambda: None)
    overrides, note = demo._overrides(tmp_path)
    titles = [s.title for s in plan(load_recipe(demo.RECIPE, overrides))]
    assert note and note.startswith("MDQA skipped")
    assert [t.split(" -> ")[0] for t in titles if t.startswith("eval")] == [
        "eval base on kv_retrieval",
        "eval lora_kv seed 0 on kv_retrieval",
    ]
    assert list(tmp_path.iterdir()) == []  # nothing written to decide it
