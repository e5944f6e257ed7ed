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


def test_eval_paths_held_out_and_variant_paths_land_under_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "exp"
    recipe = load_recipe(RECIPES / "smollm2_baselines.yaml", [f"out_dir={out}"])
    by_name: dict = {}
    for b in recipe.eval_template.benchmarks:
        by_name.setdefault(type(b).registry_name, []).append(b)
    assert by_name["kv_retrieval"][0].data_path == str(out / "data/kv_template/seed0/eval.jsonl")
    held = [str(out / "data" / d) for d in ("multidoc_qa", "in2_style", "niah_train")]
    assert list(by_name["mdqa"][0].held_out) == held
    assert [list(g.held_out) for g in by_name["general"]] == [held, held]
    assert not hasattr(by_name["kv_retrieval"][0], "held_out")  # it cannot exclude questions

    recipe = load_recipe(RECIPES / "smollm2_mix.yaml", [f"out_dir={out}"])
    trains = [recipe.train_config(v, s) for v in recipe.variants for s in v.seeds]
    assert trains and all(t.mix_path == out / "data/chat/seed0/train.jsonl" for t in trains)
    assert [t.out_dir for t in trains] == [out / "train" / v.name / "seed0" for v in
                                           recipe.variants]  # fmt: skip


def test_tiny_base_sets_the_base_model_and_every_start(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "exp"
    recipe = load_recipe(RECIPES / "tiny_cpu.yaml", [f"out_dir={out}"])
    assert recipe.base_model.path == str(out / "base_model")
    trains = [recipe.train_config(v, s) for v in recipe.variants for s in v.seeds]
    assert trains and all(t.trainer.model_path == str(out / "base_model") for t in trains)
    assert plan(recipe)[0].title.startswith("build tiny:")
    with pytest.raises(ConfigError, match="base_model.path.*set by tiny_base"):
        load_recipe(RECIPES / "tiny_cpu.yaml", [f"out_dir={out}", "base_model.path=x"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval_paths={benchmarks.kv_retrieval.data_path: /abs/eval.jsonl}", "absolute path"),
        ("held_out=[nope]", "field 'held_out': 'nope' is not a dataset of the recipe"),
        ("variants.0.paths={mix_path: /abs/x.jsonl}", "absolute path"),
        # references no step satisfies, caught when the recipe loads (before: passed --dry-run)
        (
            "eval_paths={benchmarks.kv_retrieval.data_path: data/kv/seed0/evl.jsonl}",
            "field 'eval_paths': benchmarks.kv_retrieval.data_path is data/kv/seed0/evl.jsonl, "
            "which no step of the recipe writes",
        ),
        (
            "variants.0.paths={mix_path: data/chats/seed0/train.jsonl}",
            "field 'variants.mix_0.00.paths': mix_path is data/chats/seed0/train.jsonl, which no",
        ),
        (
            "variants.0.train_file=trian.jsonl",
            "field 'variants.mix_0.00.train_file': 'trian.jsonl' is not a file dataset 'kv' "
            "writes (it writes eval.jsonl, eval.trl.jsonl, train.jsonl, train.trl.jsonl)",
        ),
        (
            "variants.0.seeds=[0, 0]",
            "field 'variants.mix_0.00.seeds': expected distinct items, got [0, 0]",
        ),
        ("variants.0.seeds=[1]", "field 'variants.mix_0.00.seeds': seed 1 has no dataset"),
        (
            "variants.0.paths={train_path: data/kv/seed0/train.jsonl}",
            "field 'variants.mix_0.00.paths': sets train_path, which the recipe sets itself",
        ),
        ("eval_overrides=[out_dir=x]", "field 'eval_overrides': sets out_dir, which the recipe"),
        ("variants.0.dataset=kvv", "field 'variants.mix_0.00.dataset': 'kvv' is not a dataset"),
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


def test_eval_variants_evaluate_a_model_with_settings_changed(tmp_path, monkeypatch):
    """Training-free variants: the base model (or each seed of a finetuned variant) evaluated
    with fields changed, e.g. a position fix; checked when the recipe loads."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "exp"
    fix = "{position_fix: {name: ms_poe, ratio_max: 2.2}}"
    recipe = load_recipe(
        RECIPES / "smollm2_mdqa_positions.yaml",
        [f"out_dir={out}", f"eval_variants=[{{name: mspoe, model: {fix}}}, "
         f"{{name: lora_mspoe, of: lora_notemplate, model: {fix}}}]"],
    )  # fmt: skip
    titles = [s.title for s in plan(recipe)]
    assert any(t.startswith("eval mspoe on mdqa") and t.endswith(str(out / "eval/mspoe"))
               for t in titles)  # fmt: skip
    assert any(t.startswith("eval lora_mspoe seed 0") for t in titles)
    assert recipe.model_with(recipe.eval_variants[0]).position_fix.ratio_max == 2.2
    with pytest.raises(ConfigError, match="field 'eval_variants.x.of': expected base or a variant"):
        load_recipe(RECIPES / "smollm2_mdqa_positions.yaml",
                    ["eval_variants=[{name: x, of: nope, model: {}}]"])  # fmt: skip
    with pytest.raises(
        ConfigError, match="field 'eval_variants.x.model': field 'model.batch_size'"
    ):
        load_recipe(RECIPES / "smollm2_mdqa_positions.yaml",
                    ["eval_variants=[{name: x, model: {batch_size: 0}}]"])  # fmt: skip
