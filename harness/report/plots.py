"""The HTML report's figures, drawn with matplotlib and returned as SVG text ready to inline in the page.

Each figure is its own `matplotlib.figure.Figure` (never pyplot's global figures), saved as SVG with its text
drawn as paths, so the page fetches no font and needs no network at view time. matplotlib is optional (the
`report` extra): every builder calls `require_matplotlib`, whose error says how to install it.

Nothing here judges or ranks: statuses come from the verdicts, the Pareto front from `tables.dominated_by`
(through `PlotCase.on_front`), and positions from `tables.speed_quality_point`.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.gate.diff import MISSING
from harness.records import IMPROVED, NEW, PASSED, REGRESSED, CaseRecord
from harness.report.tables import speed_quality_point

INSTALL_HINT = 'the HTML report needs matplotlib: pip install "pytest-llm-harness[report]"'

STATUS_COLOURS = {
    REGRESSED: "#d62728",
    IMPROVED: "#e69f00",  # amber: beyond the baseline, which is now stale and wants accepting
    PASSED: "#2ca02c",
    NEW: "#7f7f7f",
    MISSING: "#9467bd",
}
BASELINE_COLOUR = "#a6a6a6"
REFERENCE_COLOUR = "#333333"

WIDE_INCHES = 8.0  # bars and timings; the page scales the SVG down to its column
PLANE_INCHES = (4.6, 3.3)  # one subplot of the plane
LABEL_WIDTH = 44  # characters per line of a row label; longer variant labels wrap at their commas
_RC = {  # applied while a figure is built and saved, then restored: no lasting change to matplotlib's state
    "svg.fonttype": "path",  # glyphs as paths: no font is needed where the page is viewed
    "svg.hashsalt": "harness",  # the same report gives the same SVG ids (they are prefixed per figure anyway)
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}  # no tool URL, no timestamp


@dataclass(frozen=True)
class PlotCase:
    """One case as the figures show it."""

    number: int  # the key's number, shared by the page's key, the plane's labels and the rows of the figures
    label: str  # the short variant label
    group: str
    status: str
    current: CaseRecord | None  # None when missing from the run: drawn from the baseline only
    baseline: CaseRecord | None
    on_front: bool  # the current record is not dominated in its group (speed and quality)


def require_matplotlib() -> Any:
    """matplotlib, or an ImportError that says how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401  (the builders need it; fail here, not halfway)
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return matplotlib


@contextmanager
def _style() -> Iterator[None]:
    matplotlib = require_matplotlib()
    with matplotlib.rc_context(_RC):
        yield


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg_text(figure: Any, figure_id: str) -> str:
    """The figure as an `<svg>` element: no XML prolog or doctype, every id prefixed with `figure_id`, since
    several SVGs share one HTML document's id space (matplotlib names glyphs alike in every figure)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{figure_id}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{figure_id}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{figure_id}-\1)", text)
    return text.strip()


def row_label(case: PlotCase, with_group: bool) -> str:
    """`#3 kv_cache=on,early_stop=on,` / `batching=dynamic`: numbered, wrapped at commas."""
    label = f"#{case.number} " + (f"{case.group}: " if with_group else "") + case.label
    # textwrap breaks at spaces: give it one after each comma, and take back those it did not break at.
    return textwrap.fill(label.replace(",", ", "), LABEL_WIDTH).replace(", ", ",")


def _rows_height(rows: int, row_inches: float) -> float:
    return 0.9 + rows * row_inches


# --- the speed-vs-quality plane -----------------------------------------------------------------------------


def _groups(cases: list[PlotCase]) -> dict[str, list[PlotCase]]:
    groups: dict[str, list[PlotCase]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    return groups


def _clusters(points: list[tuple[float, float]], y_span: float) -> list[list[int]]:
    """Indices of points that sit too close to label apart (variants with the same speed and quality, or
    nearly): each cluster gets one label naming all its numbers, in the order of their speedups."""
    clusters: list[list[int]] = []
    for index in sorted(range(len(points)), key=lambda i: points[i]):
        x, y = points[index]
        for cluster in clusters:
            x0, y0 = points[cluster[-1]]
            if abs(math.log10(x) - math.log10(x0)) < 0.06 and abs(y - y0) < 0.04 * y_span:
                cluster.append(index)
                break
        else:
            clusters.append([index])
    return clusters


def _cluster_label(numbers: list[int]) -> str:
    """`3,5,6` with a line break every five numbers, so a big cluster's label stays narrow."""
    texts = [str(n) for n in numbers]
    return "\n".join(",".join(texts[i:i + 5]) for i in range(0, len(texts), 5))


def _y_limits(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = 0.15 * (high - low) if high > low else 0.05 * max(abs(high), 1.0)
    return low - pad, high + pad


def _x_limits(values: list[float]) -> tuple[float, float]:
    low, high = min(values + [1.0]), max(values + [1.0])
    return low / 1.6, high * 1.6


def _draw_front(axes: Any, front: list[CaseRecord], x_low: float, y_low: float) -> None:
    """The Pareto front as a staircase: moving right (faster) the line steps down to the next point's quality;
    it starts at the left edge and ends at the bottom, so even a one-point front shows the region it dominates."""
    points = sorted(speed_quality_point(record) for record in front)
    if not points:
        return
    xs = [x_low] + [p[0] for p in points] + [points[-1][0]]
    ys = [points[0][1]] + [p[1] for p in points] + [y_low]
    axes.plot(xs, ys, drawstyle="steps-pre", color="#555555", linewidth=0.9, linestyle="--", zorder=1)


def _log_axis(axis: Any, unit: str) -> None:
    """Log scale ticked at 1, 2, 3, 5 per decade and labelled plainly (`2x`, `0.5 s`), not as powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}{unit}"))
    axis.set_minor_formatter(NullFormatter())


def _draw_group(axes: Any, group: str, cases: list[PlotCase]) -> None:
    present = [case for case in cases if case.current is not None]
    positions = [speed_quality_point(case.current) for case in present]
    baselines = [(case, speed_quality_point(case.baseline)) for case in cases if case.baseline is not None]
    every = positions + [point for _, point in baselines]
    if not every:
        axes.set_axis_off()
        return
    x_low, x_high = _x_limits([x for x, _ in every])
    y_low, y_high = _y_limits([y for _, y in every])
    axes.set_xscale("log")
    axes.axvline(1.0, color=REFERENCE_COLOUR, linewidth=0.6, linestyle=":", zorder=0)
    for case, (x, y) in baselines:  # where the baseline had it, joined to where it is now
        axes.scatter([x], [y], marker="D", s=22, color=BASELINE_COLOUR, zorder=2, linewidths=0)
        if case.current is not None:
            cx, cy = speed_quality_point(case.current)
            axes.plot([x, cx], [y, cy], color=BASELINE_COLOUR, linewidth=0.7, zorder=2)
    _draw_front(axes, [case.current for case in present if case.on_front], x_low, y_low)
    for case, (x, y) in zip(present, positions):
        colour = STATUS_COLOURS[case.status]
        marker = "*" if case.current.is_reference else "o"
        size = 90 if marker == "*" else 36
        face = colour if case.on_front else "white"  # hollow: dominated
        axes.scatter([x], [y], marker=marker, s=size, facecolors=face, edgecolors=colour, linewidths=1.3, zorder=3)
    # Missing cases are labelled at their baseline position: the key lists them, the plot shows where they were.
    labelled = present + [case for case in cases if case.current is None and case.baseline is not None]
    spots = positions + [speed_quality_point(case.baseline) for case in labelled[len(present):]]
    for cluster in _clusters(spots, y_high - y_low):
        x, y = spots[cluster[0]]
        axes.annotate(_cluster_label([labelled[i].number for i in cluster]), (x, y), xytext=(3, 5),
                      textcoords="offset points", fontsize=7, zorder=4)
    axes.set_xlim(x_low, x_high)
    axes.set_ylim(y_low, y_high)
    _log_axis(axes.xaxis, "x")
    metric = (present[0].current if present else cases[0].baseline).quality_metric
    axes.set_title(group)
    axes.set_xlabel("speedup vs the session reference (log)")
    axes.set_ylabel(metric)
    axes.grid(True, which="major", linewidth=0.3, alpha=0.5)


def speed_quality_plane(cases: list[PlotCase], figure_id: str) -> str:
    """One subplot per group (each group has its own reference and front): x the speedup (log, the reference
    at 1), y the quality metric; filled points on the front, hollow ones dominated, the reference a star,
    grey diamonds where the baseline had each variant."""
    with _style():
        groups = _groups(cases)
        columns = min(len(groups), 3)
        rows = math.ceil(len(groups) / columns)
        figure = _new_figure(PLANE_INCHES[0] * columns, PLANE_INCHES[1] * rows)
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for subplot, (group, members) in zip(axes, groups.items()):
            _draw_group(subplot, group, members)
        for subplot in axes[len(groups):]:
            subplot.set_axis_off()
        return svg_text(figure, figure_id)


# --- speedups with confidence intervals -----------------------------------------------------------------------


def _speedup_bar(axes: Any, y: float, record: CaseRecord, colour: str, height: float) -> None:
    """A bar from the reference (1x) to the speedup, its confidence interval as an error bar."""
    s = record.speedup
    axes.barh([y], [s.ratio - 1.0], left=1.0, height=height, color=colour, zorder=2)
    axes.errorbar([s.ratio], [y], xerr=[[s.ratio - s.low], [s.high - s.ratio]], fmt="none", ecolor="#222222",
                  elinewidth=0.8, capsize=2, zorder=3)


def speedup_bars(cases: list[PlotCase], figure_id: str) -> str | None:
    """One row per variant (not the reference): the current speedup coloured by verdict above the baseline's in
    grey, each with its confidence interval; None when the pipeline has no variant with a speedup."""
    shown = [c for c in cases if any(r is not None and r.speedup is not None for r in (c.current, c.baseline))]
    if not shown:
        return None
    with_group = len(_groups(cases)) > 1
    with _style():
        figure = _new_figure(WIDE_INCHES, _rows_height(len(shown), 0.34))
        axes = figure.subplots()
        axes.set_xscale("log")
        every = []
        for row, case in enumerate(shown):
            y = -row  # the first case on top
            if case.current is not None and case.current.speedup is not None:
                _speedup_bar(axes, y + 0.19, case.current, STATUS_COLOURS[case.status], 0.36)
                every += [case.current.speedup.low, case.current.speedup.high]
            if case.baseline is not None and case.baseline.speedup is not None:
                _speedup_bar(axes, y - 0.19, case.baseline, BASELINE_COLOUR, 0.36)
                every += [case.baseline.speedup.low, case.baseline.speedup.high]
        axes.axvline(1.0, color=REFERENCE_COLOUR, linewidth=0.6, linestyle=":")
        axes.set_yticks([-row for row in range(len(shown))], [row_label(c, with_group) for c in shown])
        axes.set_ylim(-len(shown) + 0.4, 0.6)
        axes.set_xlim(min(every + [1.0]) / 1.15, max(every + [1.0]) * 1.3)  # the bars start at the reference
        _log_axis(axes.xaxis, "x")
        axes.set_xlabel("speedup vs the session reference (log); colour: this run by verdict, grey: baseline; "
                        "whiskers: 95% CI")
        axes.grid(True, axis="x", which="major", linewidth=0.3, alpha=0.5)
        return svg_text(figure, figure_id)


# --- round timings --------------------------------------------------------------------------------------------


def round_timings(cases: list[PlotCase], figure_id: str) -> str:
    """One row per case: this run's timed rounds as dots coloured by verdict, the baseline's as grey dots
    just below (log seconds)."""
    with_group = len(_groups(cases)) > 1
    with _style():
        figure = _new_figure(WIDE_INCHES, _rows_height(len(cases), 0.3))
        axes = figure.subplots()
        axes.set_xscale("log")
        for row, case in enumerate(cases):
            y = -row
            if case.current is not None:
                seconds = case.current.speed.round_seconds
                axes.scatter(seconds, [y + 0.12] * len(seconds), s=16, color=STATUS_COLOURS[case.status], zorder=3)
            if case.baseline is not None:
                seconds = case.baseline.speed.round_seconds
                axes.scatter(seconds, [y - 0.12] * len(seconds), s=16, color=BASELINE_COLOUR, zorder=2)
        axes.set_yticks([-row for row in range(len(cases))], [row_label(c, with_group) for c in cases])
        axes.set_ylim(-len(cases) + 0.5, 0.5)
        every = [s for c in cases for r in (c.current, c.baseline) if r is not None for s in r.speed.round_seconds]
        axes.set_xlim(min(every) / 1.4, max(every) * 1.4)  # room for a tick or two even when rounds barely vary
        _log_axis(axes.xaxis, " s")
        axes.set_xlabel("seconds per timed round (log); colour: this run by verdict, grey: baseline")
        axes.grid(True, axis="x", which="major", linewidth=0.3, alpha=0.5)
        return svg_text(figure, figure_id)


__all__ = [
    "BASELINE_COLOUR",
    "INSTALL_HINT",
    "STATUS_COLOURS",
    "PlotCase",
    "require_matplotlib",
    "round_timings",
    "speed_quality_plane",
    "speedup_bars",
    "svg_text",
]
