"""The Markdown report: a pull request comment or a CI step summary, within GitHub's size limit."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.gate.diff import MISSING, CaseDiff, Diff
from harness.records import (
    IMPROVED,
    PASSED,
    REGRESSED,
)
from harness.report.tables import (
    ACCEPT_HINT,
    acceptance_label,
    agreement_label,
    by_pipeline,
    clip,
    counters_label,
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


def md_cell(text: Any) -> str:
    """A table cell: pipes escaped (case ids contain them), newlines as <br>."""
    return str(text).replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


_MD_HEADERS = ("group", "variant", "speedup (baseline)", "items/min", "tok/s", "peak MiB", "quality (vs baseline)",
               "agreement", "counters vs baseline", "verdict", "reason")


_MD_NUMERIC = {"items/min", "tok/s", "peak MiB", "agreement"}


_MD_REASON_MAX = 160


def _joined(parts: tuple[str, str | None]) -> str:
    main, extra = parts
    return main if extra is None else f"{main} ({extra})"


def _md_row(row: pd.Series) -> list[str]:
    status = row["verdict"]
    speedup, quality = _joined(speedup_parts(row)), _joined(quality_parts(row))
    variant = row["variant"] + (" *(dominated)*" if row["dominated by"] else "")
    reason = "" if status == PASSED else clip(row["reason"], _MD_REASON_MAX)
    return [
        row["group"],
        variant,
        speedup,
        number_label(row["items/min"]),
        _joined((number_label(row["tokens/s"]), row["roofline"] or None)),
        number_label(row["peak memory (MiB)"]),
        quality,
        agreement_label(row["agreement"]),
        f"`{row['counters']}`" if row["counters"] else "",
        f"**{status}**" if status in (REGRESSED, MISSING) else status,
        reason,
    ]


def _md_table(frame: pd.DataFrame) -> list[str]:
    lines = [
        "| " + " | ".join(_MD_HEADERS) + " |",
        "| " + " | ".join("---:" if h in _MD_NUMERIC else "---" for h in _MD_HEADERS) + " |",
    ]
    lines += ["| " + " | ".join(md_cell(v) for v in _md_row(row)) + " |" for _, row in frame.iterrows()]
    return lines


def _md_case_list(title: str, cases: list[CaseDiff], describe, after: str = "") -> list[str]:
    if not cases:
        return []
    lines = [f"### {title}", ""]
    for case in cases:
        lines += [f"- `{case.case_id}`: {message}" for message in describe(case)]
    return lines + ([after] if after else []) + [""]


def markdown_report(diff: Diff) -> str:
    """Headline counts and what was compared; regressions, improvements (the ratchet), missing cases and
    re-accepted baselines with their reasons; one table per pipeline; every finding folded per case."""
    lines = [f"## Benchmark: {headline(diff)}", "", source_line(diff), ""]
    lines += [f"> {note}" for note in diff.notes] + ([""] if diff.notes else [])
    lines += _md_case_list("Regressions", diff.of(REGRESSED), findings_by_message(REGRESSED))
    lines += _md_case_list("Improved beyond the baseline", diff.of(IMPROVED), findings_by_message(IMPROVED),
                           f"These baselines are stale: accept the new figures with `{ACCEPT_HINT}`.")
    lines += _md_case_list("Missing from this run", diff.of(MISSING), lambda c: [headline_finding(c)])
    reaccepted = [case for case in diff.cases if case.reaccepted is not None]
    lines += _md_case_list("Baseline changes accepted", reaccepted, lambda c: [acceptance_label(c.reaccepted)])
    frame = summary_frame(diff)
    tables = _md_tables(frame)
    if len("\n".join(lines + tables)) > MARKDOWN_LIMIT:  # a large run: the rows that passed make way
        passed = int((frame["verdict"] == PASSED).sum())
        tables = [f"{passed} passed cases are left out of these tables (all of them are in the HTML and JSON "
                  "reports).", ""] + _md_tables(frame[frame["verdict"] != PASSED])
    head = _within(lines + tables, MARKDOWN_LIMIT - 200)
    return head + "\n" + _md_details_within(diff, MARKDOWN_LIMIT - len(head) - 1)


def _md_tables(frame: pd.DataFrame) -> list[str]:
    lines = []
    for pipeline, rows in by_pipeline(frame).items():
        lines += [f"### {pipeline}", ""] + _md_table(rows) + [""]
    return lines


def _within(lines: list[str], room: int) -> str:
    """Whole lines up to `room` characters, then a line saying how many were left out."""
    kept, used = [], 0
    for line in lines:
        if used + len(line) + 1 > room:
            kept.append(f"... {len(lines) - len(kept)} more lines are in the HTML and JSON reports.")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


# GitHub refuses a comment over 65,536 characters; keep a margin for what a workflow adds around the report.
MARKDOWN_LIMIT = 60_000


def _md_details_within(diff: Diff, room: int) -> str:
    """The folded details: with every finding when they fit the comment limit, else with the findings that
    did not pass, else a pointer to the HTML and JSON reports, which hold everything."""
    if not diff.cases:
        return ""
    for passed_findings in (True, False):
        lines = ["<details><summary>Details per case</summary>", ""]
        for case in diff.cases:
            lines += _md_details(case, passed_findings)
        text = "\n".join(lines + ["</details>", ""])
        if len(text) <= room:
            return text
    return ("Details per case left out to keep this report under GitHub's comment limit: every finding is in the "
            "HTML and JSON reports.\n")


def _md_details(case: CaseDiff, passed_findings: bool = True) -> list[str]:
    record = case.current or case.baseline
    speed = record.speed
    side = "" if case.current else " (baseline)"
    lines = [
        f"#### `{case.case_id}` — {case.status}",
        "",
        f"- variant: {', '.join(f'{k}={v}' for k, v in record.variant.items()) or '(none)'}",
        f"- timing{side}: {timing_label(record)}",
        f"- peak memory{side}: {speed.peak_memory_bytes / 2**20:,.1f} MiB ({speed.memory_kind})",
        f"- quality{side}: {', '.join(f'{k} {v:.4g}' for k, v in record.output.quality.items())} "
        f"over {len(record.output.item_ids)} items",
        f"- counters{side}: {counters_label(record)}",
    ]
    if record.fidelity:
        lines.append(f"- fidelity classes: {', '.join(f'{k}: {v}' for k, v in record.fidelity.items())}")
    if case.accepted is not None:
        lines.append(f"- baseline accepted: {acceptance_label(case.accepted)}")
    findings = [f for f in (case.verdict.findings if case.verdict else ()) if passed_findings or f.status != PASSED]
    if findings:
        lines.append("- findings:")
        lines += [f"  - {f.status} ({f.metric} vs {f.against}): {f.message}" for f in findings]
    if len(findings) < len(case.verdict.findings if case.verdict else ()):
        lines.append(f"- {len(case.verdict.findings) - len(findings)} passed findings: see the HTML or JSON report")
    lines.append("")
    return lines

