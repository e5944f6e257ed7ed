"""Report figures as pure functions: data in, ``matplotlib.figure.Figure`` out; the caller saves.

Figures are built with ``Figure`` directly (no pyplot), so no global state or GUI backend is
involved and matplotlib is imported only when a figure is made. Every line plot draws exactly one
``Line2D`` per series (bands are ``fill_between`` patches), which the tests count.

Series that coincide (two models with the same scores) must stay visible: each series has its
own marker and line style, and its markers and band are shifted sideways by a few points (a
display-space offset, so the data, the ticks and ``get_xdata()`` keep the true x values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from needlework.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Series:
    """One line: a model's score per x, with an optional band (CI or seed min-max)."""

    name: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    lo: tuple[float | None, ...] = ()
    hi: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class Panel:
    title: str
    series: tuple[Series, ...]


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
DODGE_PT = 4.0
"""Sideways shift between neighbouring series, in points (markers are about 5 points wide)."""


def _style(names: list[str], name: str) -> dict[str, Any]:
    """Colour (C0..C9), marker and line style by the series' place among all names of the
    figure, so the same model keeps its colour in every panel and figure of a report."""
    i = names.index(name)
    marker, line = MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)]
    return {"color": f"C{i % 10}", "marker": marker, "linestyle": line}


def _dodge(fig: Figure, ax: Any, index: int, count: int) -> Any:
    """``ax.transData`` shifted sideways so ``count`` series sit side by side, centred."""
    from matplotlib.transforms import ScaledTranslation

    dx = (index - (count - 1) / 2) * DODGE_PT / 72.0
    return ax.transData + ScaledTranslation(dx, 0.0, fig.dpi_scale_trans)


def _band(values: tuple[float | None, ...]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def line_figure(
    panels: list[Panel],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    integer_x: bool = True,
    xticks: Mapping[float, str] | None = None,
) -> Figure:
    """One subplot per panel, one line per series (own marker, dodged), shaded band where
    lo/hi are known (cells without them are left unshaded); ``xticks`` names the x positions
    (categories drawn at 1, 2, ...)."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("panels: expected at least one panel")
    names: list[str] = []
    for panel in panels:
        names += [s.name for s in panel.series if s.name not in names]
    fig = Figure(figsize=(5.2 * len(panels) + 0.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for k, s in enumerate(panel.series):
            style = _style(names, s.name)
            artists = ax.plot(s.x, s.y, markersize=5, label=s.name, **style)
            if s.lo and s.hi and any(v is not None for v in (*s.lo, *s.hi)):
                artists.append(
                    ax.fill_between(
                        s.x, _band(s.lo), _band(s.hi), color=style["color"], alpha=0.15, linewidth=0
                    )
                )
            # Shifted after adding, so the axes limits are still those of the true x values.
            shift = _dodge(fig, ax, k, len(panel.series))
            for artist in artists:
                artist.set_transform(shift)
        xs = sorted({x for s in panel.series for x in s.x})
        if xticks:
            ax.set_xticks(list(xticks), list(xticks.values()))
        elif integer_x and 0 < len(xs) <= 25:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_title(panel.title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if any(panel.series):
            ax.legend(fontsize="small")
    axes[0].set_ylabel(ylabel)
    values = [v for p in panels for s in p.series for v in (*s.y, *(s.hi or ())) if v is not None]
    if values and min(values) >= 0.0 and max(values) <= 1.0:
        axes[0].set_ylim(-0.02, 1.02)  # accuracies: a fixed 0-1 axis keeps figures comparable
    fig.suptitle(title)
    return fig


def heatmap_figure(
    grid: list[list[float | None]],
    *,
    rows: list[str],
    cols: list[str],
    title: str,
    xlabel: str,
    ylabel: str,
    value_label: str = "score",
) -> Figure:
    """``grid[i][j]`` = score at row i (depth) and column j (length); missing cells are blank."""
    from matplotlib.figure import Figure

    data = [[math.nan if v is None else v for v in row] for row in grid]
    fig = Figure(
        figsize=(1.0 + 0.7 * max(len(cols), 4), 1.0 + 0.45 * max(len(rows), 4)),
        layout="constrained",
    )
    ax = fig.subplots()
    image = ax.imshow(
        data, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(rows) * len(cols) <= 400:
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v is not None:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=value_label)
    return fig


def loss_figure(series: list[Series], *, title: str = "Training loss") -> Figure:
    """Training loss against step, one line per training run (markers on about 12 points of
    each, so overlapping curves stay apart without hiding the curve under markers)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    names = [s.name for s in series]
    for s in series:
        every = max(1, len(s.x) // 12)
        ax.plot(s.x, s.y, label=s.name, markersize=4, markevery=every, **_style(names, s.name))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write a PNG atomically; no timestamp metadata, so equal data gives equal bytes."""
    p = Path(path)
    with atomic_write(p, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, metadata={"Software": None})
    return p
