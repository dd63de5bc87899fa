"""Figures of the report, sized for one column of a paper (3.4 in wide, 7-8 pt text).

Built on ``matplotlib.figure.Figure`` with an Agg canvas, never pyplot, so no global figure
state is touched; rcParams are set only inside ``rc_context`` while a figure is built and saved.
Files are byte-stable across reruns: the PDF and PNG metadata that carry dates and versions are
dropped.
"""

from __future__ import annotations

import io
import logging
import math
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, cast

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.transforms import Bbox

from bench.records import write_atomic

WIDTH_IN = 3.4
DPI = 300
# Okabe-Ito without its yellow, which is too faint on white; markers tell apart what colours repeat.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
PUBLISHED_COLOUR = "#D55E00"
STYLE: dict[str, Any] = {
    "font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.frameon": False, "axes.linewidth": 0.6, "lines.linewidth": 1.0,
    "lines.markersize": 4, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "axes.grid": True,
    "grid.linewidth": 0.4, "grid.alpha": 0.35, "axes.axisbelow": True, "errorbar.capsize": 1.5,
    "pdf.fonttype": 42,  # TrueType, not Type 3: journals ask for it and text stays selectable
    "svg.hashsalt": "bench",
}
P = ParamSpec("P")


class NothingToShow(Exception):
    """A figure has no data worth drawing; the message says why."""


def styled(build: Callable[P, Figure]) -> Callable[P, Figure]:
    @wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context(cast(Any, STYLE)):
            return build(*args, **kwargs)
    return wrapper


Style = tuple[str, str, str]  # colour, marker, line style


def algorithm_styles(names: Sequence[str]) -> dict[str, Style]:
    """A (colour, marker, line style) per algorithm; once the colours run out they come back with
    another marker and a dashed, then dotted, line."""
    return {name: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)], ("-", "--", ":")[i // len(PALETTE) % 3])
            for i, name in enumerate(names)}


def _plain(value: float, _: Any = None) -> str:
    return f"{value / 1000:g}k" if value >= 10_000 else f"{value:g}"


def plain_log(axis: Any, low: float, high: float) -> None:
    """Log ticks labelled 0.2, 1, 5, 20k rather than 2x10^-1: easier to read at 7 pt."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(high, low * 1.0001) / low) if low > 0 else 0
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


def metric_label(metric: str, prefix: str = "") -> str:
    label = {"accuracy": "accuracy (%)", "mse": "MSE"}.get(metric, metric)
    return f"{prefix} {label}".strip()


def _figure(height_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # text extents for label placement need a renderer
    engine = fig.get_layout_engine()
    assert isinstance(engine, ConstrainedLayoutEngine)
    engine.set(w_pad=0.02, h_pad=0.02)
    return fig


def _title(fig: Figure, title: str) -> None:
    fig.suptitle("\n".join(textwrap.wrap(title, 58, break_on_hyphens=False)), fontsize=8)


def _spread(values: Sequence[float]) -> float:
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return max(positive) / min(positive) if positive else 1.0


@styled
def metric_figure(title: str, rows: list[dict[str, Any]], metric: str) -> Figure:
    """The metric per algorithm, best at the top, with its 95% interval; the seed means as small
    dots and the published value, where there is one, as a distinct marker.

    ``rows``: dicts with algorithm, mean, ci95, seed_means (list), published, published_ci95.
    """
    if not rows:
        raise NothingToShow("no algorithm in the table")
    fig = _figure(0.9 + 0.17 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.errorbar([r["mean"] for r in rows], y, xerr=[r["ci95"] for r in rows], fmt="o", color=PALETTE[0],
                markersize=3.5, elinewidth=0.9, zorder=3)
    handles = [Line2D([], [], color=PALETTE[0], marker="o", markersize=3.5, label="ours: mean ± 95% CI")]
    seeds = [(m, yi) for r, yi in zip(rows, y, strict=True) for m in r["seed_means"] if len(r["seed_means"]) > 1]
    if seeds:
        ax.scatter([m for m, _ in seeds], [yi - 0.22 for _, yi in seeds], s=5, marker="|", color="0.45",
                   linewidths=0.6, zorder=2)
        handles.append(Line2D([], [], color="0.45", marker="|", linestyle="none", label="seed means"))
    published = [(r, yi) for r, yi in zip(rows, y, strict=True) if r.get("published") is not None]
    if published:
        ax.errorbar([r["published"] for r, _ in published], [yi + 0.22 for _, yi in published],
                    xerr=[r.get("published_ci95") or 0.0 for r, _ in published], fmt="D", color=PUBLISHED_COLOUR,
                    markerfacecolor="white", markersize=3, elinewidth=0.7, zorder=3)
        handles.append(Line2D([], [], color=PUBLISHED_COLOUR, marker="D", markerfacecolor="white", markersize=3,
                              linestyle="none", label="published"))
    ax.set_yticks(y, [r["algorithm"] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="y", visible=False)
    values = [r["mean"] for r in rows] + [r["published"] for r, _ in published]
    if metric == "mse" and _spread(values) > 30:
        ax.set_xscale("log")
        plain_log(ax.xaxis, min(values), max(values))
    ax.set_xlabel(metric_label(metric))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), handlelength=1.2, columnspacing=1.0)
    _title(fig, title)
    return fig


def pareto_front(x: Sequence[float], score: Sequence[float]) -> list[bool]:
    """Whether each point is on the front, both coordinates higher-is-better."""
    return [not any(xj >= xi and sj >= si and (xj > xi or sj > si) for xj, sj in zip(x, score, strict=True))
            for xi, si in zip(x, score, strict=True)]


@styled
def pareto_figure(title: str, rows: list[dict[str, Any]], metric: str, lower_is_better: bool,
                  styles: dict[str, Style]) -> Figure:
    """The metric against meta-train throughput (log axis); filled markers and the dashed line are
    the Pareto front (faster and better together), hollow markers are dominated."""
    rows = [r for r in rows if r["throughput"] > 0 and math.isfinite(r["throughput"]) and math.isfinite(r["mean"])]
    if not rows:
        raise NothingToShow("no record with a meta-train throughput")
    x = [r["throughput"] for r in rows]
    y = [r["mean"] for r in rows]
    front = pareto_front(x, [-v if lower_is_better else v for v in y])
    fig = _figure(2.7)
    ax = fig.add_subplot()
    on_front = sorted((xi, yi) for xi, yi, f in zip(x, y, front, strict=True) if f)
    ax.plot(*zip(*on_front, strict=True), linestyle="--", color="0.5", linewidth=0.8, zorder=1)
    for row, is_front in zip(rows, front, strict=True):
        colour, marker, _ = styles[row["algorithm"]]
        ax.plot(row["throughput"], row["mean"], marker=marker, color=colour, markerfacecolor=colour if is_front else "white",
                markeredgewidth=0.9, linestyle="none", zorder=3)
    ax.set_xscale("log")
    plain_log(ax.xaxis, min(x), max(x))
    if metric == "mse" and _spread(y) > 30:
        ax.set_yscale("log")
        plain_log(ax.yaxis, min(y), max(y))
    ax.margins(x=0.25, y=0.12)  # room for the labels of points at the edges
    ax.set_xlabel("meta-train tasks/s")
    ax.set_ylabel(metric_label(metric))
    handles = []
    if len(on_front) > 1:
        handles.append(Line2D([], [], linestyle="--", color="0.5", marker="o", markerfacecolor="0.5",
                              markeredgecolor="0.5", markersize=3, label="Pareto front"))
    if not all(front):
        handles.append(Line2D([], [], linestyle="none", color="0.5", marker="o", markerfacecolor="white", markersize=3,
                              label="dominated"))
    if handles:
        better = "↓ better" if lower_is_better else "↑ better"
        fig.legend(handles=handles, loc="outside lower center", ncols=2, title=f"{better}, → faster", title_fontsize=7)
    _title(fig, title)
    order = sorted(range(len(rows)), key=lambda i: (not front[i], rows[i].get("rank", i)))
    place_labels(fig, ax, x, y, [r["algorithm"] for r in rows], order)
    return fig


def place_labels(fig: Figure, ax: Any, x: Sequence[float], y: Sequence[float], names: Sequence[str],
                 order: Sequence[int]) -> None:
    """Greedy placement: each label takes the first of 48 spots around its point (near first,
    then farther with a leader line) that overlaps no point, no placed label and stays inside
    the axes; if none is free, the spot overlapping least."""
    fig.draw_without_rendering()  # runs the layout, so display coordinates are final
    renderer = cast(FigureCanvasAgg, fig.canvas).get_renderer()
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([x, y]))
    radius = 3.5 * fig.dpi / 72
    obstacles = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius) for px, py in points]
    placed: list[Bbox] = []
    spots = [(distance, angle) for distance in (3.5, 10, 17, 26)
             for angle in (0, 180, 90, 270, 30, -30, 150, -150, 60, -60, 120, -120)]

    def cost(box: Bbox) -> float:
        inside = Bbox.intersection(box, frame)
        outside = box.width * box.height - (inside.width * inside.height if inside else 0.0)
        overlap = sum(b.width * b.height for other in (*placed, *obstacles) if (b := Bbox.intersection(box, other)))
        return overlap + 4 * outside

    for i in order:
        best = None
        for distance, angle in spots:
            dx, dy = distance * math.cos(math.radians(angle)), distance * math.sin(math.radians(angle))
            ha = "left" if dx > 0.5 else "right" if dx < -0.5 else "center"
            va = "bottom" if dy > 0.5 else "top" if dy < -0.5 else "center"
            label = ax.annotate(names[i], (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                fontsize=6.5, annotation_clip=False, zorder=4,
                                arrowprops=({"arrowstyle": "-", "color": "0.45", "linewidth": 0.5, "shrinkA": 0,
                                             "shrinkB": 2.5} if distance > 4 else None))
            label.set_in_layout(False)
            box = label.get_window_extent(renderer)
            score = cost(box)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, label, box)
            else:
                label.remove()
            if score == 0:
                break
        assert best is not None
        placed.append(best[2])


def _mean_curve(runs: list[list[dict[str, Any]]]) -> tuple[list[float], list[float], list[float]]:
    """Iterations, mean wall time and mean validation metric over the seeds at the checkpoints
    every seed validated at."""
    by_seed = [{p["iteration"]: p for p in run if p.get("val_metric") is not None} for run in runs]
    common = sorted(set.intersection(*(set(points) for points in by_seed))) if by_seed else []
    return (common, [float(np.mean([s[i]["wall_time_s"] for s in by_seed])) for i in common],
            [float(np.mean([s[i]["val_metric"] for s in by_seed])) for i in common])


@styled
def curves_figure(title: str, curves: dict[str, list[list[dict[str, Any]]]], metric: str,
                  styles: dict[str, Style]) -> Figure:
    """Validation metric against meta-train iterations (top) and wall time (bottom): the mean over
    seeds with markers, each seed as a thin light line."""
    curves = {a: [[p for p in run if p.get("val_metric") is not None] for run in runs] for a, runs in curves.items()}
    curves = {a: [run for run in runs if run] for a, runs in curves.items()}
    curves = {a: runs for a, runs in curves.items() if runs}
    if not curves:
        raise NothingToShow("no record has a validation curve")
    rows = math.ceil(len(curves) / 3)
    fig = _figure(3.6 + 0.13 * rows)
    by_iteration, by_time = fig.subplots(2, 1, sharey=True)
    values = []
    for algorithm, runs in curves.items():
        colour, marker, linestyle = styles[algorithm]
        for run in runs if len(runs) > 1 else []:
            for ax, key in ((by_iteration, "iteration"), (by_time, "wall_time_s")):
                ax.plot([p[key] for p in run], [p["val_metric"] for p in run], color=colour, alpha=0.3, linewidth=0.5)
        iterations, times, mean = _mean_curve(runs)
        values += mean
        for ax, xs in ((by_iteration, iterations), (by_time, times)):
            ax.plot(xs, mean, color=colour, marker=marker, linestyle=linestyle, markersize=2.5, linewidth=0.9,
                    label=algorithm)
    if metric == "mse" and _spread(values) > 10:
        by_iteration.set_yscale("log")  # shared with the wall-time panel
        plain_log(by_iteration.yaxis, min(values), max(values))
    times = [p["wall_time_s"] for runs in curves.values() for run in runs for p in run]
    if _spread(times) > 30:
        by_time.set_xscale("log")
        plain_log(by_time.xaxis, min(times), max(times))
    from matplotlib.ticker import FuncFormatter

    by_iteration.xaxis.set_major_formatter(FuncFormatter(_plain))  # 70k, not 70000
    by_iteration.set_xlabel("meta-train iterations")
    by_time.set_xlabel("wall time (s)")
    for ax in (by_iteration, by_time):
        ax.set_ylabel(metric_label(metric, "validation"))
    fig.legend(*by_iteration.get_legend_handles_labels(), loc="outside lower center", ncols=3, handlelength=1.6,
               columnspacing=0.8)
    _title(fig, title)
    return fig


@styled
def shots_figure(title: str, points: dict[str, list[tuple[int, float, float]]], metric: str,
                 styles: dict[str, Style]) -> Figure:
    """The metric against the number of shots, one line per algorithm with 95% intervals; the
    algorithms are dodged sideways a little so their intervals do not hide each other."""
    shots = sorted({s for line in points.values() for s, _, _ in line})
    if len(shots) < 2:
        raise NothingToShow(f"only {len(shots)} shot value")
    rows = math.ceil(len(points) / 3)
    fig = _figure(2.5 + 0.13 * rows)
    ax = fig.add_subplot()
    ax.set_xscale("log")  # shots grow by factors (1, 5; 5, 10, 20): equal ratios get equal room
    dodge = (shots[-1] / shots[0]) ** (0.1 / max(len(points), 1))
    for i, (algorithm, line) in enumerate(points.items()):
        colour, marker, linestyle = styles[algorithm]
        line = sorted(line)
        factor = dodge ** (i - (len(points) - 1) / 2)
        ax.errorbar([s * factor for s, _, _ in line], [m for _, m, _ in line], yerr=[c for _, _, c in line],
                    color=colour, marker=marker, linestyle=linestyle, markersize=3, linewidth=0.9, elinewidth=0.6,
                    label=algorithm)
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.minorticks_off()
    ax.set_xlim(shots[0] / dodge ** (len(points) / 2 + 2), shots[-1] * dodge ** (len(points) / 2 + 2))
    means = [m for line in points.values() for _, m, _ in line]
    if metric == "mse" and _spread(means) > 30:
        ax.set_yscale("log")
        plain_log(ax.yaxis, min(means), max(means))
    ax.set_xlabel("shots (support examples per class)" if metric == "accuracy" else "shots (support points per task)")
    ax.set_ylabel(metric_label(metric))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, handlelength=1.6, columnspacing=0.8)
    _title(fig, title)
    return fig


@contextmanager
def _saving() -> Iterator[None]:
    """The style, and fontTools quiet: it logs every font subset at INFO, which the CLI shows."""
    fonttools = logging.getLogger("fontTools")
    level = fonttools.level
    fonttools.setLevel(max(level, logging.WARNING))
    try:
        with matplotlib.rc_context(cast(Any, STYLE)):
            yield
    finally:
        fonttools.setLevel(level)


def save(fig: Figure, base: Path) -> list[Path]:
    """``base``.pdf (vector) and ``base``.png (300 dpi), without dates or versions in them."""
    written = []
    with _saving():
        for fmt, metadata in (("pdf", {"CreationDate": None, "Producer": None, "Creator": None}),
                              ("png", {"Software": None})):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
            path = base.with_name(f"{base.name}.{fmt}")
            write_atomic(path, buffer.getvalue())
            written.append(path)
    return written
