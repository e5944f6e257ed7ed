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
    assert "context length" in heat.get_xlabel() and "depth" in heat.get_ylabel()
    assert [t.get_text() for t in heat.get_xticklabels()] == ["1000", "2000", "4000"]


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


def test_mismatched_samples_give_a_stated_warning_and_no_delta(tmp_path):
    _mdqa_pair(tmp_path, ft_per_pos=30)
    result = build_report([tmp_path / "base", tmp_path / "ft"], tmp_path / "out")
    assert result.baseline == "hf:base"  # default: the first RUN given
    text = result.path.read_text()
    assert "sample sets differ: 0 only in hf:ft, 50 (" in text
    assert "only in hf:base; no paired delta" in text
    assert not re.search(CI_DELTA, text)
    ft = next(r for r in read_csv(tmp_path / "out/tables/overall.csv") if r["variant"] == "hf:ft")
    assert ft["delta"] == "" and "sample sets differ" in ft["delta_note"]
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
    text = result.path.read_text()
    assert "1 of 200 paired samples have different prompts" in text


def test_training_runs_are_listed_with_loss_curve(tmp_path):
    _mdqa_pair(tmp_path)
    train = tmp_path / "train" / "ft_template" / "seed0"
    (train / "checkpoint-4").mkdir(parents=True)
    (train / "model.json").write_text(json.dumps({"backend": "hf", "path": "/m", "adapter": None}))
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
