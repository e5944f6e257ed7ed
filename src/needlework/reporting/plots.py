"""Report figures as pure functions: data in, ``matplotlib.figure.Figure`` out; the caller saves.

Figures are built with ``Figure`` directly (no pyplot), so no global state or GUI backend is
involved and matplotlib is imported only when a figure is made. Every line plot draws exactly one
``Line2D`` per series (bands are ``fill_between`` patches), which the tests count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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


def _color(names: list[str], name: str) -> str:
    """The same model keeps the same colour in every panel and figure of a report."""
    palette = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9")
    return palette[names.index(name) % len(palette)]


def line_figure(
    panels: list[Panel],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    integer_x: bool = True,
    log_x: bool = False,
) -> Figure:
    """One subplot per panel, one line per series, shaded band where lo/hi are known."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("panels: expected at least one panel")
    names: list[str] = []
    for panel in panels:
        names += [s.name for s in panel.series if s.name not in names]
    fig = Figure(figsize=(5.2 * len(panels) + 0.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for s in panel.series:
            color = _color(names, s.name)
            ax.plot(s.x, s.y, marker="o", markersize=4, label=s.name, color=color)
            if s.lo and s.hi and all(v is not None for v in (*s.lo, *s.hi)):
                ax.fill_between(s.x, s.lo, s.hi, color=color, alpha=0.15, linewidth=0)
        if log_x:
            ax.set_xscale("log")
        xs = sorted({x for s in panel.series for x in s.x})
        if integer_x and 0 < len(xs) <= 25:
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
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
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
        data, vmin=vmin, vmax=vmax, cmap="RdYlGn", aspect="auto", interpolation="nearest"
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
    fig.colorbar(image, ax=ax, label="score")
    return fig


def loss_figure(series: list[Series], *, title: str = "Training loss") -> Figure:
    """Training loss against step, one line per training run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    names = [s.name for s in series]
    for s in series:
        ax.plot(s.x, s.y, label=s.name, color=_color(names, s.name))
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
