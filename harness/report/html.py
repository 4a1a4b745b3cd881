"""A self-contained HTML report of a `Diff`: one file, inline CSS and inline SVG plots, nothing fetched at view time.

The page reads top down: a headline banner coloured by the worst status, what was compared, notes, the cases
that need attention (regressions, improvements that leave the baseline stale, missing cases, re-accepted
baselines), then one section per pipeline: the speed-vs-quality plane with a numbered key, speedup bars with
confidence intervals, per-case round timings, the table, and every finding folded per case.

Nothing here judges: the rows come from `tables.summary_frame`, the Pareto front from `tables.dominated_by`.
Every text taken from records is escaped: case ids hold `|`, model outputs and messages may hold `<`.
"""

from __future__ import annotations

import re
from html import escape

import pandas as pd

from harness.gate.diff import MISSING, CaseDiff, Diff
from harness.records import IMPROVED, NEW, PASSED, REGRESSED, CaseRecord
from harness.report import plots
from harness.report.plots import STATUS_COLOURS, PlotCase
from harness.report.tables import (
    ACCEPT_HINT,
    acceptance_label,
    agreement_label,
    counters_label,
    dominated_by,
    findings_by_message,
    headline,
    headline_finding,
    number_label,
    quality_parts,
    source_line,
    speedup_parts,
    summary_frame,
    timing_label,
)

# The banner takes the colour of the worst status present, worst first.
_SEVERITY = (REGRESSED, MISSING, IMPROVED, NEW, PASSED)

_TABLE_HEADERS = ("#", "group", "variant", "speedup (was)", "items/min", "tok/s", "peak MiB", "quality (delta)",
                  "agreement", "counters vs baseline", "verdict", "reason")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; color: #222;
       max-width: 1280px; margin: 0 auto; padding: 16px 24px; background: #fff; }
h1 { font-size: 22px; margin: 0; }
h2 { font-size: 19px; border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; background: #f3f3f3;
       padding: 0 3px; border-radius: 3px; }
.compared code { overflow-wrap: anywhere; }
.banner { color: #fff; padding: 14px 18px; border-radius: 6px; }
.compared { color: #444; margin: 10px 0; }
.notes { background: #fff8e1; border-left: 4px solid #e69f00; padding: 6px 12px; }
ul.cases li { margin: 3px 0; }
.hint { font-style: italic; }
figure { margin: 12px 0; }
figure svg { max-width: 100%; height: auto; display: block; }
figcaption, .caption { color: #555; font-size: 12px; margin-top: 4px; }
.plane-row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.plane-row figure { flex: 0 1 auto; max-width: 100%; margin: 0; }
.plane-row .key-column { flex: 1 1 380px; }
.nw { white-space: nowrap; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; vertical-align: top; text-align: left; }
th { background: #f5f5f5; }
td.num { text-align: right; }
td.variant { min-width: 22em; }
td.reason { min-width: 20em; }
table.cases code { white-space: normal; }
table.key { font-size: 12px; width: 100%; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; }
.verdict { color: #fff; font-weight: bold; white-space: nowrap; }
.dominated { color: #8a4b00; font-size: 11px; }
details { border: 1px solid #e3e3e3; border-radius: 4px; margin: 4px 0; padding: 4px 8px; }
details summary { cursor: pointer; }
details dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 6px 0; }
details dt { color: #555; }
details dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
"""


# --- small pieces -------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _breakable(value: object) -> str:
    """Escaped text that may wrap after its commas and pipes: variant labels and case ids are single long words,
    and left whole they would widen the table past the page."""
    return re.sub(r"([,|])", r"\1<wbr>", _text(value))


def _with_code(text: str) -> str:
    """Escaped text whose `backticked` parts (as tables' Markdown lines write them) become <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", _text(text))


def _status_badge(status: str) -> str:
    return f'<span class="verdict" style="background:{STATUS_COLOURS[status]};padding:0 5px;border-radius:3px">' \
           f"{_text(status)}</span>"


def _swatch(status: str, hollow: bool = False) -> str:
    colour = STATUS_COLOURS[status]
    fill = "#fff" if hollow else colour
    return f'<span class="swatch" style="background:{fill};border:2px solid {colour}"></span>'


def _worst_status(diff: Diff) -> str:
    counts = diff.counts()
    return next((status for status in _SEVERITY if counts[status]), PASSED)


# --- the top of the page --------------------------------------------------------------------------------------


def _banner(diff: Diff) -> str:
    colour = STATUS_COLOURS[_worst_status(diff)]
    return f'<header class="banner" style="background:{colour}"><h1>Benchmark: {_text(headline(diff))}</h1></header>'


def _notes(diff: Diff) -> str:
    if not diff.notes:
        return ""
    return '<div class="notes"><ul>' + "".join(f"<li>{_text(note)}</li>" for note in diff.notes) + "</ul></div>"


def _case_list(title: str, cases: list[CaseDiff], describe, after: str = "") -> str:
    """A titled list of cases, one item per message `describe(case)` gives; empty without cases."""
    if not cases:
        return ""
    items = "".join(f"<li><code>{_text(case.case_id)}</code>: {_text(message)}</li>"
                    for case in cases for message in describe(case))
    return f'<h3>{_text(title)}</h3><ul class="cases">{items}</ul>{after}'


def _attention(diff: Diff) -> str:
    reaccepted = [case for case in diff.cases if case.reaccepted is not None]
    stale = (f'<p class="hint">These baselines are stale: accept the new figures with '
             f"<code>{_text(ACCEPT_HINT)}</code>.</p>")
    return "".join([
        _case_list("Regressions", diff.of(REGRESSED), findings_by_message(REGRESSED)),
        _case_list("Improved beyond the baseline", diff.of(IMPROVED), findings_by_message(IMPROVED), stale),
        _case_list("Missing from this run", diff.of(MISSING), lambda case: [headline_finding(case)]),
        _case_list("Baseline changes accepted", reaccepted, lambda case: [acceptance_label(case.reaccepted)]),
    ])


# --- per pipeline ------------------------------------------------------------------------------------------


def by_pipeline(diff: Diff, frame: pd.DataFrame) -> dict[str, list[tuple[CaseDiff, pd.Series]]]:
    """The cases with their frame rows, grouped by pipeline in the diff's order (the frame follows that order)."""
    grouped: dict[str, list[tuple[CaseDiff, pd.Series]]] = {}
    for case, (_, row) in zip(diff.cases, frame.iterrows()):
        grouped.setdefault(case.pipeline, []).append((case, row))
    return grouped


def _off_front(diff: Diff) -> set[str]:
    """Case ids whose current record is dominated in its group, the reference included (the plane's front
    must know whether the reference lies on it)."""
    records = [case.current for case in diff.cases if case.current is not None]
    return set(dominated_by(records, include_reference=True))


def _plot_cases(rows: list[tuple[CaseDiff, pd.Series]], off_front: set[str]) -> list[PlotCase]:
    return [
        PlotCase(number, row["variant"], row["group"], case.status, case.current, case.baseline,
                 on_front=case.case_id not in off_front)
        for number, (case, row) in enumerate(rows, start=1)
    ]


def _figure(kind: str, pipeline: str, svg: str, caption: str = "") -> str:
    caption = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="plot {kind}" data-pipeline="{_text(pipeline)}">{svg}{caption}</figure>'


def _key(plot_cases: list[PlotCase], numbers: dict[str, int], rows: list[tuple[CaseDiff, pd.Series]]) -> str:
    """The plane's key: number, variant, verdict colour, and the variant it is dominated by."""
    with_group = len({case.group for case in plot_cases}) > 1
    lines = []
    for plot_case, (case, row) in zip(plot_cases, rows):
        by = row["dominated by"]
        front = f'<span class="dominated">dominated by #{numbers[by]}</span>' if by else ""
        group = f"<td>{_text(plot_case.group)}</td>" if with_group else ""
        hollow = case.current is not None and not plot_case.on_front
        lines.append(f'<tr><td class="num">{_swatch(case.status, hollow)}{plot_case.number}</td>{group}'
                     f'<td class="variant">{_breakable(plot_case.label)}</td><td>{front}</td></tr>')
    head = "<tr><th>#</th>" + ("<th>group</th>" if with_group else "") + "<th>variant</th><th></th></tr>"
    return f'<table class="key">{head}{"".join(lines)}</table>'


def _plots(index: int, pipeline: str, plot_cases: list[PlotCase], key: str) -> str:
    figure_id = f"p{index}"
    plane = _figure("plane", pipeline, plots.speed_quality_plane(plot_cases, f"{figure_id}-plane"))
    # The caption sits under the key, beside the plot: under the plot its long line would widen the figure.
    caption = ("Speed vs quality, one panel per group. Filled: on the Pareto front (dashed staircase); hollow: "
               "dominated by a variant at least as fast and as good; star: the session reference (1x); grey "
               "diamond: the baseline's position, joined to this run's. Colour: the verdict. Numbers: the key.")
    key_column = f'<div class="key-column">{key}<p class="caption">{caption}</p></div>'
    parts = [f'<div class="plane-row">{plane}{key_column}</div>']
    bars = plots.speedup_bars(plot_cases, f"{figure_id}-bars")
    if bars is not None:
        parts.append(_figure("bars", pipeline, bars, "Speedup over the session reference with its 95% confidence "
                             "interval: this run (coloured by verdict) above the baseline (grey)."))
    parts.append(_figure("timings", pipeline, plots.round_timings(plot_cases, f"{figure_id}-timings"),
                         "Wall time of each timed round: this run (coloured by verdict) above the baseline (grey)."))
    return "".join(parts)


def _nowrap_parts(parts: tuple[str, str | None]) -> str:
    """The cell and its `(was ...)` / `(delta)` part, each kept on one line."""
    main, extra = parts
    cell = f'<span class="nw">{_text(main)}</span>'
    return cell if extra is None else cell + f' <span class="nw">({_text(extra)})</span>'


def _cells(number: int, row: pd.Series, variants: dict[str, str], numbers: dict[str, int]) -> str:
    """One table row, with the Markdown table's columns (`tables._md_row`) plus the key's number."""
    status = row["verdict"]
    speedup, quality = _nowrap_parts(speedup_parts(row)), _nowrap_parts(quality_parts(row))
    variant = _breakable(row["variant"])
    if row["dominated by"]:
        by = row["dominated by"]
        variant += f'<br><span class="dominated">dominated by #{numbers[by]} {_breakable(variants[by])}</span>'
    counters = f"<code>{_text(row['counters'])}</code>" if row["counters"] else ""
    reason = "" if status == PASSED else _breakable(row["reason"])
    cells = [
        f'<td class="num">{number}</td>',
        f"<td>{_text(row['group'])}</td>",
        f'<td class="variant">{variant}</td>',
        f'<td class="num">{speedup}</td>',
        f'<td class="num">{_text(number_label(row["items/min"]))}</td>',
        f'<td class="num">{_text(number_label(row["tokens/s"]))}{"<br>" + _text(row["roofline"]) if row["roofline"] else ""}</td>',
        f'<td class="num">{_text(number_label(row["peak memory (MiB)"]))}</td>',
        f"<td>{quality}</td>",
        f'<td class="num">{_text(agreement_label(row["agreement"]))}</td>',
        f"<td>{counters}</td>",
        f'<td style="background:{STATUS_COLOURS[status]}22">{_status_badge(status)}</td>',  # a tint, and the badge
        f'<td class="reason">{reason}</td>',
    ]
    return f'<tr data-case="{_text(row["case"])}">{"".join(cells)}</tr>'


def _table(rows: list[tuple[CaseDiff, pd.Series]], variants: dict[str, str], numbers: dict[str, int]) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in _TABLE_HEADERS)
    body = "".join(_cells(numbers[case.case_id], row, variants, numbers) for case, row in rows)
    table = f'<table class="cases"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="table-wrap">{table}</div>'


# --- details per case -----------------------------------------------------------------------------------------


def _rounds(record: CaseRecord) -> str:
    speed = record.speed
    return f"{timing_label(record)}; peak memory {speed.peak_memory_bytes / 2**20:,.1f} MiB ({speed.memory_kind})"


def _facts(case: CaseDiff) -> list[tuple[str, str]]:
    """(label, plain text) pairs describing a case, this run's side first."""
    record = case.current or case.baseline
    facts = [("variant", ", ".join(f"{k}={v}" for k, v in record.variant.items()) or "(none)")]
    for side, r in (("this run", case.current), ("baseline", case.baseline)):
        if r is None:
            continue
        quality = ", ".join(f"{k} {v:.4g}" for k, v in r.output.quality.items())
        facts += [(f"timing ({side})", _rounds(r)),
                  (f"quality ({side})", f"{quality} over {len(r.output.item_ids)} items"),
                  (f"counters ({side})", counters_label(r))]
    if record.fidelity:
        facts.append(("fidelity classes", ", ".join(f"{k}: {v}" for k, v in record.fidelity.items())))
    if case.accepted is not None:
        facts.append(("baseline accepted", acceptance_label(case.accepted)))
    if case.reaccepted is not None:
        facts.append(("re-accepted", acceptance_label(case.reaccepted)))
    return facts


def _findings(case: CaseDiff) -> str:
    if case.verdict is None or not case.verdict.findings:
        return ""
    head = "<tr><th>status</th><th>metric</th><th>against</th><th>message</th></tr>"
    rows = "".join(f"<tr><td>{_status_badge(f.status)}</td><td>{_text(f.metric)}</td><td>{_breakable(f.against)}</td>"
                   f"<td>{_breakable(f.message)}</td></tr>" for f in case.verdict.findings)
    return f'<table class="findings">{head}{rows}</table>'


def _details(case: CaseDiff, number: int) -> str:
    facts = "".join(f"<dt>{_text(label)}</dt><dd>{_text(value)}</dd>" for label, value in _facts(case))
    return (f'<details data-case="{_text(case.case_id)}"><summary>#{number} {_status_badge(case.status)} '
            f"<code>{_text(case.case_id)}</code></summary><dl>{facts}</dl>{_findings(case)}</details>")


# --- the page -----------------------------------------------------------------------------------------------


def _pipeline_section(index: int, pipeline: str, rows: list[tuple[CaseDiff, pd.Series]], off_front: set[str]) -> str:
    numbers = {case.case_id: number for number, (case, _) in enumerate(rows, start=1)}
    variants = {case.case_id: row["variant"] for case, row in rows}
    plot_cases = _plot_cases(rows, off_front)
    details = "".join(_details(case, numbers[case.case_id]) for case, _ in rows)
    return (f'<section class="pipeline" id="pipeline-{index}"><h2>{_text(pipeline)}</h2>'
            f"{_plots(index, pipeline, plot_cases, _key(plot_cases, numbers, rows))}"
            f"<h3>Cases</h3>{_table(rows, variants, numbers)}"
            f"<h3>Details per case</h3>{details}</section>")


def html_report(diff: Diff) -> str:
    """The whole page as one string: write it to a `.html` file; it fetches nothing when opened."""
    plots.require_matplotlib()  # fail before any work, with the install hint
    frame = summary_frame(diff)
    off_front = _off_front(diff)
    sections = "".join(_pipeline_section(index, pipeline, rows, off_front)
                       for index, (pipeline, rows) in enumerate(by_pipeline(diff, frame).items()))
    body = "".join([
        _banner(diff),
        f'<p class="compared">{_with_code(source_line(diff))}</p>',
        _notes(diff),
        _attention(diff),
        sections,
    ])
    title = _text(f"Benchmark: {headline(diff)}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


__all__ = ["html_report"]
