"""Reports are drawn from what each benchmark declares in metrics.json (records.Figure):
a benchmark reporting has never heard of gets its figures, sections follow ``report_rank``,
and a missing or broken declaration is a problem line, never a crash."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from needlework.config import validate
from needlework.records import Figure
from needlework.reporting import plots
from needlework.reporting.report import build_report

from . import fakes


def _rows(rng: random.Random, acc: float) -> list[dict]:
    rows = []
    for n in (2, 4, 8):
        for slot in (0, 1, 2):
            for i in range(6):
                meta = {"num_items": n, "slot": slot}
                rows.append(fakes._row(f"w-{n}-{slot}-{i}", rng.random() < acc, "hit", meta))
    return rows


def _unknown_benchmark(folder: Path, model: str, acc: float, figures: list) -> Path:
    """A run of a benchmark no registry knows, declaring its figures by hand."""
    return fakes.write_run(
        folder,
        benchmark="mdqa",  # any registered unit; its declaration is replaced below
        model=model,
        rows=_rows(random.Random(model), acc),
        primary="hit",
        group_by=("num_items", "slot"),
        extra={
            "benchmark": "widgets",
            "label": "widgets",
            "report_rank": 5,
            "secondary_metrics": [],
            "figures": figures,
        },
    )


LINE = Figure(
    "line",
    heading="Widgets ({label}): {metric} by number of items",
    name="by_items",
    x="num_items",
    xlabel="items in the context",
    title="Widgets: {metric} by number of items",
    caption="Widgets by items",
)
GRID = Figure(
    "heatmap",
    heading="Widgets ({label}): grid",
    name="grid",
    x="num_items",
    y="slot",
    y_axis="position",
    title="{label}: {variant}",
    caption="grid {variant}",
)


def _capture(monkeypatch) -> dict:
    figures: dict = {}
    real = plots.save

    def save(fig, path):
        figures[Path(path).name] = fig
        return real(fig, path)

    monkeypatch.setattr(plots, "save", save)
    return figures


def test_a_new_benchmark_gets_its_declared_figures_with_no_edit_in_reporting(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    for name, acc in (("base", 0.3), ("ft", 0.8)):
        _unknown_benchmark(
            tmp_path / name / "widgets", f"hf:{name}", acc, [LINE.to_json(), GRID.to_json()]
        )
    fakes.write_run(
        tmp_path / "base" / "mdqa",
        benchmark="mdqa",
        model="hf:base",
        rows=fakes.mdqa_rows(random.Random(0), fakes.acc_base),
        primary="best_subspan_em",
        group_by=("gold_position",),
    )
    result = build_report([tmp_path / "base", tmp_path / "ft"], tmp_path / "out")
    assert result.problems == []
    text = result.path.read_text()
    # report_rank 5 puts the new benchmark before MDQA (10)
    assert text.index("## Widgets (widgets): hit by number of items") < text.index("## MDQA")
    (ax,) = figures["widgets_by_items.png"].axes
    assert ax.get_xlabel() == "items in the context" and ax.get_ylabel() == "hit"
    assert list(ax.get_lines()[0].get_xdata()) == [2, 4, 8]
    heat = figures["widgets_hf-ft_grid.png"].axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["1", "2", "3"]  # slots 1-based
    # every number in the line table is the mean of the rows written
    rows = list(fakes.read_scores(tmp_path / "ft" / "widgets", "hit").items())
    eights = [v for k, v in rows if k.startswith("w-8-")]
    with (tmp_path / "out/tables/widgets_by_items.csv").open() as fh:
        ft8 = next(r for r in csv.DictReader(fh) if (r["variant"], r["key"]) == ("hf:ft", "8"))
    assert float(ft8["mean"]) == pytest.approx(sum(eights) / len(eights))
    # both breakdowns were drawn, so neither is repeated as an "other breakdown" CSV
    assert not (tmp_path / "out/tables/widgets_by_slot.csv").exists()


def test_runs_without_a_declaration_get_tables_and_a_problem_line(tmp_path):
    folder = _unknown_benchmark(tmp_path / "a" / "widgets", "hf:a", 0.5, [])
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["figures"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    result = build_report([tmp_path / "a"], tmp_path / "out")
    assert any("records no 'figures'" in p for p in result.problems)
    text = result.path.read_text()
    assert "## Overall" in text and "widgets_by_num_items.csv" in text  # tables still there
    assert not (tmp_path / "out/figures").exists()


@pytest.mark.parametrize(
    ("figure", "says"),
    [
        (
            {"kind": "pie", "heading": "h", "name": "n", "x": "slot"},
            "field 'figures.0.kind': expected one of 'line', 'heatmap', 'scores', got 'pie'",
        ),
        ({"kind": "line", "heading": "h", "name": "n"}, "field 'figures.0.x': a line figure"),
        (
            {"kind": "heatmap", "heading": "h", "name": "n", "x": "slot"},
            "field 'figures.0.y': a heatmap figure must set y",
        ),
        (
            {"kind": "line", "heading": "h", "name": "n", "x": "slot", "colour": "red"},
            "field 'figures.0.colour': unknown key(s) 'colour'",
        ),
        ({"kind": "line", "name": "n", "x": "slot"}, "field 'figures.0.heading': is required"),
        ("line", "field 'figures.0': expected"),
    ],
)
def test_a_broken_figure_is_named_and_left_out(tmp_path, figure, says):
    folder = _unknown_benchmark(tmp_path / "a" / "widgets", "hf:a", 0.5, [figure, LINE.to_json()])
    result = build_report([tmp_path / "a"], tmp_path / "out")
    (problem,) = [p for p in result.problems if "figures.0" in p]
    assert problem.startswith(f"{folder / 'metrics.json'}: {says}")
    assert problem.endswith("; that figure is left out")
    assert (tmp_path / "out/figures/widgets_by_items.png").is_file()  # the good one is drawn


def test_figure_round_trips_through_metrics_json():
    for fig in (LINE, GRID):
        assert validate(Figure, json.loads(json.dumps(fig.to_json()))) == fig
    assert "x_axis" not in LINE.to_json()  # defaults are not written


def test_every_registered_benchmark_declares_valid_figures():
    from needlework.registry import benchmarks

    for name, unit in benchmarks.items():
        bench = unit() if name != "niah" else unit(tokenizer="chars")
        assert isinstance(bench.report_rank, int), name
        for fig in bench.figures():
            assert validate(Figure, fig.to_json()) == fig
            assert fig.x in bench.group_by or fig.kind == "scores", (name, fig.x)


def test_a_broken_declaration_is_a_contract_error_naming_the_unit():
    """figures() not a tuple of Figure: one line naming the unit (the runner checks this
    before building samples or sending a request)."""
    from dataclasses import dataclass

    from needlework.errors import ContractError
    from needlework.evaluation.base import report_declaration

    @dataclass(frozen=True)
    class Bad:
        report_rank = 3

        def figures(self):
            return [{"kind": "line"}]

    with pytest.raises(ContractError, match=r"Bad.figures\(\): expected a tuple"):
        report_declaration(Bad())


def test_a_line_over_named_categories_is_drawn_with_their_names(tmp_path, monkeypatch):
    """A breakdown whose values are words (a task name): one point per category, named."""
    figures = _capture(monkeypatch)
    by_colour = Figure("line", heading="{label} by colour", name="by_colour", x="colour")
    folder = _unknown_benchmark(tmp_path / "a" / "widgets", "hf:a", 0.5, [by_colour.to_json()])
    rows = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["meta"]["colour"] = ("red", "blue", "green")[i % 3]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = build_report([tmp_path / "a"], tmp_path / "out")
    assert result.problems == []
    (ax,) = figures["widgets_by_colour.png"].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["blue", "green", "red"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]
