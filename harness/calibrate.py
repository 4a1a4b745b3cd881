"""`harness calibrate`: learn each variant's speed noise on this machine and store it with its baseline entry.

The default gate (`pytest --benchmark`) runs again and again with nothing changed (A/A runs), one log line a run;
each variant's speedup against its baseline's then gives the mean and standard deviation of its drop, which the
speed rule uses from then on, on this CPU and near this machine speed (gate.machine.match_machine). A log that
holds runs already is continued, so calibration can be stopped and resumed.

    harness calibrate --runs 20                       # 20 A/A runs in all, then store the noise
    harness calibrate --runs 20 -- -k eval            # arguments after -- go to pytest
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.measure.environment import cpu_model
from harness.measure.machine_speed import FINGERPRINT_KEY as CALIBRATION_KEY
from harness.records import REGRESSED, SpeedNoise
from harness.store.baseline import store_speed_noise
from harness.store.results import read_results

DEFAULT_BASELINE = Path("baselines/cpu/embedded-reference.json")
DEFAULT_LOG = Path(".bench-calibration/aa-runs.jsonl")
MIN_RUNS = 8  # a variant's noise is stored once this many A/A runs judged it against its current baseline entry


class CalibrationError(Exception):
    """Calibration cannot go on; the message says what to run or fix."""


def metric_kind(metric: str) -> str:
    """The kind of rule a finding's metric belongs to."""
    if metric in ("speedup", "median_seconds", "speed", "instructions"):
        return "speed"
    if metric.startswith("counter"):
        return "counters"
    if metric in ("fidelity", "decisions", "model", "outputs", "values"):
        return metric
    return "quality"


def baseline_speedups(baseline: Path) -> dict[str, float | None]:
    results = read_results(baseline)
    return {case_id: None if r.speedup is None else r.speedup.ratio for case_id, r in results.records.items()}


def run_gate(pytest_args: list[str], baseline: Path) -> dict:
    """One gate run, summarized: exit code, wall time, and per case its status, regressed findings and speed."""
    before = baseline_speedups(baseline) if baseline.exists() else {}
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", "pytest", "--benchmark", "-p", "no:cacheprovider", "-q",
                                    "--bench-progress", "off", "--bench-report", str(report), *pytest_args],
                                   capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if not report.exists():
            raise RuntimeError(f"the gate wrote no report (exit {completed.returncode}):\n{completed.stdout[-3000:]}")
        results = read_results(report)
    cases = {}
    for case_id, record in results.records.items():
        verdict = results.verdicts[case_id]
        regressed = [{"kind": metric_kind(f.metric), "metric": f.metric, "against": f.against, "message": f.message}
                     for f in verdict.findings if f.status == REGRESSED]
        cases[case_id] = {"status": verdict.status, "regressed": regressed,
                          "speedup": None if record.speedup is None else round(record.speedup.ratio, 5),
                          "baseline_speedup": before.get(case_id),
                          # the paired re-timing of a speed regression, when the run took one
                          "paired_speedup": None if record.confirmation is None else round(record.confirmation.ratio, 5),
                          "median_seconds": round(record.speed.median_seconds, 4),
                          "rounds": len(record.speed.round_seconds),
                          # every round, so that other rules can be judged on the same runs later
                          "round_seconds": [round(x, 5) for x in record.speed.round_seconds],
                          "timer": record.speed.timer, "cpu_seconds": [round(x, 5) for x in record.speed.cpu_seconds]}
    return {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "exit_code": completed.returncode,
            "seconds": round(seconds, 1), "cpu": cpu_model(), "fingerprint": results.fingerprint,
            "pytest_args": pytest_args, "cases": cases}


def logged_runs(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_run(log: Path, line: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:  # one line per run: a cut-off study keeps what it ran
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def run_aa(log: Path, runs: int, pytest_args: list[str], baseline: Path) -> None:
    for index in range(len(logged_runs(log)), runs):
        summary = run_gate(pytest_args, baseline)
        append_run(log, summary)
        alarms = sum(1 for case in summary["cases"].values() if case["regressed"])
        print(f"A/A run {index + 1}/{runs}: exit {summary['exit_code']}, {alarms} case(s) regressed, "
              f"{summary['seconds']} s", flush=True)


def speed_noise(runs: list[dict], measured: str, min_runs: int = MIN_RUNS, cpu: str = "", arch: str = "",
                calibration_seconds: float | None = None) -> dict[str, SpeedNoise]:
    """Per variant, the mean and standard deviation of log(baseline speedup / run speedup) over A/A runs that
    were judged against the baseline it now has (a case saved again since starts over)."""
    drops: dict[str, list[float]] = {}
    for run in runs:
        for case_id, case in run["cases"].items():
            if case["speedup"] and case.get("baseline_speedup"):
                drops.setdefault(case_id, []).append(math.log(case["baseline_speedup"] / case["speedup"]))
    return {case_id: SpeedNoise(round(statistics.fmean(values), 5), round(statistics.stdev(values), 5), len(values), measured,
                                cpu, arch, calibration_seconds)
            for case_id, values in drops.items() if len(values) >= min_runs}


def calibrate(log: Path, baseline: Path) -> dict[str, SpeedNoise]:
    current = baseline_speedups(baseline)
    data = json.loads(baseline.read_text(encoding="utf-8"))
    runs = logged_runs(log)
    if not runs:
        raise CalibrationError(f"no A/A runs in {log}: run harness calibrate --runs N first")
    # Noise holds on the CPU it was learned on: its model name, and its generation where the runs logged one.
    arch = runs[-1]["fingerprint"].get("cpu_arch", "")
    runs = [run for run in runs if run["cpu"] == runs[-1]["cpu"] and run["fingerprint"].get("cpu_arch", arch) == arch]
    # Only the runs judged against the baseline records the file holds now.
    matching = [{**run, "cases": {c: v for c, v in run["cases"].items() if v.get("baseline_speedup") == current.get(c)}}
                for run in runs]
    measured = f"{runs[0]['at'][:10]} to {runs[-1]['at'][:10]}, {runs[-1]['cpu']} ({runs[-1]['fingerprint'].get('cpu_count')} cores)"
    # The machine speed the noise holds near is these runs' own, not that of the machine that saved the baseline:
    # the noise of one CPU can then judge runs on it against a baseline saved on another.
    calibrations = [t for run in runs if isinstance(t := run["fingerprint"].get(CALIBRATION_KEY), (int, float))]
    calibration = round(statistics.median(calibrations), 6) if calibrations else None
    noise = {c: n for c, n in speed_noise(matching, measured, cpu=runs[-1]["cpu"], arch=arch,
                                          calibration_seconds=calibration).items() if c in current}
    store_speed_noise(baseline, data["device_class"], data["model_id"], noise,
                      f"speed noise of {len(noise)} variants from the A/A runs in {log}")
    return noise

