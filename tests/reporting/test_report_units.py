"""Pure pieces of the report: markdown/CSV tables, formatting, seed combining, figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from needlework.records import Mean, Metrics, RunInfo
from needlework.reporting import compare, plots, sections
from needlework.reporting import runs as runs_mod
from needlework.reporting.compare import Delta, Stat, combine
from needlework.reporting.tables import Notes, Table, fmt_delta, fmt_stat


def test_table_markdown_and_csv_golden():
    t = Table(["model", "score"], [["a|b", 0.5], ["c", None]])
    assert t.to_markdown() == "| model | score |\n|---|---|\n| a\\|b | 0.5 |\n| c |  |\n"
    assert t.to_csv() == "model,score\na|b,0.5\nc,\n"


def test_stat_and_delta_formatting_with_numbered_notes():
    assert fmt_stat(Stat(0.5304, 0.48, 0.58, 200)) == "0.530 [0.480, 0.580]"
    seeds = Stat(0.53, None, None, 200, seeds=3, seed_min=0.51, seed_max=0.55, seed_std=0.02)
    assert fmt_stat(seeds) == "0.530 (3 seeds 0.510–0.550)"
    notes = Notes()
    assert fmt_delta(Delta(0.05, 0.01, 0.09, 200), notes) == "+0.050 [+0.010, +0.090]"
    assert fmt_delta(Delta(None, note="samples differ"), notes) == "— [1]"
    assert fmt_delta(Delta(None, note="other"), notes) == "— [2]"
    assert fmt_delta(Delta(None, note="samples differ"), notes) == "— [1]"
    assert fmt_delta(None, notes) == ""
    assert notes.to_markdown() == "[1] samples differ  \n[2] other  \n"


def test_combine_seeds_keeps_spread():
    one = combine([Mean(mean=0.4, ci_low=0.3, ci_high=0.5, n=10)])
    assert one == Stat(0.4, 0.3, 0.5, 10)
    two = combine([Mean(mean=0.4, n=10), Mean(mean=0.6, n=10)])
    assert (two.mean, two.seeds, two.seed_min, two.seed_max, two.n) == (0.5, 2, 0.4, 0.6, 10)
    assert two.seed_std == pytest.approx(math.sqrt(0.02))
    assert two.ci_low is None
    assert combine([Mean(mean=0.4, n=10), Mean(mean=0.6, n=9)]).n is None


@pytest.mark.parametrize("sign", [1, -1])
def test_paired_delta_is_variant_minus_baseline_whatever_stats_order(monkeypatch, sign):
    """Guards against the stats helper subtracting in the other order."""

    def fake(a, b, *, n=10000, seed=0):
        d = sign * (sum(a) / len(a) - sum(b) / len(b))
        return d, d - 0.1, d + 0.1

    monkeypatch.setattr(compare, "paired_bootstrap", fake)
    delta, lo, hi = compare._paired([1.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    assert delta == pytest.approx(2 / 3)
    assert (lo, hi) == pytest.approx((2 / 3 - 0.1, 2 / 3 + 0.1))


def series(name, ys, band=True):
    xs = tuple(range(1, len(ys) + 1))
    lo = tuple(y - 0.1 for y in ys) if band else ()
    hi = tuple(y + 0.1 for y in ys) if band else ()
    return plots.Series(name, xs, tuple(ys), lo, hi)


def test_line_figure_one_line_per_series_and_labels():
    panel = plots.Panel(
        "p", (series("a", [0.1, 0.2]), series("b", [0.3, 0.4], band=False), series("c", [0.5, 0.6]))
    )
    fig = plots.line_figure(
        [panel, plots.Panel("q", (series("b", [0.2, 0.2]),))], title="T", xlabel="X", ylabel="Y"
    )
    left, right = fig.axes
    assert (left.get_xlabel(), left.get_ylabel(), left.get_title()) == ("X", "Y", "p")
    assert len(left.get_lines()) == 3 and len(left.collections) == 2
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["a", "b", "c"]
    # the same model keeps its colour across panels
    assert right.get_lines()[0].get_color() == left.get_lines()[1].get_color()
    assert fig.get_suptitle() == "T"
    with pytest.raises(ValueError, match="panels"):
        plots.line_figure([], title="", xlabel="", ylabel="")


def _heatmap():
    return plots.heatmap_figure(
        [[1.0, None], [0.0, 0.5]],
        rows=["0", "100"],
        cols=["1k", "2k"],
        title="H",
        xlabel="length",
        ylabel="depth",
    )


def test_heatmap_figure_blank_cells_and_labels(tmp_path):
    ax = _heatmap().axes[0]
    data = ax.get_images()[0].get_array()
    assert data.shape == (2, 2) and math.isnan(float(data.data[0, 1]))
    assert [t.get_text() for t in ax.texts] == ["1.00", "0.00", "0.50"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("length", "depth")
    path = plots.save(_heatmap(), tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no timestamp in the file: the same data saves to the same bytes
    assert plots.save(_heatmap(), tmp_path / "h2.png").read_bytes() == path.read_bytes()


def test_loss_figure():
    fig = plots.loss_figure([series("run", [3.0, 2.0, 1.0], band=False)])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "training loss"
    assert len(ax.get_lines()) == 1


def test_coinciding_series_stay_visible():
    """Identical series: own marker and line style each, own CI band, dodged sideways."""
    same = [0.5, 0.6, 0.7]
    panel = plots.Panel("p", (series("a", same), series("b", same), series("c", same)))
    fig = plots.line_figure([panel], title="T", xlabel="X", ylabel="Y")
    (ax,) = fig.axes
    lines = ax.get_lines()
    markers = [ln.get_marker() for ln in lines]
    assert len(set(markers)) == 3 and "None" not in markers and None not in markers
    assert len({ln.get_linestyle() for ln in lines}) == 3
    assert len(ax.collections) == 3  # one fill_between band per series
    # the true x values are kept; only the drawing is shifted, by the same step per series
    assert all(list(ln.get_xdata()) == [1, 2, 3] for ln in lines)
    xs = [ln.get_transform().transform((2, 0.6))[0] for ln in lines]
    step = plots.DODGE_PT / 72 * fig.dpi
    assert xs[1] - xs[0] == pytest.approx(step) and xs[2] - xs[1] == pytest.approx(step)
    assert xs[1] == pytest.approx(ax.transData.transform((2, 0.6))[0])  # centred on x
    bands = [c.get_transform().transform((2, 0.6))[0] for c in ax.collections]
    assert bands == pytest.approx(xs)  # each band moves with its line
    # the legend shows the markers, so each model is recognisable there too
    handles = ax.get_legend().legend_handles
    assert [h.get_marker() for h in handles] == markers


def test_band_drawn_where_the_ci_is_known_only():
    partial = plots.Series("a", (1, 2, 3), (0.5, 0.6, 0.7), (0.4, None, 0.6), (0.6, None, 0.8))
    (ax,) = plots.line_figure([plots.Panel("p", (partial,))], title="", xlabel="", ylabel="").axes
    assert len(ax.collections) == 1
    none = plots.Series("b", (1, 2), (0.5, 0.6), (None, None), (None, None))
    (ax,) = plots.line_figure([plots.Panel("p", (none,))], title="", xlabel="", ylabel="").axes
    assert len(ax.collections) == 0 and ax.get_lines()[0].get_marker() == "o"


def test_loss_curves_have_distinct_markers():
    many = tuple(float(i) for i in range(100))
    fig = plots.loss_figure(
        [plots.Series("a", many, many), plots.Series("b", many, many)], title="L"
    )
    a, b = fig.axes[0].get_lines()
    assert a.get_marker() != b.get_marker() and "None" not in (a.get_marker(), b.get_marker())
    assert a.get_markevery() == 8  # markers on about 12 points, not all 100


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("1024", "1K"),
        ("1000", "1K"),
        ("2048", "2K"),
        ("4096", "4K"),
        ("32768", "32K"),
        ("128000", "128K"),
        ("131072", "128K"),
        ("1500", "1.5K"),
        ("512", "512"),
        ("long", "long"),
    ],
)
def test_token_counts_for_people(key, shown):
    assert sections.tokens_label(key) == shown


def test_depth_labels_in_percent():
    assert [
        sections.depth_label("depth_percent", ["0", "50", "100"])(k) for k in ("0", "50", "100")
    ] == [
        "0%",
        "50%",
        "100%",
    ]
    fraction = sections.depth_label("gold_depth", ["0.0", "0.5", "1.0"])
    assert [fraction(k) for k in ("0.0", "0.25", "1.0")] == ["0%", "25%", "100%"]


def test_model_labels_from_the_recorded_spec():
    def run(short, spec, variant=None):
        return runs_mod.EvalRun(
            path=Path(f"/r/{short}"),
            benchmark="mdqa",
            label="mdqa",
            model=short,
            variant=variant or short,
            seed=None,
            metrics=Metrics(benchmark="mdqa", primary_metric="m", metrics={"m": Mean(mean=0)}),
            info=RunInfo(),
            model_spec=spec,
            variant_from_model=variant is None,
        )

    a = run("hf:base/final", {"name": "hf", "path": "/exp1/base/final", "batch_size": 8})
    b = run("hf:base/final", {"name": "hf", "path": "/exp2/base/final", "batch_size": 8})
    same = run("hf:base/final", {"name": "hf", "path": "/exp1/base/final", "batch_size": 32})
    tagged = run("hf:base/final", {"name": "hf", "path": "/exp2/base/final"}, variant="ft")
    alone = run("hf:other", {"name": "hf", "path": "/x/other"})
    runs_mod.label_models([a, b, same, tagged, alone])
    assert a.model == "hf:base/final (exp1/base/final)" == a.variant
    assert b.model == "hf:base/final (exp2/base/final)" == b.variant
    assert same.model == a.model  # batch size changes speed, not the model
    assert (tagged.model, tagged.variant) == (b.model, "ft")  # a recorded variant stays
    assert alone.model == "hf:other"
    adapters = [
        run("hf:m+adapter", {"name": "hf", "path": "/m", "adapter": f"/runs/{s}/adapter"})
        for s in ("s0", "s1")
    ]
    runs_mod.label_models(adapters)
    assert [r.model for r in adapters] == [
        "hf:m+adapter (adapter=s0/adapter)",
        "hf:m+adapter (adapter=s1/adapter)",
    ]
