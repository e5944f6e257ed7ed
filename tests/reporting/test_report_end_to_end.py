"""`needlework report` over synthetic experiment folders: numbers, files, figures, problems."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import statistics
from pathlib import Path

import pytest

from needlework.cli import main
from needlework.errors import UserError
from needlework.reporting import plots
from needlework.reporting.report import build_report

from . import fakes

CI_DELTA = r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One experiment (base + ft_template × 2 seeds on every benchmark), reported once."""
    root = tmp_path_factory.mktemp("exp")
    made = fakes.experiment(root / "exp")
    figures = {}
    real_save = plots.save

    def capture(fig, path):
        figures[Path(path).name] = fig
        return real_save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save", capture)
        result = build_report([root / "exp"], root / "out", html=True)
    return {"made": made, "result": result, "out": root / "out", "figures": figures}


def test_report_sections_and_files(full):
    result, out = full["result"], full["out"]
    assert result.problems == []
    assert result.baseline == "base"
    text = result.path.read_text()
    for heading in (
        "## Overall: primary metric per benchmark",
        "## MDQA (mdqa): accuracy by gold document position",
        "## FLenQA: accuracy by context length, with and without CoT",
        "## KV retrieval (kv_retrieval): accuracy by gold key position",
        "## NIAH (niah): exact_match by context length × needle depth",
        "## General benchmarks (lm-evaluation-harness)",
        "## Runs",
    ):
        assert heading in text
    assert "No problems found" in text
    assert "2 seeds" in text
    # Every variant-vs-base cell of the overall table carries a paired CI.
    overall = text.split("## Overall")[1].split("\n## ")[0]
    ft_rows = [ln for ln in overall.splitlines() if ln.startswith("| ") and "ft_template" in ln]
    assert len(ft_rows) == 6
    assert all(re.search(CI_DELTA + r" \|$", ln) for ln in ft_rows)
    for name in (
        "mdqa_by_position",
        "flenqa_by_length",
        "kv_retrieval_by_position",
        "niah_base_heatmap",
        "niah_ft_template_heatmap",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in text
    for name in (
        "overall",
        "runs",
        "mdqa_by_position",
        "flenqa_by_length",
        "flenqa_cot_by_length",
        "kv_retrieval_by_position",
        "niah_heatmap",
        "general_scores",
        "flenqa_by_dataset",
    ):
        assert (out / "tables" / f"{name}.csv").is_file()
        assert f"tables/{name}.csv" in text


def test_overall_numbers_match_predictions(full):
    made = full["made"]
    rows = {(r["label"], r["variant"]): r for r in read_csv(full["out"] / "tables/overall.csv")}
    base = fakes.read_scores(made["base"]["mdqa"], "best_subspan_em")
    s0 = fakes.read_scores(made["ft_template-seed0"]["mdqa"], "best_subspan_em")
    s1 = fakes.read_scores(made["ft_template-seed1"]["mdqa"], "best_subspan_em")
    b = rows[("mdqa", "base")]
    assert float(b["mean"]) == pytest.approx(statistics.fmean(base.values()))
    assert b["seeds"] == "1" and b["delta"] == "" and b["n"] == "200"
    ft = rows[("mdqa", "ft_template")]
    seed_means = [statistics.fmean(s0.values()), statistics.fmean(s1.values())]
    assert ft["seeds"] == "2"
    assert float(ft["mean"]) == pytest.approx(statistics.fmean(seed_means))
    assert float(ft["seed_min"]) == pytest.approx(min(seed_means))
    assert float(ft["seed_max"]) == pytest.approx(max(seed_means))
    expected = statistics.fmean((s0[i] + s1[i]) / 2 - base[i] for i in base)
    assert float(ft["delta"]) == pytest.approx(expected)
    assert float(ft["delta_ci_low"]) <= float(ft["delta"]) <= float(ft["delta_ci_high"])
    assert ft["delta_n"] == "200" and ft["delta_note"] == ""


def test_breakdown_numbers_and_paired_deltas_per_position(full):
    made = full["made"]
    rows = read_csv(full["out"] / "tables/mdqa_by_position.csv")
    assert {r["shown_as"] for r in rows} == {"1", "5", "10", "15", "20"}
    base = fakes.read_scores(made["base"]["mdqa"], "best_subspan_em")
    s0 = fakes.read_scores(made["ft_template-seed0"]["mdqa"], "best_subspan_em")
    s1 = fakes.read_scores(made["ft_template-seed1"]["mdqa"], "best_subspan_em")
    ids = [i for i in base if i.startswith("mdqa-9-")]
    row = next(r for r in rows if r["key"] == "9" and r["variant"] == "ft_template")
    assert float(row["delta"]) == pytest.approx(
        statistics.fmean((s0[i] + s1[i]) / 2 - base[i] for i in ids)
    )
    assert int(row["delta_n"]) == len(ids) == 40
    base_row = next(r for r in rows if r["key"] == "9" and r["variant"] == "base")
    assert float(base_row["mean"]) == pytest.approx(statistics.fmean(base[i] for i in ids))
    assert float(base_row["ci_low"]) < float(base_row["mean"]) < float(base_row["ci_high"])


def test_figures_have_expected_axes_and_series(full):
    figs = full["figures"]
    (ax,) = figs["mdqa_by_position.png"].axes
    assert "position" in ax.get_xlabel() and ax.get_ylabel() == "best_subspan_em"
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "ft_template (2 seeds)"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 5, 10, 15, 20]
    assert len(ax.collections) == 2  # one CI / seed-range band per model

    flen = figs["flenqa_by_length.png"].axes
    assert [a.get_title() for a in flen] == ["flenqa (no CoT)", "flenqa_cot (CoT)"]
    for a in flen:
        assert len(a.get_lines()) == 2
        assert list(a.get_lines()[0].get_xdata()) == [250, 500, 1000, 2000, 3000]
        assert a.get_xlabel() == "context length (tokens)"

    (kv,) = figs["kv_retrieval_by_position.png"].axes
    assert "depth" in kv.get_xlabel()  # 85 positions -> 10 depth bins
    assert list(kv.get_lines()[1].get_xdata()) == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]

    heat = figs["niah_ft_template_heatmap.png"].axes[0]
    assert heat.get_images()[0].get_array().shape == (3, 3)
    assert heat.get_xlabel() == "Context length (tokens)"
    assert heat.get_ylabel() == "Needle depth (% of context)"
    assert [t.get_text() for t in heat.get_xticklabels()] == ["1K", "2K", "4K"]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0%", "50%", "100%"]


def test_niah_grid_means_and_cell_deltas(full):
    made = full["made"]
    rows = read_csv(full["out"] / "tables/niah_heatmap.csv")
    assert len(rows) == 18  # 3 lengths x 3 depths x 2 variants
    base = fakes.read_scores(made["base"]["niah"], "exact_match")
    s0 = fakes.read_scores(made["ft_template-seed0"]["niah"], "exact_match")
    s1 = fakes.read_scores(made["ft_template-seed1"]["niah"], "exact_match")
    ids = [i for i in base if i.startswith("niah-2000-50-")]
    b = next(r for r in rows if (r["variant"], r["length"], r["depth"]) == ("base", "2000", "50"))
    assert float(b["mean"]) == pytest.approx(statistics.fmean(base[i] for i in ids))
    assert b["delta"] == ""
    ft = next(
        r for r in rows if (r["variant"], r["length"], r["depth"]) == ("ft_template", "2000", "50")
    )
    assert ft["seeds"] == "2" and ft["delta_n"] == "4"
    assert float(ft["delta"]) == pytest.approx(
        statistics.fmean((s0[i] + s1[i]) / 2 - base[i] for i in ids)
    )


def test_general_table_has_each_metric_with_deltas(full):
    rows = read_csv(full["out"] / "tables/general_scores.csv")
    assert {r["metric"] for r in rows} == {"mmlu/acc", "gsm8k/exact_match"}
    ft = [r for r in rows if r["variant"] == "ft_template"]
    assert all(r["delta"] and r["delta_ci_low"] and r["delta_n"] for r in ft)
    assert {r["delta_n"] for r in ft} == {"60", "40"}
    text = full["result"].path.read_text()
    assert "Not directly comparable with the paper's numbers:\n\n* gsm8k: shots from" in text


def test_html_page_is_self_contained(full):
    page = (full["out"] / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "mdqa-0-0" in page and "Question for" in page
    assert not re.search(r"src=['\"]http", page)


def _mdqa_pair(root: Path, *, ft_per_pos: int = 40, base_predictions: bool = True):
    base = fakes.write_run(
        root / "base" / "mdqa",
        benchmark="mdqa",
        model="hf:base",
        rows=fakes.mdqa_rows(random.Random(1), fakes.acc_base),
        primary="best_subspan_em",
        group_by=("gold_position",),
        predictions=base_predictions,
    )
    ft = fakes.write_run(
        root / "ft" / "mdqa",
        benchmark="mdqa",
        model="hf:ft",
        rows=fakes.mdqa_rows(random.Random(2), fakes.acc_ft, per_pos=ft_per_pos),
        primary="best_subspan_em",
        group_by=("gold_position",),
    )
    return base, ft


def test_a_smaller_sample_set_is_compared_on_the_shared_samples(tmp_path):
    """A run re-evaluated with a smaller limit: paired on the samples both scored, said so."""
    _mdqa_pair(tmp_path, ft_per_pos=30)
    result = build_report([tmp_path / "base", tmp_path / "ft"], tmp_path / "out")
    assert result.baseline == "hf:base"  # default: the first RUN given
    text = result.path.read_text()
    assert "paired on the 150 samples both scored; 0 only in hf:ft, 50 (" in text
    assert "only in hf:base; left out" in text
    assert re.search(CI_DELTA, text)
    ft = next(r for r in read_csv(tmp_path / "out/tables/overall.csv") if r["variant"] == "hf:ft")
    assert ft["delta"] != "" and "paired on the 150 samples" in ft["delta_note"]
    assert not any("prompt" in p for p in result.problems)


def test_disjoint_sample_sets_give_no_delta(tmp_path):
    base, ft = _mdqa_pair(tmp_path)
    rows = [json.loads(x) for x in (ft / "predictions.jsonl").read_text().splitlines()]
    for r in rows:
        r["id"] = "other-" + r["id"]
    (ft / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = build_report([tmp_path / "base", tmp_path / "ft"], tmp_path / "out")
    text = result.path.read_text()
    assert "200 (other-" in text and "only in hf:ft" in text and "no paired delta" in text
    assert not re.search(CI_DELTA, text)
    per_pos = read_csv(tmp_path / "out/tables/mdqa_by_position.csv")
    assert all(r["delta"] == "" for r in per_pos if r["variant"] == "hf:ft")


def test_missing_predictions_means_no_paired_delta(tmp_path):
    base, _ = _mdqa_pair(tmp_path, base_predictions=False)
    result = build_report([tmp_path], tmp_path / "out", baseline="hf:base")
    assert any("predictions.jsonl missing" in p for p in result.problems)
    text = result.path.read_text()
    assert "## Problems found" in text and f"{base}: predictions.jsonl missing" in text
    assert "no predictions.jsonl for hf:base" in text
    assert not re.search(CI_DELTA, text)


def test_missing_metrics_is_reported_and_run_left_out(tmp_path):
    _mdqa_pair(tmp_path)
    broken = fakes.write_run(
        tmp_path / "crashed" / "mdqa",
        benchmark="mdqa",
        model="hf:x",
        rows=fakes.mdqa_rows(random.Random(3), fakes.acc_ft, per_pos=2),
        primary="best_subspan_em",
        metrics=False,
    )
    result = build_report([tmp_path], tmp_path / "out")
    text = result.path.read_text()
    assert f"{broken}: metrics.json missing" in text
    assert "hf:x" not in text.split("## Runs")[1]
    assert re.search(CI_DELTA, text)  # the two complete runs are still compared


def test_nothing_usable_is_a_user_error(tmp_path):
    fakes.write_run(
        tmp_path / "r",
        benchmark="mdqa",
        model="hf:x",
        primary="best_subspan_em",
        rows=fakes.mdqa_rows(random.Random(3), fakes.acc_ft, per_pos=2),
        metrics=False,
    )
    with pytest.raises(UserError, match="nothing to report: .*metrics.json missing"):
        build_report([tmp_path / "r"], tmp_path / "out")
    with pytest.raises(UserError, match="not a folder"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run folders found"):
        build_report([tmp_path / "empty"], tmp_path / "out")


def test_baseline_option_flips_the_delta(tmp_path):
    _mdqa_pair(tmp_path)
    a = build_report([tmp_path], tmp_path / "a", baseline="hf:base")
    b = build_report([tmp_path], tmp_path / "b", baseline="hf:ft")
    da = next(r for r in read_csv(a.path.parent / "tables/overall.csv") if r["delta"])
    db = next(r for r in read_csv(b.path.parent / "tables/overall.csv") if r["delta"])
    assert (da["variant"], db["variant"]) == ("hf:ft", "hf:base")
    assert float(da["delta"]) == pytest.approx(-float(db["delta"]))
    with pytest.raises(UserError, match="--baseline 'gpt': no such variant.*'hf:base'"):
        build_report([tmp_path], tmp_path / "c", baseline="gpt")


def test_seeds_scoring_different_samples_are_not_averaged_per_sample(tmp_path):
    _mdqa_pair(tmp_path)
    for seed, per_pos in ((0, 40), (1, 39)):
        fakes.write_run(
            tmp_path / "v" / f"seed{seed}",
            benchmark="mdqa",
            model=f"hf:v{seed}",
            rows=fakes.mdqa_rows(random.Random(seed), fakes.acc_ft, per_pos=per_pos),
            primary="best_subspan_em",
            group_by=("gold_position",),
            variant="v",
            seed=seed,
        )
    result = build_report([tmp_path], tmp_path / "out", baseline="hf:base")
    text = result.path.read_text()
    assert "seeds of v scored different samples" in text
    v = next(r for r in read_csv(tmp_path / "out/tables/overall.csv") if r["variant"] == "v")
    assert v["seeds"] == "2" and v["ci_low"] == "" and v["delta"] == "" and v["n"] == ""


def test_duplicates_prompt_changes_and_count_mismatch_are_noted(tmp_path):
    base, ft = _mdqa_pair(tmp_path)
    lines = (ft / "predictions.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    rows[0]["prompt_sha256"] = "0" * 64
    (ft / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    metrics = json.loads((ft / "metrics.json").read_text())
    (ft / "metrics.json").write_text(json.dumps({**metrics, "n": 201}))
    shutil.copytree(base, tmp_path / "copy" / "mdqa")
    result = build_report([tmp_path / "base", tmp_path / "ft", tmp_path / "copy"], tmp_path / "out")
    problems = "\n".join(result.problems)
    assert "same variant/seed/benchmark as" in problems and "kept the first" in problems
    assert "metrics.json says n=201 but predictions.jsonl has 200 samples" in problems
    assert "mdqa: 1 of 200 shared sample ids (mdqa-0-0)" in problems
    assert "have different prompts (prompt_sha256) in hf:ft and hf:base" in problems
    text = result.path.read_text()
    assert "No problems found" not in text and "not the same inputs; no paired delta" in text
    assert not re.search(CI_DELTA, text)  # one changed prompt: no paired delta anywhere


def test_training_runs_are_listed_with_loss_curve(tmp_path):
    _mdqa_pair(tmp_path)
    train = tmp_path / "train" / "ft_template" / "seed0"
    (train / "checkpoint-4").mkdir(parents=True)
    (train / "model.json").write_text(json.dumps({"backend": "hf", "path": "/m", "adapter": None}))
    (train / "config.yaml").write_text("variant: ft_template\nseed: 0\n")  # as `run` records
    log = [{"step": s, "loss": 3.0 / s} for s in (1, 2, 3, 4)]
    (train / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    result = build_report([tmp_path], tmp_path / "out")
    text = result.path.read_text()
    assert "## Training runs" in text and "| ft_template | 0 | hf | /m |" in text
    assert "0.7500" in text and (tmp_path / "out/figures/training_loss.png").is_file()


def test_cli_writes_report_and_html(tmp_path, capsys):
    _mdqa_pair(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "report",
            str(tmp_path / "base"),
            str(tmp_path / "ft"),
            "--out",
            str(out),
            "--html",
            "--baseline",
            "hf:ft",
        ]
    )
    assert code == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "figures/mdqa_by_position.png").is_file()
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_pairwise_deltas_between_non_baseline_variants(tmp_path):
    for variant, acc, rng in (
        ("base", fakes.acc_base, 1),
        ("a", fakes.acc_ft, 2),
        ("b", fakes.acc_base, 3),
    ):
        fakes.write_run(
            tmp_path / variant / "mdqa",
            benchmark="mdqa",
            model=f"hf:{variant}",
            rows=fakes.mdqa_rows(random.Random(rng), acc),
            primary="best_subspan_em",
            group_by=("gold_position",),
            variant=variant,
            seed=None,
        )
    result = build_report([tmp_path], tmp_path / "out")
    assert result.baseline == "base"
    text = result.path.read_text()
    assert re.search(r"\| mdqa \| a \| b \| " + CI_DELTA + r" \|", text)
    a = fakes.read_scores(tmp_path / "a" / "mdqa", "best_subspan_em")
    b = fakes.read_scores(tmp_path / "b" / "mdqa", "best_subspan_em")
    (row,) = read_csv(tmp_path / "out/tables/pairwise.csv")
    assert float(row["delta"]) == pytest.approx(statistics.fmean(a[i] - b[i] for i in a))


def test_kv_depth_bins_from_predictions_when_metrics_have_none(tmp_path):
    figures = {}
    real_save = plots.save

    def capture(fig, path):
        figures[Path(path).name] = fig
        return real_save(fig, path)

    for name, acc in (("base", fakes.acc_base), ("ft", fakes.acc_ft)):
        fakes.write_run(
            tmp_path / name / "kv_retrieval",
            benchmark="kv_retrieval",
            model=f"hf:{name}",
            rows=fakes.kv_rows(random.Random(5), acc),
            primary="value_correct",
            group_by=("gold_position",),
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save", capture)
        result = build_report([tmp_path / "base", tmp_path / "ft"], tmp_path / "out")
    assert result.problems == []
    (ax,) = figures["kv_retrieval_by_position.png"].axes
    assert list(ax.get_lines()[0].get_xdata()) == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    rows = read_csv(tmp_path / "out/tables/kv_retrieval_by_position.csv")
    first = next(r for r in rows if r["key"] == "0.0" and r["variant"] == "hf:base")
    assert first["shown_as"] == "0–10%"
    # positions 0..8 of 85 fall in the first bin (depth = position / 84 < 0.1), twice each
    assert first["n"] == "18"


def test_seed_with_another_primary_metric_is_left_out(tmp_path):
    _mdqa_pair(tmp_path)
    rows = fakes.mdqa_rows(random.Random(0), fakes.acc_ft)
    fakes.write_run(
        tmp_path / "v" / "seed0",
        benchmark="mdqa",
        model="hf:v0",
        rows=rows,
        primary="best_subspan_em",
        variant="v",
        seed=0,
    )
    for r in rows:
        r["scores"]["other"] = 0.0
    odd = fakes.write_run(
        tmp_path / "v" / "seed1",
        benchmark="mdqa",
        model="hf:v1",
        rows=rows,
        primary="other",
        variant="v",
        seed=1,
    )
    result = build_report([tmp_path], tmp_path / "out", baseline="hf:base")
    assert any(str(odd) in p and "left out of the report" in p for p in result.problems)
    v = next(r for r in read_csv(tmp_path / "out/tables/overall.csv") if r["variant"] == "v")
    assert v["seeds"] == "1" and v["metric"] == "best_subspan_em"


def _plain_eval_run(folder: Path, short: str, path: str, rng: int, **extra) -> Path:
    """A ``needlework eval`` run without a recipe: no variant, the model spec in config.yaml."""
    run = fakes.write_run(
        folder,
        benchmark="mdqa",
        model=short,
        rows=fakes.mdqa_rows(random.Random(rng), fakes.acc_base if rng == 1 else fakes.acc_ft),
        primary="best_subspan_em",
        group_by=("gold_position",),
        **extra,
    )
    (run / "config.yaml").write_text(
        f"model:\n  name: hf\n  path: {path}\n  batch_size: 8\nbenchmarks:\n- name: mdqa\n"
        "variant: null\nseed: null\n"
    )
    return run


def test_baseline_names_a_plain_eval_runs_model(tmp_path, capsys):
    _plain_eval_run(tmp_path / "a" / "mdqa", "hf:SmolLM2-135M", "/models/SmolLM2-135M", 1)
    _plain_eval_run(tmp_path / "b" / "mdqa", "hf:SmolLM2-135M-ft", "/runs/SmolLM2-135M-ft", 2)
    by_label = build_report([tmp_path], tmp_path / "o1", baseline="hf:SmolLM2-135M-ft")
    assert by_label.baseline == "hf:SmolLM2-135M-ft"
    bare = build_report([tmp_path], tmp_path / "o2", baseline="SmolLM2-135M")  # without "hf:"
    assert bare.baseline == "hf:SmolLM2-135M"
    (ft,) = [r for r in read_csv(tmp_path / "o2/tables/overall.csv") if r["delta"]]
    assert ft["variant"] == "hf:SmolLM2-135M-ft"
    code = main(["report", str(tmp_path), "--out", str(tmp_path / "o3"), "--baseline", "base"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "--baseline 'base': no such variant or model" in err
    assert "'hf:SmolLM2-135M', 'hf:SmolLM2-135M-ft'" in err


def test_baseline_names_a_variant_or_its_model(tmp_path):
    _plain_eval_run(tmp_path / "a" / "mdqa", "hf:m0", "/m0", 1, variant="base")
    _plain_eval_run(tmp_path / "b" / "mdqa", "hf:m1", "/m1", 2, variant="ft")
    assert build_report([tmp_path], tmp_path / "o1", baseline="ft").baseline == "ft"
    assert build_report([tmp_path], tmp_path / "o2", baseline="hf:m1").baseline == "ft"
    with pytest.raises(UserError, match=r"labels: 'base', 'ft' \(or one of the models 'hf:m0'"):
        build_report([tmp_path], tmp_path / "o3", baseline="m2")


def test_model_labels_come_from_the_spec_not_folder_names(tmp_path):
    # Two different models, both saved as ".../final" (same short id), evaluated into run
    # folders of the same name; a third run sits in a folder named after another model.
    one = _plain_eval_run(tmp_path / "x" / "mdqa", "hf:final", "/exp1/final", 1)
    two = _plain_eval_run(tmp_path / "y" / "mdqa", "hf:final", "/exp2/final", 2)
    three = _plain_eval_run(tmp_path / "hf:final" / "mdqa", "hf:other", "/exp3/other", 3)
    result = build_report([tmp_path], tmp_path / "out", baseline="hf:final (exp1/final)")
    assert not any("same variant/seed/benchmark" in p for p in result.problems)
    runs = {r["path"]: r for r in read_csv(tmp_path / "out/tables/runs.csv")}
    assert runs[str(one)]["model"] == runs[str(one)]["variant"] == "hf:final (exp1/final)"
    assert runs[str(two)]["model"] == "hf:final (exp2/final)"
    assert runs[str(three)]["model"] == "hf:other"
    overall = {r["variant"]: r for r in read_csv(tmp_path / "out/tables/overall.csv")}
    assert set(overall) == {"hf:final (exp1/final)", "hf:final (exp2/final)", "hf:other"}
    assert overall["hf:final (exp2/final)"]["delta"] != ""


def test_variant_and_seed_come_from_run_json_not_folders(tmp_path):
    run = fakes.write_run(
        tmp_path / "ft_template" / "seed7" / "mdqa",
        benchmark="mdqa",
        model="hf:m",
        rows=fakes.mdqa_rows(random.Random(1), fakes.acc_ft),
        primary="best_subspan_em",
        group_by=("gold_position",),
        variant="lora_r8",
        seed=3,
    )
    build_report([tmp_path], tmp_path / "out")
    (row,) = read_csv(tmp_path / "out/tables/runs.csv")
    assert (row["variant"], row["seed"], row["path"]) == ("lora_r8", "3", str(run))


def _kv_with_format(root: Path) -> dict[str, list[Path]]:
    made: dict[str, list[Path]] = {"base": [], "ft": []}
    for variant, acc, rate, seeds in (
        ("base", fakes.acc_base, 0.3, (None,)),
        ("ft", fakes.acc_ft, 0.9, (0, 1)),
    ):
        for seed in seeds:
            made[variant].append(
                fakes.write_run(
                    root / variant / f"seed{seed}" / "kv_retrieval",
                    benchmark="kv_retrieval",
                    model=f"hf:{variant}{seed}",
                    rows=fakes.kv_rows(random.Random(f"{variant}{seed}"), acc, format_rate=rate),
                    primary="value_correct",
                    group_by=("gold_position", "gold_depth_bin"),
                    variant=variant,
                    seed=seed,
                )
            )
    return made


def test_format_metric_shown_beside_the_primary_one(tmp_path):
    made = _kv_with_format(tmp_path)
    figures = {}
    real_save = plots.save

    def capture(fig, path):
        figures[Path(path).name] = fig
        return real_save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save", capture)
        result = build_report([tmp_path], tmp_path / "out")
    assert result.problems == []
    # the figure: a second panel for format_match, markers and a band per series in each
    primary, fmt = figures["kv_retrieval_by_position.png"].axes
    assert [primary.get_title(), fmt.get_title()] == [
        "kv_retrieval: value_correct",
        "kv_retrieval: format_match",
    ]
    for ax in (primary, fmt):
        assert len(ax.get_lines()) == 2 and len(ax.collections) == 2
        assert len({ln.get_marker() for ln in ax.get_lines()}) == 2
    base_fmt = [
        statistics.fmean(
            r["scores"]["format_match"]
            for r in map(json.loads, (made["base"][0] / "predictions.jsonl").open())
            if r["meta"]["gold_depth_bin"] == depth
        )
        for depth in (0.0, 0.1)
    ]
    assert list(fmt.get_lines()[0].get_ydata()[:2]) == pytest.approx(base_fmt)
    # the markdown table: format_match columns beside the primary ones, with deltas
    text = result.path.read_text()
    section = text.split("## KV retrieval")[1].split("\n## ")[0]
    header = next(ln for ln in section.splitlines() if ln.startswith("| depth"))
    assert header == (
        "| depth | n | base | ft | Δ ft vs base | base: format_match | ft: format_match "
        "| Δ ft vs base: format_match |"
    )
    # the CSVs: format_match rows in the breakdown and in the overall table, paired deltas
    rows = read_csv(tmp_path / "out/tables/kv_retrieval_by_position.csv")
    assert {r["metric"] for r in rows} == {"value_correct", "format_match"}
    overall = read_csv(tmp_path / "out/tables/overall.csv")
    ft = next(r for r in overall if (r["variant"], r["metric"]) == ("ft", "format_match"))
    s0, s1 = (fakes.read_scores(p, "format_match") for p in made["ft"])
    base = fakes.read_scores(made["base"][0], "format_match")
    assert float(ft["delta"]) == pytest.approx(
        statistics.fmean((s0[i] + s1[i]) / 2 - base[i] for i in base)
    )
    assert [r["metric"] for r in overall] == ["value_correct"] * 2 + ["format_match"] * 2


def test_no_format_column_where_the_benchmark_has_none(full):
    text = full["result"].path.read_text().split("## How to read")[0]
    assert "format_match" not in text
    (ax,) = full["figures"]["mdqa_by_position.png"].axes
    assert ax.get_title() == "mdqa"


def test_several_seeds_get_a_ci_band_in_breakdowns(full):
    """Per-key CI over per-sample scores averaged across seeds, as the overall CI is made."""
    made = full["made"]
    rows = read_csv(full["out"] / "tables/mdqa_by_position.csv")
    row = next(r for r in rows if r["key"] == "9" and r["variant"] == "ft_template")
    s0 = fakes.read_scores(made["ft_template-seed0"]["mdqa"], "best_subspan_em")
    s1 = fakes.read_scores(made["ft_template-seed1"]["mdqa"], "best_subspan_em")
    from needlework.stats import mean_ci

    ids = sorted(i for i in s0 if i.startswith("mdqa-9-"))  # the bootstrap sees id order
    _, lo, hi = mean_ci([(s0[i] + s1[i]) / 2 for i in ids])
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((lo, hi))
    assert row["seeds"] == "2" and row["seed_min"] != ""
    (ax,) = full["figures"]["mdqa_by_position.png"].axes
    band = ax.collections[1].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(
        min(float(r["ci_low"]) for r in rows if r["variant"] == "ft_template")
    )


def test_comparison_table_rows_are_finetuning_data_columns_are_benchmarks(tmp_path):
    """Table 2 layout: a row per variant, a column per benchmark score (secondary metrics
    declared by the benchmark included), each cell the score and its paired delta."""
    for variant, acc, rng in (
        ("base", fakes.acc_base, 1),
        ("a", fakes.acc_ft, 2),
        ("b", fakes.acc_base, 3),
    ):
        rows = fakes.mdqa_rows(random.Random(rng), acc)
        for r in rows:
            r["scores"]["unsupported"] = 1.0 - r["scores"]["best_subspan_em"]
        fakes.write_run(
            tmp_path / variant / "mdqa", benchmark="mdqa", model=f"hf:{variant}", rows=rows,
            primary="best_subspan_em", group_by=("gold_position",), variant=variant, seed=None,
            extra={"secondary_metrics": ["unsupported", "abstained"]},
        )  # fmt: skip
        fakes.write_run(
            tmp_path / variant / "kv", benchmark="kv_retrieval", model=f"hf:{variant}",
            rows=fakes.kv_rows(random.Random(rng + 10), acc), primary="value_correct",
            group_by=("gold_position",), variant=variant, seed=None,
        )  # fmt: skip
    result = build_report([tmp_path], tmp_path / "out")
    text = result.path.read_text()
    section = text.split("## Finetuning data × benchmark", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| finetuning data"))
    assert "mdqa: best_subspan_em" in header and "mdqa: unsupported" in header
    assert "mdqa: abstained" not in header  # declared but never recorded
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in lines] == ["| base", "| a", "| b"]
    assert re.search(r"\| a \| \d\.\d{3} \(" + CI_DELTA + r"\)", section)
    rows = read_csv(tmp_path / "out/tables/comparison.csv")
    mine = {(r["variant"], r["metric"]): r for r in rows if r["benchmark"] == "mdqa"}
    a = fakes.read_scores(tmp_path / "a" / "mdqa", "unsupported")
    base = fakes.read_scores(tmp_path / "base" / "mdqa", "unsupported")
    want = statistics.fmean(a[i] - base[i] for i in a)
    assert float(mine[("a", "unsupported")]["delta"]) == pytest.approx(want)
    assert mine[("base", "unsupported")]["delta"] == ""


def _sweep(root: Path, ratios: dict[str, float], lr: dict[str, float] | None = None) -> None:
    """base + one variant per ratio on KV and a general suite, each variant with a training
    folder whose resolved config differs in ``mix_ratio`` (and ``learning_rate`` if given)."""
    for i, variant in enumerate(["base", *ratios]):
        acc = 0.2 + 0.15 * i
        fakes.write_run(
            root / "eval" / variant / "kv", benchmark="kv_retrieval", model=f"hf:{variant}",
            rows=fakes.kv_rows(random.Random(i), lambda d, a=acc: a), primary="value_correct",
            variant=variant,
        )  # fmt: skip
        fakes.write_run(
            root / "eval" / variant / "general", benchmark="general", model=f"hf:{variant}",
            rows=fakes.general_rows(random.Random(i + 9), 0.5), primary="mmlu/acc",
            variant=variant, extra={"label": "general"},
        )  # fmt: skip
        if variant == "base":
            continue
        train = root / "train" / variant / "seed0"
        train.mkdir(parents=True)
        (train / "model.json").write_text(json.dumps({"backend": "hf", "path": f"/{variant}"}))
        rate = (lr or {}).get(variant, 5e-4)
        (train / "config.yaml").write_text(
            f"trainer:\n  name: hf_sft\n  learning_rate: {rate}\n  max_steps: 24\n"
            f"train_path: data/kv/train.jsonl\nmix_path: data/chat/train.jsonl\n"
            f"mix_ratio: {ratios[variant]}\nout_dir: {train}\nseed: 0\nvariant: {variant}\n"
        )


def test_scores_are_drawn_against_the_one_swept_training_setting(tmp_path):
    ratios = {"mix_b": 0.5, "mix_a": 0.0, "mix_c": 0.75}
    _sweep(tmp_path, ratios)
    result = build_report([tmp_path], tmp_path / "out")
    text = result.path.read_text()
    section = text.split("## Scores against mix_ratio", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert "kv_retrieval: value_correct" in lines[0] and "general: mmlu/acc" in lines[0]
    assert [ln.split(" | ")[:2] for ln in lines[1:]] == [["| 0", "mix_a"], ["| 0.5", "mix_b"],
                                                         ["| 0.75", "mix_c"]]  # fmt: skip
    rows = read_csv(tmp_path / "out/tables/scores_vs_mix_ratio.csv")
    kv = {r["variant"]: r for r in rows if r["metric"] == "value_correct"}
    mine = fakes.read_scores(tmp_path / "eval/mix_c/kv", "value_correct")
    base = fakes.read_scores(tmp_path / "eval/base/kv", "value_correct")
    assert float(kv["mix_c"]["mean"]) == pytest.approx(statistics.fmean(mine.values()))
    assert float(kv["mix_c"]["delta"]) == pytest.approx(
        statistics.fmean(mine[k] - base[k] for k in mine)
    )
    assert float(kv["mix_c"]["value"]) == 0.75
    png = tmp_path / "out/figures/scores_vs_mix_ratio.png"
    assert png.is_file() and "scores_vs_mix_ratio.png" in section


def test_no_sweep_section_when_variants_differ_in_more_than_one_setting(tmp_path):
    ratios = {"mix_a": 0.0, "mix_b": 0.5, "mix_c": 0.75}
    _sweep(tmp_path, ratios, lr={"mix_a": 1e-4, "mix_b": 2e-4, "mix_c": 3e-4})
    text = build_report([tmp_path], tmp_path / "out").path.read_text()
    assert "## Scores against" not in text
    shutil.rmtree(tmp_path)
    _sweep(tmp_path, {"mix_a": 0.0, "mix_b": 0.5})  # two points are not a sweep
    assert "## Scores against" not in build_report([tmp_path], tmp_path / "o").path.read_text()


def test_aggregate_only_suite_scores_get_an_unpaired_difference(tmp_path):
    """A suite task with no per-sample scores (only metrics.json) is compared with the baseline
    by the difference of the recorded means, labelled unpaired, in the comparison table and the
    suite's own table, whichever order the variants are found in."""
    means = {}
    for variant, p, rng in (("a", 0.7, 2), ("b", 0.3, 3), ("base", 0.5, 1)):
        rows = fakes.general_rows(random.Random(rng), p)
        fakes.write_run(
            tmp_path / variant / "general", benchmark="general", model=f"hf:{variant}", rows=rows,
            primary="mmlu/acc", variant=variant, predictions=False,
            extra={"label": "general", "tasks": {"mmlu": {"primary_metric": "mmlu/acc"}}},
        )  # fmt: skip
        means[variant] = statistics.fmean(
            r["scores"]["mmlu/acc"] for r in rows if "mmlu/acc" in r["scores"]
        )
        fakes.write_run(
            tmp_path / variant / "kv", benchmark="kv_retrieval", model=f"hf:{variant}",
            rows=fakes.kv_rows(random.Random(rng + 10), fakes.acc_base), primary="value_correct",
            group_by=("gold_position",), variant=variant,
        )  # fmt: skip
    build_report([tmp_path], tmp_path / "out", baseline="base")
    for table in ("comparison.csv", "general_scores.csv"):
        rows = read_csv(tmp_path / "out" / "tables" / table)
        got = {r["variant"]: r for r in rows if r["metric"] == "mmlu/acc"}
        for variant in ("a", "b"):
            assert float(got[variant]["delta"]) == pytest.approx(means[variant] - means["base"])
            assert got[variant]["delta_ci_low"] == ""  # unpaired: no CI
