"""How far the gate's verdicts can be trusted, measured: its false-alarm rate when nothing changed (A/A).

    python -m harness.studies.gate_study aa --runs 20 --log studies/aa-cpu.jsonl
        runs the gate (`pytest --benchmark`) again and again against the committed baselines, with no code
        change, and appends one line per run to the log: every case's status and what regressed. Runs
        already in the log count, so a study can be continued later on the same machine.
    python -m harness.studies.gate_study summary --log studies/aa-cpu.jsonl
        the false-alarm rate per metric kind over the logged runs, as a Markdown table

Extra arguments after `--` go to pytest (e.g. `-- -k eval`). Run it on an otherwise idle machine: anything
else running shares the cores and is part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from harness.results import read_results
from harness.verdict import REGRESSED

KINDS = ("speed", "quality", "counters", "fidelity", "decisions")


def metric_kind(metric: str) -> str:
    """The kind of rule a finding's metric belongs to."""
    if metric in ("speedup", "median_seconds", "speed"):
        return "speed"
    if metric.startswith("counter"):
        return "counters"
    if metric in ("fidelity", "decisions"):
        return metric
    return "quality"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_once(pytest_args: list[str]) -> dict:
    """One gate run, summarized: its exit code, wall time, and per case the status and regressed findings."""
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
                          "speedup": None if record.speedup is None else round(record.speedup.ratio, 4),
                          "median_seconds": round(record.speed.median_seconds, 4)}
    return {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "exit_code": completed.returncode,
            "seconds": round(seconds, 1), "cpu": cpu_model(), "fingerprint": results.fingerprint, "cases": cases}


def logged_runs(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_aa(log: Path, runs: int, pytest_args: list[str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    done = len(logged_runs(log))
    for index in range(done, runs):
        summary = run_once(pytest_args)
        with log.open("a", encoding="utf-8") as handle:  # one line per run: a cut-off study keeps what it ran
            handle.write(json.dumps(summary, sort_keys=True) + "\n")
        alarms = sum(1 for case in summary["cases"].values() if case["regressed"])
        print(f"run {index + 1}/{runs}: exit {summary['exit_code']}, {alarms} case(s) regressed, {summary['seconds']} s",
              flush=True)


def summary_table(runs: list[dict]) -> str:
    """Per metric kind: runs with at least one false alarm of that kind, and the cases that raised them."""
    if not runs:
        return "no runs logged yet"
    failing = sum(1 for run in runs if any(case["regressed"] for case in run["cases"].values()))
    lines = [
        f"{len(runs)} A/A runs from {runs[0]['at'][:10]} to {runs[-1]['at'][:10]} on {runs[-1]['cpu']} "
        f"({runs[-1]['fingerprint'].get('cpu_count')} cores, torch {runs[-1]['fingerprint'].get('torch')}); "
        f"{len(runs[-1]['cases'])} cases a run, median run {sorted(r['seconds'] for r in runs)[len(runs) // 2]:.0f} s",
        "",
        f"runs with any false alarm: {failing}/{len(runs)}",
        "",
        "| rule | runs with a false alarm | rate | cases that raised one (runs) |",
        "| --- | ---: | ---: | --- |",
    ]
    for kind in KINDS:
        runs_hit, cases_hit = 0, Counter()
        for run in runs:
            hit = [case_id for case_id, case in run["cases"].items() if any(f["kind"] == kind for f in case["regressed"])]
            runs_hit += bool(hit)
            cases_hit.update(hit)
        named = ", ".join(f"`{case_id}` ({n})" for case_id, n in cases_hit.most_common()) or "none"
        lines.append(f"| {kind} | {runs_hit}/{len(runs)} | {runs_hit / len(runs):.0%} | {named} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m harness.studies.gate_study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    aa = commands.add_parser("aa", help="run the gate N times with no change, logging each run")
    aa.add_argument("--runs", type=int, default=20, help="total runs wanted in the log (default 20)")
    aa.add_argument("--log", type=Path, required=True)
    summary = commands.add_parser("summary", help="the false-alarm table of a log")
    summary.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "aa":
        run_aa(args.log, args.runs, pytest_args)
    print(summary_table(logged_runs(args.log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
