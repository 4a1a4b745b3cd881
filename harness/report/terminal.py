"""The terminal table of a `Diff`: fixed-width text for pytest's terminal summary and `harness diff`."""

from __future__ import annotations

import pandas as pd

from harness.gate.diff import CaseDiff, Diff
from harness.records import PASSED
from harness.report.tables import (
    agreement_label,
    clip,
    headline,
    number_label,
    summary_frame,
)

TERMINAL_WIDTH = 120
CASE_COLUMN_MAX = 40

_TERMINAL_COLUMNS = (  # (header, frame column, right-aligned)
    ("case", "case", False),
    ("speedup", "speedup", False),
    ("items/min", "items/min", True),
    ("tok/s", "tokens/s", True),
    ("peak MiB", "peak memory (MiB)", True),
    ("quality", "quality", False),
    ("agree", "agreement", True),
    ("verdict", "verdict", False),
)


def _terminal_cell(case: CaseDiff, row: pd.Series, column: str, shared_metric: str | None) -> str:
    record = case.current or case.baseline
    if column == "quality" and shared_metric is not None:
        return f"{record.quality:.3f}"
    if column == "agreement":
        return agreement_label(row[column])
    if column in ("items/min", "tokens/s", "peak memory (MiB)"):
        return number_label(row[column])
    return str(row[column])


def terminal_table(diff: Diff) -> str:
    """Fixed-width text for the pytest terminal summary, readable at 120 columns.

    One line per case (the case id names the variant); when all cases share a quality metric the header
    names it and the cells hold its values; a case id longer than 40 characters gets a line of
    its own above its numbers. Counters form the last column when every row's fit in 120 columns, else each
    case gets an indented `counters:` line. The reason of any non-passed case follows on an indented `->`
    line, in full, and the headline counts close the table."""
    frame = summary_frame(diff)
    metrics = {(c.current or c.baseline).quality_metric for c in diff.cases}
    shared_metric = metrics.pop() if len(metrics) == 1 else None  # then the header names it, cells hold values
    cells = [[_terminal_cell(case, row, column, shared_metric) for _, column, _ in _TERMINAL_COLUMNS]
             for case, (_, row) in zip(diff.cases, frame.iterrows())]
    headers = [shared_metric if column == "quality" and shared_metric else h for h, column, _ in _TERMINAL_COLUMNS]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    widths[0] = min(widths[0], CASE_COLUMN_MAX)
    used = sum(widths) + 2 * len(widths)
    counters_inline = all(used + len(c) <= TERMINAL_WIDTH for c in frame["counters"])

    def render(values: list[str], counters: str | None) -> str:
        parts = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, (_, _, right) in zip(values, widths, _TERMINAL_COLUMNS)
        ]
        return ("  ".join(parts) + ("  " + counters if counters is not None else "")).rstrip()

    lines = [render(headers, "counters" if counters_inline else None)]
    lines.append("-" * min(len(lines[0]), TERMINAL_WIDTH))
    for (_, row), values in zip(frame.iterrows(), cells):
        if len(values[0]) > widths[0]:
            lines.append(values[0])
            values = ["", *values[1:]]
        lines.append(render(values, row["counters"] if counters_inline else None))
        if not counters_inline and row["counters"] not in ("", "unchanged"):
            lines.append(clip(f"    counters: {row['counters']}", TERMINAL_WIDTH))
        if row["reason"] and row["verdict"] != PASSED:
            lines.append(f"    -> {row['reason']}")
    lines += [f"note: {note}" for note in diff.notes]
    lines.append(headline(diff))
    return "\n".join(lines)
