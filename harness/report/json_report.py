"""The JSON report: everything measured and judged, as plain JSON values; `harness diff` and `harness accept` read it."""

from __future__ import annotations

from typing import Any

from harness.gate.diff import MISSING, Diff
from harness.store.baseline import scrub_paths
from harness.store.results import REPORT_SCHEMA_VERSION, verdict_to_dict


def json_report(diff: Diff) -> dict[str, Any]:
    """Everything measured and judged, as plain JSON values; `harness diff` and `harness accept` read it back."""
    new = diff.new
    return scrub_paths({
        "schema_version": REPORT_SCHEMA_VERSION,
        "device_class": new.device_class,
        "model_id": new.model_id,
        "fingerprint": dict(new.fingerprint),
        "baseline": None if diff.old is None else diff.old.source,
        "summary": diff.counts(),
        "cases": [
            {"record": case.current.to_dict(), "verdict": None if case.verdict is None else verdict_to_dict(case.verdict)}
            for case in diff.cases if case.current is not None
        ],
        "missing": [case.case_id for case in diff.of(MISSING)],
        "notes": list(diff.notes),
    })

