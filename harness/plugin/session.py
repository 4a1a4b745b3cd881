"""What every case of a run shares: its options, device, models, baseline, records and verdicts; at the end, the
run's diff against its baseline, the save, and the terminal summary's lines."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import pytest
import torch

from harness.gate.diff import Diff, compare
from harness.gate.machine import MachineMatch, match_machine
from harness.gate.policy import GatePolicy
from harness.gate.verdict import cleared_by_pairs, needs_confirmation
from harness.measure.environment import fingerprint
from harness.measure.inject import Injections
from harness.measure.machine_speed import slower_by
from harness.models.loading import ModelCache, checkpoint_hash, model_id
from harness.models.placement import Placement
from harness.plugin.merge import MergedRun, WorkerResults
from harness.plugin.options import BenchOptions
from harness.records import RUN, CaseRecord, ResultSet, Verdict
from harness.report import terminal_table
from harness.store.baseline import (
    baseline_path,
    current_commit,
    load_baseline,
    save_baseline,
    scrub_paths,
)
from harness.store.baseline_format import BaselineError, BaselineFile
from harness.store.results import baseline_results


@dataclass
class BenchSession:
    """State shared by every case of a run: models, records, verdicts, the baseline file."""

    config: pytest.Config | None  # None where a session is built outside pytest (a test of a case's loading)
    device: str
    options: BenchOptions = field(default_factory=BenchOptions)
    injections: Injections = field(default_factory=Injections)
    placement: Placement | None = None  # a model spread over GPUs (--bench-device-map); None: on one device
    models: ModelCache = field(default_factory=ModelCache)
    records: dict[str, CaseRecord] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    # What made a case's measurement fail, for its own item to raise (its variants are measured together).
    failures: dict[str, Exception] = field(default_factory=dict)
    # Per case (function and parameters, workers.group_name): the variants collected to run, in order.
    case_variants: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # Per pipeline: the variant labels --bench-matrix parametrized (before -k), so that baseline cases of
    # another matrix are not listed as missing. On an xdist controller, which collects nothing: the workers'.
    matrix_labels: dict[str, set[str]] = field(default_factory=dict)
    saved_to: Path | None = None
    diff: Diff | None = None  # this run against its baseline, built at session end
    # On an xdist worker: the case ids whose records, and whose verdicts, went to the controller already.
    sent_records: set[str] = field(default_factory=set)
    sent_verdicts: set[str] = field(default_factory=set)
    merged: MergedRun | None = None  # on the xdist controller: the workers' results

    @property
    def model_source(self) -> str:
        return self.options.model

    @property
    def model_id(self) -> str:
        return model_id(self.model_source)

    @property
    def min_time(self) -> float:
        """Seconds of timed rounds a variant gets at least: --bench-min-time, or the device's default."""
        return self.options.min_time_on(self.device)

    @property
    def rootpath(self) -> Path:
        return Path(self.config.rootpath) if self.config is not None else Path.cwd()

    @cached_property
    def fingerprint(self) -> dict:
        if self.merged is not None:  # the controller runs no case: the environment is the workers'
            return dict(self.merged.fingerprint or self._own_fingerprint())
        return self._own_fingerprint()

    def _own_fingerprint(self) -> dict:
        """This process's environment, with the hash of the checkpoint the session measures (models.checkpoint_hash)."""
        facts = fingerprint(self.device, self.placement)
        checkpoint = checkpoint_hash(self.model_source)
        return {**facts, "checkpoint": checkpoint[:16]} if checkpoint else facts

    @property
    def policy(self) -> GatePolicy:
        """The gate's rules for this run: the device's speed factors (or --bench-speed-factor), --bench-strict-env."""
        return replace(GatePolicy.for_speed_factor(self.options.speed_factor, self.fingerprint["device_class"]),
                       strict_env=self.options.strict_env)

    def unsent_results(self, worker: str) -> WorkerResults:
        """On a worker: the records and verdicts not yet sent to the controller, marked as sent."""
        # A variant measured with its case waits for its own item: the item may add its paired re-timing.
        records = [record for case_id, record in self.records.items() if case_id not in self.sent_records
                   and (record.is_reference or case_id in self.verdicts)]
        verdicts = [verdict for case_id, verdict in self.verdicts.items() if case_id not in self.sent_verdicts]
        self.sent_records.update(r.case_id for r in records)
        self.sent_verdicts.update(v.case_id for v in verdicts)
        labels = {pipeline: sorted(names) for pipeline, names in self.matrix_labels.items()}
        return WorkerResults(worker, scrub_paths(dict(self.fingerprint)), records, verdicts, labels)

    @property
    def baseline_dir(self) -> Path:
        return self.options.baseline_directory(self.rootpath)

    @property
    def baseline_file(self) -> Path:
        return baseline_path(self.baseline_dir, self.fingerprint["device_class"], self.model_id)

    @cached_property
    def baseline(self) -> BaselineFile | BaselineError | None:
        """The baseline file, read once: None when there is none yet, the error when it cannot be used."""
        try:
            return load_baseline(self.baseline_file, self.fingerprint["device_class"], self.model_id)
        except BaselineError as error:
            return error

    @cached_property
    def baseline_set(self) -> ResultSet | None:
        """The baseline as a result set, what every case is judged against; None when there is none.
        An unusable baseline raises its error, for each case to fail with."""
        if isinstance(self.baseline, BaselineError):
            raise self.baseline
        if self.baseline is None:
            return None
        return baseline_results(self.baseline, os.path.relpath(self.baseline_file, self.rootpath))

    def machine_matches(self) -> list[MachineMatch]:
        """The match of every case run that the baseline holds, for the summary of scales and noise set aside."""
        if not isinstance(self.baseline, BaselineFile):
            return []
        saved = self.baseline_set
        return [match_machine(saved.speed_noise.get(case_id, ()), self.fingerprint, saved.fingerprint_of(case_id))
                for case_id in self.records if case_id in saved.records]

    def forget_derived(self) -> None:
        """Drop what was computed from this process's environment: the controller takes the workers'."""
        for derived in ("fingerprint", "baseline", "baseline_set"):
            self.__dict__.pop(derived, None)

    def merge_workers(self) -> None:
        """The controller's run is the workers' merged results, in the environment the workers measured."""
        self.records, self.verdicts = dict(self.merged.records), dict(self.merged.verdicts)
        self.matrix_labels = self.merged.matrix_labels
        self.forget_derived()

    def run_diff(self) -> Diff:
        """This run against its baseline file, with the verdicts judged case by case during the run."""
        run = ResultSet("this run", RUN, self.fingerprint["device_class"], self.model_id, dict(self.fingerprint),
                        dict(self.records))
        baseline = self.baseline_set if isinstance(self.baseline, BaselineFile) else None
        diff = compare(baseline, run, policy=self.policy, verdicts=self.verdicts, missing_within_groups_run=True,
                       matrix_labels=self.matrix_labels)
        if isinstance(self.baseline, BaselineError):
            diff.notes.append(f"baseline not used: {self.baseline}")
        if self.options.save_baseline:
            diff.notes.append("--bench-save-baseline: regressions did not fail this run; the results became the baseline")
        if self.merged is not None:
            diff.notes.extend(self.merged.problems)
        if self.injections.active:
            diff.notes.append("regressions injected on purpose (--bench-inject " + " ".join(self.options.inject)
                              + "): this run measures the gate, not the code")
        return diff

    def save(self) -> None:
        path = self.baseline_file
        save_baseline(path, self.fingerprint["device_class"], self.model_id, self.fingerprint, list(self.records.values()),
                      self.options.reason, current_commit(self.rootpath, ignore=self.baseline_dir),
                      min_rounds=GatePolicy().min_rounds)
        self.saved_to = path

    def summary_lines(self, interrupted: bool) -> list[str]:
        """The terminal summary below pytest's: the run's settings, the table, and what the table cannot say."""
        lines = [f"model {self.model_id} on {self.fingerprint['device_class']}, matrix {self.options.matrix}, at least "
                 f"{self.options.rounds} rounds and {self.min_time:g} s of them per variant, {self._threads_line()}",
                 *self._table_lines(), *machine_lines(self.machine_matches()), *confirmation_lines(self.diff)]
        lines += [f"report written to {path}" for path in self.options.report]
        if interrupted:
            lines.append(f"the run was interrupted: the {len(self.records)} case(s) measured before it are reported"
                         + (" and saved" if self.saved_to else ""))
        if self.saved_to:
            lines.append(f"baselines saved to {os.path.relpath(self.saved_to, self.rootpath)}")
        return lines

    def _table_lines(self) -> list[str]:
        return [terminal_table(self.diff)]

    def _threads_line(self) -> str:
        """This process's torch threads; under xdist, the workers' (the controller runs no case) and how many."""
        if self.merged is None:
            return f"{torch.get_num_threads()} torch thread(s)"
        return (f"{self.fingerprint.get('torch_threads')} torch thread(s) in each of {len(self.merged.workers)} "
                f"xdist worker(s) ({', '.join(f'{w}: {n} case(s)' for w, n in sorted(self.merged.workers.items()))})")


def machine_lines(matches: list[MachineMatch]) -> list[str]:
    """What the baseline's machine differs in: the scale of absolute times, and why stored noise was set aside."""
    lines = []
    scales = sorted({round(m.scale, 2) for m in matches if slower_by(m.scale) is not None})
    if scales and scales != [1.0]:
        spread = f"x{scales[0]:.2f}" if len(scales) == 1 else f"x{scales[0]:.2f}-x{scales[-1]:.2f}"
        lines.append(f"this machine ran the calibration workload {spread} as long as the baseline's: the reference "
                     "variants' times are divided by that before they are compared")
    for reason in sorted({m.set_aside for m in matches if m.set_aside}):
        lines.append(f"{reason}: speedups are judged by the factor rule (--bench-speed-factor) instead")
    return lines


def confirmation_lines(diff: Diff) -> list[str]:
    """One line per variant that was timed again in pairs: what the pairs said, and what became of its speedup."""
    lines = []
    for case in diff.cases:
        record = case.current
        if record is None or record.confirmation is None or record.speedup is None or case.verdict is None:
            continue
        if needs_confirmation(case.verdict):
            outcome = "confirmed"
        elif cleared_by_pairs(case.verdict):
            outcome = "cleared: a change of the machine's speed, not of the code's"
        else:
            outcome = "re-timed on request (--bench-confirm-all); its rounds had passed"
        lines.append(f"{case.case_id}: speedup {record.speedup.ratio:.2f}x in its rounds, "
                     f"{record.confirmation.ratio:.2f}x in {record.confirmation.label}: {outcome}")
    return lines
