"""Results of pytest-xdist workers, carried to the controller and merged there into one run.

Each worker measures and judges its cases as a one-process run does. What a case measured (its record,
and any reference measured on the way) and its verdict travel as JSON on the case's call-phase report,
in `user_properties`, which xdist sends to the controller (never pickle). The controller merges them
into one run, and only the controller writes the reports and saves the baseline: one save, one history
entry, every case once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.records import CaseRecord, Verdict
from harness.store.results import verdict_from_dict, verdict_to_dict

USER_PROPERTY = "harness_results"
SCHEMA_VERSION = 1


@dataclass
class WorkerResults:
    """What one case's run on one worker adds: records measured (the case's, and a reference measured for
    it), the verdicts judged, and the worker's fingerprint."""

    worker: str
    fingerprint: dict[str, Any]
    records: list[CaseRecord]
    verdicts: list[Verdict]
    # Per pipeline, the variant labels the worker's --bench-matrix parametrized: the controller collects nothing.
    matrix_labels: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"schema_version": SCHEMA_VERSION, "worker": self.worker, "fingerprint": self.fingerprint,
                           "records": [r.to_dict() for r in self.records],
                           "verdicts": [verdict_to_dict(v) for v in self.verdicts],
                           "matrix_labels": self.matrix_labels}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerResults:
        data = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"worker results of schema {data.get('schema_version')!r}, this version reads "
                             f"{SCHEMA_VERSION}: the workers run another harness version than the controller")
        return cls(data["worker"], data["fingerprint"], [CaseRecord.from_dict(r) for r in data["records"]],
                   [verdict_from_dict(v) for v in data["verdicts"]], data.get("matrix_labels", {}))


def results_of(user_properties: list[tuple[str, object]]) -> WorkerResults | None:
    """The worker results a report carries, or None (a plain test, a skipped case)."""
    for name, value in user_properties:
        if name == USER_PROPERTY and isinstance(value, str):
            return WorkerResults.from_json(value)
    return None


@dataclass
class MergedRun:
    """The controller's view of a distributed run: every worker's cases, each once."""

    records: dict[str, CaseRecord] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None  # the first worker's; every other must share its device class
    workers: dict[str, int] = field(default_factory=dict)  # worker id -> cases merged from it
    problems: list[str] = field(default_factory=list)
    matrix_labels: dict[str, set[str]] = field(default_factory=dict)  # every worker's, joined

    def add(self, results: WorkerResults) -> None:
        for pipeline, labels in results.matrix_labels.items():
            self.matrix_labels.setdefault(pipeline, set()).update(labels)
        device_class = results.fingerprint.get("device_class")
        if self.fingerprint is None:
            self.fingerprint = dict(results.fingerprint)
        elif device_class != self.fingerprint.get("device_class"):
            # One baseline file per device class: the cases of another class cannot be judged or saved with these.
            self.problems.append(f"worker {results.worker} ran on {device_class}, the others on "
                                 f"{self.fingerprint.get('device_class')}: its {len(results.records)} record(s) are "
                                 "left out of this run's report and baseline; give the workers GPUs of one kind")
            return
        for record in results.records:
            if record.case_id in self.records:
                # Measured twice (two workers each needed the reference of one group): the first stays, so every
                # case is saved once, and the run says so.
                self.problems.append(f"{record.case_id} was measured on more than one worker; kept the first "
                                     f"(cases sharing a reference belong on one worker: --dist loadscope)")
                continue
            self.records[record.case_id] = record
            self.workers[results.worker] = self.workers.get(results.worker, 0) + 1
        for verdict in results.verdicts:
            self.verdicts.setdefault(verdict.case_id, verdict)
