"""The A/A study's bookkeeping: which rule a finding belongs to, and the false-alarm table of a log."""

from __future__ import annotations

import json
from pathlib import Path

from harness.studies.gate_study import logged_runs, metric_kind, summary_table


def test_metric_kinds() -> None:
    assert [metric_kind(m) for m in ("speedup", "median_seconds", "speed", "accuracy", "auc", "counter:forward_passes",
                                     "counters", "fidelity", "decisions")] == [
        "speed", "speed", "speed", "quality", "quality", "counters", "counters", "fidelity", "decisions"]


def run(at: str, alarms: dict[str, list[str]]) -> dict:
    cases = {case: {"status": "regressed" if kinds else "passed", "speedup": 2.0, "median_seconds": 1.0,
                    "regressed": [{"kind": k, "metric": k, "against": "baseline", "message": ""} for k in kinds]}
             for case, kinds in alarms.items()}
    return {"at": at, "exit_code": 1 if any(alarms.values()) else 0, "seconds": 600.0, "cpu": "AMD EPYC",
            "fingerprint": {"cpu_count": 2, "torch": "2.13.0+cpu"}, "cases": cases}


def test_summary_counts_runs_per_rule(tmp_path: Path) -> None:
    log = tmp_path / "aa.jsonl"
    runs = [run("2026-11-23T10:00:00", {"a": [], "b": []}),
            run("2026-11-24T10:00:00", {"a": ["speed"], "b": ["speed", "quality"]}),
            run("2026-11-25T10:00:00", {"a": ["speed"], "b": []})]
    log.write_text("".join(json.dumps(r) + "\n" for r in runs))
    table = summary_table(logged_runs(log))
    assert "3 A/A runs from 2026-11-23 to 2026-11-25 on AMD EPYC (2 cores" in table
    assert "runs with any false alarm: 2/3" in table
    assert "| speed | 2/3 | 67% | `a` (2), `b` (1) |" in table
    assert "| quality | 1/3 | 33% | `b` (1) |" in table
    assert "| counters | 0/3 | 0% | none |" in table
    assert summary_table([]) == "no runs logged yet"
