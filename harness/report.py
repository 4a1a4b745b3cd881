"""Turning records and verdicts into tables: terminal, Markdown (PR comment / CI step summary), JSON.

Nothing here judges: statuses and messages come from `verdict`; numbers come from the records measured in
this run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from harness.baseline import scrub_paths
from harness.toggles import variant_label as toggle_variant_label
from harness.records import CaseRecord
from harness.verdict import IMPROVED, NEW, PASSED, REGRESSED, Verdict

REPORT_SCHEMA_VERSION = 1
SUPPORTED_SUFFIXES = (".md", ".json")  # .html arrives later
STATUS_ORDER = (REGRESSED, IMPROVED, PASSED, NEW)
NO_VALUE = "—"
UNJUDGED = "unjudged"
TERMINAL_WIDTH = 120

COLUMNS = (
    "case",
    "variant",
    "speedup",
    "items/min",
    "tokens/s",
    "peak memory (MiB)",
    "quality",
    "agreement",
    "counters",
    "verdict",
    "reason",
)

_COUNTER_ABBREVIATIONS = {
    "generated_tokens": "gen",
    "forward_passes": "fwd",
    "padding_tokens": "pad",
    "padded_tokens": "pad",
    "pad_tokens": "pad",
    "prefill_tokens": "prefill",
    "decode_tokens": "decode",
    "tree_nodes": "nodes",
    "queries_used": "queries",
}


# --- cell formatting ----------------------------------------------------------------------------------------


def variant_label(record: CaseRecord) -> str:
    """The toggles that differ from the reference (`kv_cache=on,topk=50`), or `reference`."""
    return toggle_variant_label(record.variant, record.reference_variant)


def _ratio(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def speedup_label(record: CaseRecord) -> str:
    """`5.1x [4.8-5.4]`; two decimals below 2x so that 1.03x is not shown as 1.0x; `—` without a speedup."""
    s = record.speedup
    if s is None:
        return NO_VALUE
    decimals = 2 if s.ratio < 2 else 1
    return f"{_ratio(s.ratio, decimals)}x [{_ratio(s.low, decimals)}-{_ratio(s.high, decimals)}]"


def quality_label(record: CaseRecord) -> str:
    return f"{record.quality_metric} {record.quality:.3f}"


def counters_label(record: CaseRecord) -> str:
    """`gen=2048 fwd=2080 pad=0`: known counters abbreviated, others by their own name, in record order.

    Quality figures beyond the gated one (e.g. each pair's score in scoring) lead the line, so a
    shift in them sits in plain view next to the work.
    """
    extra = [f"{k}={v:.4g}" for k, v in list(record.output.quality.items())[1:]]
    return " ".join(extra + [f"{_COUNTER_ABBREVIATIONS.get(k, k)}={v}" for k, v in record.output.counters.items()])


def _headline_finding(verdict: Verdict | None) -> str:
    """The message of the first finding that carries the verdict's status (else the first non-passed one)."""
    if verdict is None:
        return ""
    findings = list(verdict.findings)
    for finding in findings:
        if finding.status == verdict.status and finding.status != PASSED:
            return finding.message
    return next((f.message for f in findings if f.status != PASSED), "")


def _status(verdict: Verdict | None) -> str:
    return verdict.status if verdict is not None else UNJUDGED


def _number(value: float, decimals: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    return f"{value:,.{decimals}f}"


def _agreement(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    return f"{100 * value:.1f}%"


# --- the frame ----------------------------------------------------------------------------------------------


def summary_frame(records: list[CaseRecord], verdicts: dict[str, Verdict]) -> pd.DataFrame:
    """One row per case, in the order given. Speed and memory columns are numbers; the rest display text.
    Agreement is a share (NaN for the reference); a case without a verdict reads `unjudged`."""
    rows = []
    for record in records:
        verdict = verdicts.get(record.case_id)
        rows.append(
            {
                "case": record.case_id,
                "variant": variant_label(record),
                "speedup": speedup_label(record),
                "items/min": record.speed.items_per_minute,
                "tokens/s": record.speed.tokens_per_second,
                "peak memory (MiB)": record.speed.peak_memory_bytes / 2**20,
                "quality": quality_label(record),
                "agreement": float("nan") if record.agreement is None else float(record.agreement),
                "counters": counters_label(record),
                "verdict": _status(verdict),
                "reason": _headline_finding(verdict),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _counts(records: list[CaseRecord], verdicts: dict[str, Verdict]) -> dict[str, int]:
    counts = {status: 0 for status in (*STATUS_ORDER, UNJUDGED)}
    for record in records:
        counts[_status(verdicts.get(record.case_id))] += 1
    return counts


def headline(records: list[CaseRecord], verdicts: dict[str, Verdict]) -> str:
    """`1 regressed, 2 improved, 5 passed, 1 new` (plus `, N unjudged` when some case has no verdict)."""
    counts = _counts(records, verdicts)
    text = ", ".join(f"{counts[status]} {status}" for status in STATUS_ORDER)
    return text + (f", {counts[UNJUDGED]} {UNJUDGED}" if counts[UNJUDGED] else "")


# --- terminal -----------------------------------------------------------------------------------------------

_TERMINAL_COLUMNS = (  # (header, frame column or formatter, right-aligned)
    ("case", "case", False),
    ("speedup", "speedup", False),
    ("items/min", "items/min", True),
    ("tok/s", "tokens/s", True),
    ("peak MiB", "peak memory (MiB)", True),
    ("quality", "quality", False),
    ("agree", "agreement", True),
    ("verdict", "verdict", False),
)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


CASE_COLUMN_MAX = 40


def terminal_table(records: list[CaseRecord], verdicts: dict[str, Verdict]) -> str:
    """Fixed-width text for the pytest terminal summary, readable at 120 columns.

    One line per case (the case id names the variant); when all cases share a quality metric the header
    names it and the cells hold its values; a case id longer than 40 characters gets a line of
    its own above its numbers. Counters form the last column when every row's fit in 120 columns, else each
    case gets an indented `counters:` line. The reason of any non-passed case follows on an indented `->`
    line, in full, and the headline counts close the table."""
    frame = summary_frame(records, verdicts)
    metrics = {record.quality_metric for record in records}
    shared_metric = metrics.pop() if len(metrics) == 1 else None  # then the header names it, cells hold values
    cells: list[list[str]] = []
    for record, (_, row) in zip(records, frame.iterrows()):
        line = []
        for _, column, _ in _TERMINAL_COLUMNS:
            value = row[column]
            if column == "quality" and shared_metric is not None:
                line.append(f"{record.quality:.3f}")
            elif column == "agreement":
                line.append(_agreement(value))
            elif column in ("items/min", "tokens/s", "peak memory (MiB)"):
                line.append(_number(value))
            else:
                line.append(str(value))
        cells.append(line)
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
        if not counters_inline and row["counters"]:
            lines.append(_clip(f"    counters: {row['counters']}", TERMINAL_WIDTH))
        if row["reason"] and row["verdict"] != PASSED:
            lines.append(f"    -> {row['reason']}")
    lines.append(headline(records, verdicts))
    return "\n".join(lines)


# --- Markdown -----------------------------------------------------------------------------------------------


def _md_cell(text: Any) -> str:
    """A table cell: pipes escaped (case ids contain them), newlines as <br>."""
    return str(text).replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _md_table(frame: pd.DataFrame) -> list[str]:
    headers = [
        "case", "variant", "speedup", "items/min", "tokens/s", "peak MiB", "quality", "agreement", "counters", "verdict"
    ]
    numeric = {"items/min", "tokens/s", "peak MiB", "agreement"}
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---:" if h in numeric else "---" for h in headers) + " |",
    ]
    for _, row in frame.iterrows():
        status = row["verdict"]
        values = [
            f"`{row['case']}`",
            row["variant"],
            row["speedup"],
            _number(row["items/min"]),
            _number(row["tokens/s"]),
            _number(row["peak memory (MiB)"]),
            row["quality"],
            _agreement(row["agreement"]),
            f"`{row['counters']}`" if row["counters"] else "",
            f"**{status}**" if status == REGRESSED else status,
        ]
        lines.append("| " + " | ".join(_md_cell(v) for v in values) + " |")
    return lines


def _by_pipeline(records: list[CaseRecord]) -> dict[str, list[CaseRecord]]:
    groups: dict[str, list[CaseRecord]] = {}
    for record in records:
        groups.setdefault(record.pipeline, []).append(record)
    return groups


def markdown_report(records: list[CaseRecord], verdicts: dict[str, Verdict]) -> str:
    """Headline counts, the regressions with their full messages, one table per pipeline, and per-case details
    (every finding, timing rounds) folded into <details>."""
    lines = [f"## Benchmark: {headline(records, verdicts)}", ""]
    regressed = [r for r in records if _status(verdicts.get(r.case_id)) == REGRESSED]
    if regressed:
        lines += ["### Regressions", ""]
        for record in regressed:
            verdict = verdicts[record.case_id]
            messages = [f.message for f in verdict.findings if f.status == REGRESSED] or [verdict.message]
            for message in messages:
                lines.append(f"- `{record.case_id}`: {message}")
        lines.append("")
    for pipeline, members in _by_pipeline(records).items():
        lines += [f"### {pipeline}", ""]
        lines += _md_table(summary_frame(members, verdicts))
        lines.append("")
    if records:
        lines += ["<details><summary>Details per case</summary>", ""]
        for record in records:
            lines += _md_details(record, verdicts.get(record.case_id))
        lines += ["</details>", ""]
    return "\n".join(lines)


def _md_details(record: CaseRecord, verdict: Verdict | None) -> list[str]:
    speed = record.speed
    rounds = ", ".join(f"{s:.4g}" for s in speed.round_seconds)
    lines = [
        f"#### `{record.case_id}` — {_status(verdict)}",
        "",
        f"- variant: {', '.join(f'{k}={v}' for k, v in record.variant.items()) or '(none)'}",
        f"- timing: median {speed.median_seconds:.4g} s over {len(speed.round_seconds)} rounds ({rounds}); "
        f"{speed.items_per_round} items and {speed.tokens_per_round} generated tokens per round",
        f"- peak memory: {speed.peak_memory_bytes / 2**20:,.1f} MiB ({speed.memory_kind})",
        f"- quality: {', '.join(f'{k} {v:.4g}' for k, v in record.output.quality.items())} "
        f"over {len(record.output.item_ids)} items",
    ]
    if record.fidelity:
        lines.append(f"- fidelity classes: {', '.join(f'{k}: {v}' for k, v in record.fidelity.items())}")
    if verdict is not None and verdict.findings:
        lines.append("- findings:")
        for f in verdict.findings:
            lines.append(f"  - {f.status} ({f.metric} vs {f.against}): {f.message}")
    lines.append("")
    return lines


# --- JSON ---------------------------------------------------------------------------------------------------


def json_report(records: list[CaseRecord], verdicts: dict[str, Verdict], fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Everything measured and judged, as plain JSON values. A case without a verdict has `"verdict": null`."""
    cases = []
    for record in records:
        verdict = verdicts.get(record.case_id)
        cases.append(
            {
                "record": record.to_dict(),
                "verdict": None
                if verdict is None
                else {"status": verdict.status, "findings": [asdict(f) for f in verdict.findings]},
            }
        )
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "fingerprint": scrub_paths(dict(fingerprint)),
        "summary": {status: count for status, count in _counts(records, verdicts).items()},
        "cases": cases,
    }


def write_report(
    path: Path, records: list[CaseRecord], verdicts: dict[str, Verdict], fingerprint: dict[str, Any]
) -> None:
    """Write the report the suffix asks for: `.md` (Markdown) or `.json`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot write report {path}: unsupported suffix {path.suffix or '(none)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)} (.html arrives later)"
        )
    if suffix == ".md":
        text = markdown_report(records, verdicts)
    else:
        text = json.dumps(json_report(records, verdicts, fingerprint), indent=1, ensure_ascii=False) + "\n"
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
