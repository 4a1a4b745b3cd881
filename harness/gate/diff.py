"""Pairing a run's records with a baseline's, case by case, and judging each pair with `verdict`'s rules.

The same `Diff` feeds every report, whether it comes from a live `pytest --benchmark` session (verdicts
already judged case by case) or from `harness diff OLD NEW` on two files written elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.gate.machine import environment_findings, match_machine
from harness.gate.verdict import (
    COLD_FIRST_ROUND,
    GatePolicy,
    judge,
    one_toggle_neighbours,
)
from harness.measure.environment import changes
from harness.measure.machine_speed import machine_scale
from harness.records import (
    IMPROVED,
    NEW,
    PASSED,
    REGRESSED,
    Acceptance,
    CaseRecord,
    ResultSet,
    Verdict,
)

MISSING = "missing"  # in the baseline, not in the run
STATUSES = (REGRESSED, IMPROVED, PASSED, NEW, MISSING)

# `harness diff` exit codes.
EXIT_OK, EXIT_REGRESSED, EXIT_USAGE, EXIT_STALE = 0, 1, 2, 3


class DiffRefused(Exception):
    """Two files that must not be compared (another device class or model); the message says what to do."""


@dataclass
class CaseDiff:
    case_id: str
    pipeline: str
    status: str  # one of STATUSES
    current: CaseRecord | None  # None when missing from the run
    baseline: CaseRecord | None  # None when new
    verdict: Verdict | None  # None when missing
    accepted: Acceptance | None = None  # why the baseline entry holds what it holds
    reaccepted: Acceptance | None = None  # set when the new side is a baseline that re-recorded this case


@dataclass
class Diff:
    old: ResultSet | None  # None: no baseline yet
    new: ResultSet
    cases: list[CaseDiff]
    speed_judged: bool = True  # False when device classes differ and --cross-device was asked for
    notes: list[str] = field(default_factory=list)
    # Against the baseline's last save: how much longer this machine ran the calibration workload (None: unknown),
    # and what differs in the environment (measure.environment.changes).
    machine_scale: float | None = None
    environment_changes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for case in self.cases:
            counts[case.status] += 1
        return counts

    def of(self, status: str) -> list[CaseDiff]:
        return [case for case in self.cases if case.status == status]

    def exit_code(self, ratchet: bool = False, allow_missing: bool = False) -> int:
        """1 on a regression (or a case gone missing, unless allowed); 3 when the ratchet is on and a case
        improved beyond its baseline (accept it so the baseline does not go stale); else 0."""
        counts = self.counts()
        if counts[REGRESSED] or (counts[MISSING] and not allow_missing):
            return EXIT_REGRESSED
        if ratchet and counts[IMPROVED]:
            return EXIT_STALE
        return EXIT_OK


def _check_comparable(old: ResultSet, new: ResultSet, cross_device: bool) -> None:
    if old.model_id != new.model_id:
        raise DiffRefused(
            f"refusing to compare {new.source} (model {new.model_id!r}) with {old.source} (model {old.model_id!r}): "
            "measurements of one model do not judge another; compare against the baseline of the same model"
        )
    if old.device_class != new.device_class and not cross_device:
        raise DiffRefused(
            f"refusing to compare {new.source} ({new.device_class}) with {old.source} ({old.device_class}): absolute "
            "times do not transfer across device classes; compare against baselines/"
            f"{new.device_class}/, or pass --cross-device to judge quality, counters and fidelity only"
        )


def _references(records: Iterable[CaseRecord]) -> dict[tuple[str, str], CaseRecord]:
    return {(r.pipeline, r.group): r for r in records if r.is_reference}


def judge_case(record: CaseRecord, old: ResultSet | None, run_fingerprint: dict[str, Any], reference: CaseRecord | None,
               records: Iterable[CaseRecord], policy: GatePolicy) -> Verdict:
    """The one judging path, for a live session's case and for `harness diff`: the record against its entry in `old`
    (with the speed noise and the environment saved with it), its reference, and its one-toggle neighbours among
    `records`."""
    baseline = old.records.get(record.case_id) if old is not None else None
    match = (match_machine(old.speed_noise.get(record.case_id, ()), run_fingerprint, old.fingerprint_of(record.case_id))
             if old is not None else None)
    return judge(record, baseline, reference, policy, neighbours=one_toggle_neighbours(record, records),
                 noise=match and match.noise, machine_scale=match and match.scale,
                 same_machine=match.same_machine if match else True,
                 environment=environment_findings(match.changes, policy.strict_env) if match else ())


def compare(
    old: ResultSet | None,
    new: ResultSet,
    policy: GatePolicy | None = None,
    cross_device: bool = False,
    verdicts: dict[str, Verdict] | None = None,
    missing_within_groups_run: bool = False,
    matrix_labels: dict[str, set[str]] | None = None,
) -> Diff:
    """Judge every case of `new` against its entry in `old`, and list `old`'s cases that `new` lacks.

    `verdicts` (from a live session) are used as given; otherwise each case is judged here, against the
    baseline, its session reference and its one-toggle neighbours in `new`. A live session that ran a
    subset (`-k eval`) lists as missing only the baseline cases of the pipelines and groups it ran
    (`missing_within_groups_run`), and of those only the variants its matrix has (`matrix_labels`: per
    pipeline, the labels it parametrized; `--bench-matrix all-on` leaves out the leave-one-out variants).
    """
    policy = policy or GatePolicy.for_speed_factor(device_class=new.device_class)
    speed_judged = True
    if old is not None:
        _check_comparable(old, new, cross_device)
        speed_judged = old.device_class == new.device_class
    if not speed_judged:
        policy = replace(policy, judge_speed=False)
    baseline_records = old.records if old is not None else {}
    references = _references(new.records.values())
    cases = []
    for case_id, record in new.records.items():
        baseline = baseline_records.get(case_id)
        verdict = (verdicts or {}).get(case_id) or judge_case(
            record, old, new.fingerprint_of(case_id), references.get((record.pipeline, record.group)),
            new.records.values(), policy)
        cases.append(CaseDiff(
            case_id, record.pipeline, verdict.status, record, baseline, verdict,
            accepted=old.acceptances.get(case_id) if old is not None else None,
            reaccepted=_reaccepted(old, new, case_id),
        ))
    groups_run = {(r.pipeline, r.group) for r in new.records.values()}
    outside_matrix = 0
    for case_id, baseline in baseline_records.items():
        if case_id in new.records or (missing_within_groups_run and (baseline.pipeline, baseline.group) not in groups_run):
            continue
        if not _in_matrix(baseline, matrix_labels):
            outside_matrix += 1
        else:
            cases.append(CaseDiff(case_id, baseline.pipeline, MISSING, None, baseline, None,
                                  accepted=old.acceptances.get(case_id)))
    diff = Diff(old, new, cases, speed_judged)
    if old is not None:
        diff.machine_scale = machine_scale(new.fingerprint, old.fingerprint)
        diff.environment_changes = changes(new.fingerprint, old.fingerprint)
    if outside_matrix:
        diff.notes.append(f"{outside_matrix} baseline case(s) of variants outside this run's --bench-matrix were not run "
                          "(not counted as missing)")
    if not speed_judged:
        diff.notes.append(f"device classes differ ({old.device_class} vs {new.device_class}): speed not judged, "
                          "only quality, counters and fidelity")
    if new.ignored:
        diff.notes.append(f"{new.ignored} pytest-benchmark entries without a harness record were left out")
    cold = sorted(c.case_id for c in cases if c.verdict and any(f.metric == COLD_FIRST_ROUND for f in c.verdict.findings))
    if cold:
        diff.notes.append(f"{len(cold)} case(s) timed a cold first round, their figures leaning on it (the report's "
                          f"details say by how much): {', '.join(cold)}")
    return diff


def _in_matrix(record: CaseRecord, matrix_labels: dict[str, set[str]] | None) -> bool:
    labels = (matrix_labels or {}).get(record.pipeline)
    return labels is None or record.label in labels


def _reaccepted(old: ResultSet | None, new: ResultSet, case_id: str) -> Acceptance | None:
    """The new side's acceptance of a case, when both sides are baselines and the case was saved again."""
    if old is None:
        return None
    before, after = old.acceptances.get(case_id), new.acceptances.get(case_id)
    return after if after is not None and after != before else None


__all__ = [
    "EXIT_OK",
    "EXIT_REGRESSED",
    "EXIT_STALE",
    "EXIT_USAGE",
    "MISSING",
    "STATUSES",
    "CaseDiff",
    "Diff",
    "DiffRefused",
    "compare",
    "judge_case",
]
