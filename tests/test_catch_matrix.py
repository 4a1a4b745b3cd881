"""The catch matrix: each realistic bug, put in with `--bench-inject`, fails a real `pytest --benchmark` run against
a clean baseline, with a finding whose metric (and, where one item is at stake, message) names it; a clean run
against the same baseline passes.

The bench cases are tests/catch_cases/cases.py, which the default runs do not collect. Each run is a subprocess, and
an injected run selects (-k) only the cases its bug acts on: most of a run's CPU goes to importing torch and
transformers, the rest to the uncached references.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from harness.measure.inject import InjectionError, parse_injections

CASES = Path(__file__).parent / "catch_cases" / "cases.py"
RUN = (sys.executable, "-m", "pytest", str(CASES), "--benchmark", "--bench-rounds", "1", "--bench-min-time", "0",
       "--bench-matrix", "ablation", "-p", "no:cacheprovider")


@dataclass(frozen=True)
class Bug:
    spec: str  # the --bench-inject spec
    select: str  # -k: the cases the bug acts on (each case's reference is measured with them anyway)
    cases: tuple[str, ...]  # each must regress ...
    metrics: tuple[str, ...]  # ... with a regressed finding of one of these metrics
    item: str | None = None  # where one item is at stake, that finding's message names it
    unharmed: tuple[str, ...] = ()  # cases where the bug does not act: their outputs stay the baseline's


EARLY_STOP = ("eval[math|early_stop=on]", "eval[math|kv_cache=on,early_stop=on]")
BUGS = [
    Bug("early-stop-cut=0.33", "test_eval and early_stop", EARLY_STOP, ("fidelity", "outputs")),
    Bug("early-stop-cut=@math-test-0-3", "test_eval and early_stop", EARLY_STOP, ("fidelity", "outputs"),
        item="math-test-0-3"),
    # the self pair reuses the reference's own pass, so only the sibling pair's score can move
    Bug("teacher-forcing-shift", "test_scoring", ("scoring[gpqa|reference]", "scoring[gpqa|topk=50]"),
        ("values", "decisions", "outputs"), item="sibling"),
    Bug("stale-cache", "kv_cache", ("eval[math|kv_cache=on]", "eval[math|kv_cache=on,early_stop=on]",
                                    "search[math|kv_cache=on]"), ("fidelity", "outputs"),
        unharmed=("eval[math|reference]", "search[math|reference]")),
    Bug("topk-shift=0.5", "test_scoring", ("scoring[gpqa|topk=50]",), ("values", "decisions", "outputs"),
        item="sibling", unharmed=("scoring[gpqa|reference]",)),
    Bug("quantize=nf4", "test_eval and reference", ("eval[math|reference]",), ("model",)),
    Bug("search-worse-rollout", "test_search and reference", ("search[math|reference]",), ("outputs", "accuracy")),
]


def _missing(spec: str) -> bool:
    try:
        parse_injections([spec])
    except InjectionError:
        return True
    return False


def _run(directory: Path, *args: str) -> subprocess.CompletedProcess:
    # Not an xdist worker's child: pytest-benchmark and the plugin would take it for a worker of their own.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST")}
    return subprocess.run([*RUN, "--bench-baseline-dir", str(directory / "baselines"), *args], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=600)


def _verdicts(directory: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """A run against the baseline, and its JSON report's verdicts by case id."""
    report = directory / f"{name}.json"
    result = _run(directory, "--bench-report", str(report), *args)
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    cases = json.loads(report.read_text())["cases"]
    return result, {case["record"]["case_id"]: case["verdict"] for case in cases}


def _regressions(verdict: dict, metrics: tuple[str, ...] | None = None) -> list[str]:
    """The regressed findings (of `metrics`, or all), described."""
    return [f"{f['metric']} vs {f['against']}: {f['message']}" for f in verdict["findings"]
            if f["status"] == "regressed" and (metrics is None or f["metric"] in metrics)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose baselines/ holds a clean run of every catch case. The xdist workers of one run share it
    (their base temps have the run's as parent): the first records it, the others wait on the lock."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        directory = tmp_path_factory.getbasetemp().parent / "catch"
        directory.mkdir(exist_ok=True)
    else:
        directory = tmp_path_factory.mktemp("catch")
    with FileLock(directory / "baselines.lock"):
        if not (directory / "baselines").is_dir():
            # a baseline needs 3 timed rounds (the runs against it stay at 1: speed is not judged there)
            saved = _run(directory, "--bench-rounds", "3", "--bench-save-baseline", "--bench-reason", "catch")
            assert saved.returncode == 0, saved.stdout[-3000:] + saved.stderr[-3000:]
    return directory


def test_a_clean_run_passes(baseline: Path) -> None:
    result, verdicts = _verdicts(baseline, "clean")
    alarms = {case: _regressions(verdict) for case, verdict in verdicts.items() if verdict["status"] == "regressed"}
    assert result.returncode == 0 and not alarms, alarms or result.stdout[-3000:]
    assert len(verdicts) == 8


@pytest.mark.parametrize("bug", [
    pytest.param(bug, id=bug.spec, marks=pytest.mark.skipif(_missing(bug.spec), reason=f"--bench-inject {bug.spec} "
                                                            "is not in harness.measure.inject yet"))
    for bug in BUGS
])
def test_the_gate_catches(baseline: Path, bug: Bug) -> None:
    result, verdicts = _verdicts(baseline, bug.spec.replace("=", "-").replace("@", ""), "-k", bug.select,
                                 "--bench-inject", bug.spec)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:] + result.stderr[-3000:]
    for case in bug.cases:
        assert case in verdicts, f"{case} not measured; measured: {sorted(verdicts)}"
        caught = _regressions(verdicts[case], bug.metrics)
        assert caught, f"{case}: no regressed {' / '.join(bug.metrics)} finding; regressed: {_regressions(verdicts[case])}"
        if bug.item:
            assert any(bug.item in message for message in caught), f"{case}: {bug.item} not named in {caught}"
    for case in bug.unharmed:  # (a neighbour's fidelity finding may still name them: a pair of them differs)
        assert not _regressions(verdicts[case], ("outputs", "values")), f"{case}: {_regressions(verdicts[case])}"
