"""What every report of a `Diff` shares: the summary frame and the labels of its cells, so that the terminal table,
the Markdown and the HTML show the same figures in the same words.

Nothing here judges: statuses and messages come from `verdict` through the diff; numbers come from the
records as measured.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from harness.gate.diff import MISSING, STATUSES, CaseDiff, Diff
from harness.records import (
    CPU_TIME,
    DECODE_STEPS,
    NEW,
    PASSED,
    RUN,
    WALL,
    Acceptance,
    CaseRecord,
)
from harness.toggles import is_on
from harness.toggles import variant_label as toggle_variant_label

NO_VALUE = "—"
ACCEPT_HINT = 'harness accept RESULTS.json --reason "why"'

COLUMNS = (
    "case",
    "pipeline",
    "group",
    "variant",
    "speedup",
    "baseline speedup",
    "items/min",
    "tokens/s",
    "peak memory (MiB)",
    "roofline",
    "quality",
    "quality delta",
    "agreement",
    "counters",
    "dominated by",
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
    """The toggles that differ from the reference (`kv_cache=on,topk=50`), or `reference`, as the case id
    names them (a stored record's variant may come back with its keys sorted)."""
    try:
        return record.label
    except ValueError:  # an id written by hand, not by the plugin
        return toggle_variant_label(record.variant, record.reference_variant)


def speedup_label(record: CaseRecord | None) -> str:
    """`5.1x [4.8-5.4]`; two decimals below 2x so that 1.03x is not shown as 1.0x; `—` without a speedup."""
    if record is None or record.speedup is None:
        return NO_VALUE
    s = record.speedup
    decimals = 2 if s.ratio < 2 else 1
    return f"{s.ratio:.{decimals}f}x [{s.low:.{decimals}f}-{s.high:.{decimals}f}]"


def quality_label(record: CaseRecord) -> str:
    return f"{record.quality_metric} {record.quality:.3f}"


def quality_delta_label(case: CaseDiff) -> str:
    """`+1.6 pts` (metrics in [0, 1]) or `+0.021`; `—` without both sides."""
    if case.current is None or case.baseline is None or case.baseline.quality_metric != case.current.quality_metric:
        return NO_VALUE
    before, after = case.baseline.quality, case.current.quality
    if 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0:
        return f"{100 * (after - before):+.1f} pts"
    return f"{after - before:+.4g}"


def _counter_name(name: str) -> str:
    return _COUNTER_ABBREVIATIONS.get(name, name)


def counters_label(record: CaseRecord) -> str:
    """`gen=2048 fwd=2080 pad=0`: known counters abbreviated, others by their own name, in record order.

    Quality figures beyond the gated one (e.g. each pair's score in scoring) lead the line, so a
    shift in them sits in plain view next to the work.
    """
    extra = [f"{k}={v:.4g}" for k, v in list(record.output.quality.items())[1:]]
    return " ".join(extra + [f"{_counter_name(k)}={v}" for k, v in record.output.counters.items()])


def counter_changes_label(case: CaseDiff) -> str:
    """Against a baseline, only what moved (`fwd 1500->3376`), or `unchanged`; without one, every counter."""
    if case.current is None:
        return ""
    if case.baseline is None:
        return counters_label(case.current)
    before, after = case.baseline.output.counters, case.current.output.counters
    moved = [f"{_counter_name(k)} {before[k]}->{v}" for k, v in after.items() if k in before and before[k] != v]
    return " ".join(moved) or "unchanged"


def headline_finding(case: CaseDiff) -> str:
    """The message of the first finding that carries the verdict's status (else the first non-passed one)."""
    if case.status == MISSING:
        return "in the baseline, not in this run"
    if case.verdict is None or case.status == NEW:  # every new case says the same: record it (in the details)
        return ""
    findings = list(case.verdict.findings)
    for finding in findings:
        if finding.status == case.status and finding.status != PASSED:
            return finding.message
    return next((f.message for f in findings if f.status != PASSED), "")


def number_label(value: float | None, decimals: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    return f"{value:,.{decimals}f}"


def agreement_label(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    return f"{100 * value:.1f}%"


def acceptance_label(acceptance: Acceptance) -> str:
    commit = f", {acceptance.commit}" if acceptance.commit else ""
    return f"\"{acceptance.reason}\" ({acceptance.saved_at[:10]}{commit})"


# --- Pareto front -------------------------------------------------------------------------------------------


def speed_quality_point(record: CaseRecord) -> tuple[float, float]:
    """(speedup vs the session reference, quality): the reference sits at speedup 1."""
    return (1.0 if record.speedup is None else record.speedup.ratio, record.quality)


def dominated_by(records: list[CaseRecord], include_reference: bool = False) -> dict[str, str]:
    """case id -> a variant of the same pipeline and group that is at least as fast and as good, and better in
    one (point estimates). Variants absent from the result are on the Pareto front. The reference is left out
    unless asked for: it is the point every speedup is measured from, and a table flag on it says nothing."""
    found: dict[str, str] = {}
    for record in records:
        if record.is_reference and not include_reference:
            continue
        speed, quality = speed_quality_point(record)
        for other in records:
            if other is record or (other.pipeline, other.group) != (record.pipeline, record.group):
                continue
            other_speed, other_quality = speed_quality_point(other)
            if other_speed >= speed and other_quality >= quality and (other_speed > speed or other_quality > quality):
                found[record.case_id] = other.case_id
                break
    return found


# --- the frame ----------------------------------------------------------------------------------------------


def summary_frame(diff: Diff) -> pd.DataFrame:
    """One row per case, in the diff's order (missing cases last, shown from their baseline record). Speed and
    memory columns are numbers; agreement is a share (NaN for the reference); the rest display text."""
    dominated = dominated_by([c.current for c in diff.cases if c.current is not None])
    rows = []
    for case in diff.cases:
        record = case.current or case.baseline
        rows.append({
            "case": case.case_id,
            "pipeline": record.pipeline,
            "group": record.group,
            "variant": variant_label(record),
            "speedup": speedup_label(case.current),
            "baseline speedup": speedup_label(case.baseline),
            "items/min": record.speed.items_per_minute if case.current else float("nan"),
            "tokens/s": record.speed.tokens_per_second if case.current and record.speed.tokens_per_round
            else float("nan"),
            "peak memory (MiB)": record.speed.peak_memory_bytes / 2**20 if case.current else float("nan"),
            "roofline": roofline_label(case.current) or "",
            "quality": quality_label(record),
            "quality delta": quality_delta_label(case),
            "agreement": float("nan") if case.current is None or case.current.agreement is None
            else float(case.current.agreement),
            "counters": counter_changes_label(case),
            "dominated by": dominated.get(case.case_id, ""),
            "verdict": case.status,
            "reason": headline_finding(case),
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def headline(diff: Diff) -> str:
    """`1 regressed, 2 improved, 5 passed, 1 new` (plus `, N missing` when the baseline has cases the run lacks)."""
    counts = diff.counts()
    shown = [s for s in STATUSES if s != MISSING or counts[MISSING]]
    return ", ".join(f"{counts[status]} {status}" for status in shown)


def by_pipeline(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {name: rows for name, rows in frame.groupby("pipeline", sort=False)}


def source_line(diff: Diff) -> str:
    new = diff.new
    facts = ", ".join(str(v) for v in (new.fingerprint.get("torch") and f"torch {new.fingerprint['torch']}",
                                       new.fingerprint.get("transformers") and
                                       f"transformers {new.fingerprint['transformers']}") if v)
    what = "this run" if new.kind == RUN else f"{new.kind} `{new.source}`"
    line = f"{what} ({new.device_class}, {new.model_id}{', ' + facts if facts else ''})"
    if diff.old is None:
        return line + " with no baseline"
    line += f" against {diff.old.kind} `{diff.old.source}`"
    saves = [entry for entry in diff.old.history if not (entry.get("speed_noise") or entry.get("dropped"))]  # saves only
    if saves:
        last = saves[-1]
        line += f", last accepted {acceptance_label(Acceptance(str(last.get('reason', '')), str(last.get('saved_at', '')), last.get('commit')))}"
    scale = diff.machine_scale
    if scale is not None:
        line += (f"; this machine ({new.fingerprint.get('cpu', 'CPU')}) ran the calibration workload x{scale:.2f} as long "
                 "as the baseline's last save")
    timers = sorted({case.current.speed.timer for case in diff.cases if case.current is not None})
    if timers:
        line += f"; speed judged by {' and '.join(TIMER_WORDS.get(t, t) for t in timers)}"
    changed = diff.environment_changes
    if changed:
        line += f"; **environment differs from the baseline's: {'; '.join(changed)}**"
    return line


TIMER_WORDS = {CPU_TIME: "CPU time (wall time recorded beside)", WALL: "wall time"}


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def speedup_parts(row: pd.Series) -> tuple[str, str | None]:
    """A frame row's speedup cell and, when the baseline had one, `was 4.2x` (its ratio only)."""
    was = row["baseline speedup"].partition(" ")[0]
    return row["speedup"], None if was == NO_VALUE else f"was {was}"


def quality_parts(row: pd.Series) -> tuple[str, str | None]:
    """A frame row's quality cell and its delta against the baseline, when there is one."""
    return row["quality"], None if row["quality delta"] == NO_VALUE else row["quality delta"]


def findings_by_message(status: str):
    """One line per distinct message, naming everything it was found against."""
    def describe(case: CaseDiff) -> list[str]:
        against: dict[str, list[str]] = {}
        for finding in case.verdict.findings:
            if finding.status == status:
                against.setdefault(finding.message, []).append(finding.against)
        return [f"{message} [vs {', '.join(sides)}]" for message, sides in against.items()]
    return describe


def timing_label(record: CaseRecord) -> str:
    """The rounds as measured, the warm-up (the compilation, with compile=on) apart, and on a GPU the share of the
    memory-bandwidth roofline."""
    speed = record.speed
    rounds = ", ".join(f"{s:.4g}" for s in speed.round_seconds)
    text = f"median {speed.median_seconds:.4g} s wall over {len(speed.round_seconds)} rounds ({rounds})"
    if speed.cpu_seconds:
        text += (f", CPU time median {statistics.median(speed.cpu_seconds):.4g} s "
                 f"({', '.join(f'{s:.4g}' for s in speed.cpu_seconds)})")
    if speed.instructions:
        text += f", instructions {', '.join(f'{n:,}' for n in speed.instructions)}"
    text += (f"; judged by {speed.timer} time; {speed.items_per_round} items and {speed.tokens_per_round} generated "
             "tokens per round")
    if speed.warm_up_seconds:
        what = "compilation included" if is_on(record.variant, "compile") else "untimed"
        text += f"; warm-up {speed.warm_up_seconds:.3g} s ({what})"
    text += "".join(f"; {part}" for part in efficiency_parts(record.metadata))
    if speed.phase_seconds:
        text += "; phases, median per round: " + "; ".join(phase_label(record, name) for name in speed.phase_seconds)
    return text


def efficiency_parts(figures: dict) -> list[str]:
    """The bandwidth ("decode") and bf16 compute ("compute") shares in `figures` (a record's metadata, or one phase's)."""
    parts = []
    decode = figures.get("decode")
    if isinstance(decode, dict):
        text = (f"decode {decode['tokens_per_second']:,.0f} tok/s reading {decode['bytes_per_second'] / 1e12:.2f} TB/s, "
                f"{100 * decode['share']:.1f}% of the {decode['gpu']}'s {decode['peak_bytes_per_second'] / 1e12:.2f} TB/s")
        if decode.get("measured_share"):  # records before the measured bandwidth have none
            text += f" ({100 * decode['measured_share']:.1f}% of the {decode['measured_bytes_per_second'] / 1e12:.2f} TB/s it read when measured)"
        parts.append(text)
    compute = figures.get("compute")
    if isinstance(compute, dict):
        parts.append(f"weights' matrix products {compute['flops_per_second'] / 1e12:.1f} TFLOP/s, "
                     f"{100 * compute['share']:.1f}% of the {compute['gpu']}'s {compute['peak_flops_per_second'] / 1e12:.0f} "
                     "TFLOP/s dense bf16 (attention's left out)")
    return parts


def phase_label(record: CaseRecord, name: str) -> str:
    """A phase's median time per round, its share of the round, and its own bandwidth or compute share."""
    speed = record.speed
    seconds = statistics.median(speed.phase_seconds[name])
    text = f"{name} {seconds:.4g} s ({100 * seconds / speed.median_seconds:.0f}% of the round)"
    phases = record.metadata.get("phases")
    parts = efficiency_parts(phases.get(name, {})) if isinstance(phases, dict) else []
    return text + "".join(f", {part}" for part in parts)


def roofline_label(record: CaseRecord | None) -> str | None:
    """The decode's share of the bandwidth roofline, and the share of the bf16 peak the round's products reached."""
    metadata = record.metadata if record is not None else {}
    parts = []
    if isinstance(decode := metadata.get("decode"), dict):
        parts.append(f"{100 * decode['share']:.0f}% of roofline")
    if isinstance(compute := metadata.get("compute"), dict):
        parts.append(f"{100 * compute['share']:.0f}% of bf16 peak")
    steps = metadata.get("phases", {}).get(DECODE_STEPS, {}).get("decode") if isinstance(metadata.get("phases"), dict) else None
    if isinstance(steps, dict):
        parts.append(f"steps alone {100 * steps['share']:.0f}%")
    return ", ".join(parts) or None




