"""`harness`: compare, render and accept result files without rerunning anything; learn the speed noise.

    harness diff OLD NEW [--markdown PATH|-] [--html PATH] [--json PATH] [--ratchet] [--allow-missing]
    harness report RESULTS [--markdown PATH|-] [--html PATH] [--json PATH]
    harness accept RESULTS --reason "why" [--baseline-dir baselines] [--case SUBSTRING ...]
    harness calibrate [--runs 20] [--baseline PATH] [--log PATH] [-- PYTEST_ARGS]

Exit codes (diff and report): 0 no regression; 1 a case regressed (or, in diff, went missing);
2 bad input or usage; 3 only with --ratchet: a case improved beyond its baseline, which is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.calibrate import (
    DEFAULT_BASELINE,
    DEFAULT_LOG,
    MIN_RUNS,
    CalibrationError,
    calibrate,
    run_aa,
)
from harness.gate.diff import EXIT_OK, EXIT_USAGE, Diff, DiffRefused, compare
from harness.gate.policy import DEFAULT_SPEED_FACTOR, DEFAULT_TIME_FACTOR
from harness.gate.verdict import GatePolicy
from harness.records import BASELINE, IMPROVED, REGRESSED, ResultSet
from harness.report import render, report_problem, terminal_table, write_report
from harness.store.baseline import baseline_path, current_commit, save_baseline
from harness.store.baseline_format import SAVE_HINT, BaselineError
from harness.store.results import ResultsError, read_results


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", metavar="PATH", help="write the Markdown report ('-' for stdout, e.g. "
                        ">> $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--html", metavar="PATH", help="write the self-contained HTML report with plots")
    parser.add_argument("--json", metavar="PATH", help="write the JSON report (harness accept reads it)")
    parser.add_argument("--ratchet", action="store_true",
                        help="exit 3 when a case improved beyond its baseline, so stale baselines get accepted")
    parser.add_argument("--exit-zero", action="store_true", help="report only: exit 0 whatever the verdicts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    commands = parser.add_subparsers(dest="command", required=True)

    diff = commands.add_parser("diff", help="judge NEW against OLD (a baseline, a JSON report or a pytest-benchmark "
                                            "JSON) and report; exits 1 on a regression")
    diff.add_argument("old", help="the baseline side, e.g. baselines/cpu/embedded-reference.json")
    diff.add_argument("new", help="the run side: pytest --benchmark --bench-report FILE.json, or --benchmark-json FILE")
    _add_outputs(diff)
    diff.add_argument("--allow-missing", action="store_true",
                      help="a case in OLD but not in NEW does not fail (the run covered a subset on purpose)")
    diff.add_argument("--cross-device", action="store_true",
                      help="compare across device classes: quality, counters and fidelity only, speed not judged")
    diff.add_argument("--speed-factor", type=float, default=None,
                      help=f"a speedup, and a reference's own time, may move by at most this factor (default "
                           f"{DEFAULT_SPEED_FACTOR:g} and {DEFAULT_TIME_FACTOR:g}, as the gate)")
    diff.add_argument("--strict-env", action="store_true",
                      help="fail a case whose environment differs from its baseline's (as --bench-strict-env)")

    report = commands.add_parser("report", help="render the verdicts stored in one result file; exits 1 if any "
                                                "case regressed")
    report.add_argument("results", help="a JSON report, a pytest-benchmark JSON, or a baseline")
    _add_outputs(report)

    accept = commands.add_parser("accept", help="write a run's results into the baseline, with a reason stored "
                                                "in the file and shown in the next diff")
    accept.add_argument("results", help="a JSON report or pytest-benchmark JSON of the run to accept")
    accept.add_argument("--reason", required=True, help="why the baseline changes")
    accept.add_argument("--baseline-dir", default="baselines", help="directory of baselines (default: baselines/)")
    accept.add_argument("--case", action="append", default=[], metavar="SUBSTRING",
                        help="accept only cases whose id contains this (repeatable); default: every case")
    accept.add_argument("--commit", help="the commit the results were measured at (default: git HEAD here)")

    calibrate = commands.add_parser("calibrate", help="run the gate N times with nothing changed, then store each "
                                                      "variant's speed noise with its baseline entry (arguments "
                                                      "after -- go to pytest)")
    calibrate.add_argument("--runs", type=int, default=20, help="A/A runs in the log in all, those there already "
                                                                 "counted (default 20; the noise needs "
                                                                 f"{MIN_RUNS} or more)")
    calibrate.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                           help=f"the baseline file the runs are judged against (default {DEFAULT_BASELINE})")
    calibrate.add_argument("--log", type=Path, default=DEFAULT_LOG, help=f"the A/A runs' log (default {DEFAULT_LOG})")
    return parser


def _emit(diff: Diff, args: argparse.Namespace) -> None:
    """The terminal table on stdout (unless Markdown goes there), and every report file asked for."""
    if args.markdown == "-":
        sys.stdout.write(render(diff, ".md"))
    else:
        print(terminal_table(diff))
    for path in (args.markdown if args.markdown != "-" else None, args.html, args.json):
        if path:
            write_report(Path(path), diff)


def _verdict_code(diff: Diff, args: argparse.Namespace, allow_missing: bool) -> int:
    code = diff.exit_code(ratchet=args.ratchet, allow_missing=allow_missing)
    if code and not args.exit_zero:
        counts = diff.counts()
        print(f"harness: {counts[REGRESSED]} regressed, {counts['missing']} missing, {counts[IMPROVED]} improved "
              f"(exit {code})", file=sys.stderr)
        return code
    return EXIT_OK


def _check_outputs(args: argparse.Namespace) -> None:
    """A report that could not be written is refused before any file is read."""
    for flag, path in (("--markdown", args.markdown if args.markdown != "-" else None), ("--html", args.html),
                       ("--json", args.json)):
        problem = report_problem(path) if path else None
        if problem:
            raise ResultsError(f"{flag} {path}: {problem}")


def run_diff(args: argparse.Namespace) -> int:
    _check_outputs(args)
    old, new = read_results(args.old), read_results(args.new)
    policy = replace(GatePolicy.for_speed_factor(args.speed_factor, new.device_class), strict_env=args.strict_env)
    diff = compare(old, new, policy, cross_device=args.cross_device)
    _emit(diff, args)
    return _verdict_code(diff, args, args.allow_missing)


def run_report(args: argparse.Namespace) -> int:
    _check_outputs(args)
    results = read_results(args.results)
    diff = compare(None, results, verdicts=results.verdicts)
    _emit(diff, args)
    return _verdict_code(diff, args, allow_missing=True)


def _selected(results: ResultSet, substrings: Sequence[str]) -> list:
    if not substrings:
        return list(results.records.values())
    return [r for case_id, r in results.records.items() if any(s in case_id for s in substrings)]


def run_accept(args: argparse.Namespace) -> int:
    results = read_results(args.results)
    if results.kind == BASELINE:
        raise ResultsError(f"{args.results} is already a baseline; accept a run's JSON report or pytest-benchmark JSON")
    records = _selected(results, args.case)
    if not records:
        raise ResultsError(f"no case of {args.results} matches {', '.join(args.case)}; "
                           f"its cases: {', '.join(results.records)}")
    path = baseline_path(Path(args.baseline_dir), results.device_class, results.model_id)
    save_baseline(path, results.device_class, results.model_id, results.fingerprint, records, args.reason,
                  args.commit or current_commit(ignore=args.baseline_dir), min_rounds=GatePolicy().min_rounds)
    for record in records:
        verdict = results.verdicts.get(record.case_id)
        status = verdict.status if verdict else "unjudged"
        print(f"accepted {record.case_id} ({status})" + (": a regression, accepted on purpose" if status == REGRESSED else ""))
    print(f"baseline {path}: {len(records)} case(s) accepted, reason \"{args.reason.strip()}\"")
    return EXIT_OK


def run_calibrate(args: argparse.Namespace) -> int:
    if args.runs < MIN_RUNS:
        raise CalibrationError(f"--runs {args.runs}: a variant's noise needs {MIN_RUNS} A/A runs or more")
    if not args.baseline.is_file():
        raise CalibrationError(f"no baseline at {args.baseline}: save one first with {SAVE_HINT}, or give --baseline")
    run_aa(args.log, args.runs, args.pytest_args, args.baseline)
    noise = calibrate(args.log, args.baseline)
    print(f"speed noise of {len(noise)} variant(s) stored in {args.baseline} (A/A runs: {args.log})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    if pytest_args and args.command != "calibrate":
        build_parser().error("arguments after -- go to pytest, which only harness calibrate runs")
    args.pytest_args = pytest_args
    command = {"diff": run_diff, "report": run_report, "accept": run_accept, "calibrate": run_calibrate}[args.command]
    try:
        return command(args)
    except (ResultsError, DiffRefused, BaselineError, CalibrationError) as error:
        print(f"harness {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as error:  # an optional dependency of one report format
        print(f"harness {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
