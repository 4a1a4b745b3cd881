"""Reading result files of any kind the project writes, into one shape: a `ResultSet`.

Three kinds are read, told apart by their content, not their name:
- a baseline (`baselines/<device-class>/<model-id>.json`), validated by `baseline`;
- a JSON report (`pytest --benchmark --bench-report report.json`), with the verdicts judged in that run;
- pytest-benchmark's JSON (`--benchmark-json`), whose benchmarks carry the case record in `extra_info`.

Every problem is a `ResultsError` naming the file and what to do. Nothing is judged here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.records import (
    BASELINE,
    PYTEST_BENCHMARK,
    REPORT,
    Acceptance,
    CaseRecord,
    Finding,
    ResultSet,
    Verdict,
)
from harness.store.baseline import load_baseline
from harness.store.baseline_format import (
    BaselineError,
    BaselineFile,
    saved_fingerprint,
    speed_noise_of,
)

REPORT_SCHEMA_VERSION = 2
# Keys the plugin writes into pytest-benchmark's JSON: per benchmark, and in `machine_info`.
RECORD_KEY, VERDICT_KEY, MACHINE_KEY = "harness_record", "harness_verdict", "harness"


class ResultsError(Exception):
    """A result file that cannot be read; the message names the file and the fix."""


def verdict_from_dict(data: dict[str, Any]) -> Verdict:
    return Verdict(data["case_id"], data["status"], tuple(Finding(**f) for f in data["findings"]))


def verdict_to_dict(verdict: Verdict) -> dict[str, Any]:
    findings = [{"metric": f.metric, "against": f.against, "status": f.status, "message": f.message}
                for f in verdict.findings]
    return {"case_id": verdict.case_id, "status": verdict.status, "findings": findings}


def read_results(path: Path | str) -> ResultSet:
    """The records (and verdicts, and acceptances) of a baseline, a JSON report or a pytest-benchmark JSON."""
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, dict) and "benchmarks" in data and "machine_info" in data:
        return _from_pytest_benchmark(path, data)
    if isinstance(data, dict) and isinstance(data.get("cases"), dict):
        return _from_baseline(path, data)
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        return _from_report(path, data)
    raise ResultsError(
        f"{path} is neither a baseline, a harness JSON report nor a pytest-benchmark JSON; pass a file written by "
        "pytest --benchmark --bench-report FILE.json, --benchmark-json FILE, or --bench-save-baseline"
    )


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist; check the path (a CI artifact may not have been downloaded)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path} cannot be read as UTF-8 text ({error}); check the path and the file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(
            f"{path} is not valid JSON (line {error.lineno} col {error.colno}: {error.msg}); "
            "was the run cut off while writing it? Re-run it, or restore the file from version control"
        ) from None


def _from_baseline(path: Path, data: dict[str, Any]) -> ResultSet:
    device_class, model_id = data.get("device_class"), data.get("model_id")
    if not isinstance(device_class, str) or not isinstance(model_id, str):
        raise ResultsError(f"{path} looks like a baseline but names no device_class or model_id; restore it from "
                           "version control or re-record it with --bench-save-baseline")
    try:
        baseline = load_baseline(path, device_class, model_id)
    except BaselineError as error:
        raise ResultsError(str(error)) from None
    return baseline_results(baseline, str(path))


def baseline_results(baseline: BaselineFile, source: str) -> ResultSet:
    """A validated baseline as a result set, each case with the reason it was accepted for."""
    records = {case_id: CaseRecord.from_dict(entry["record"]) for case_id, entry in baseline.cases.items()}
    acceptances = {
        case_id: Acceptance(str(entry.get("reason", "")), str(entry.get("saved_at", "")), entry.get("commit"))
        for case_id, entry in baseline.cases.items()
    }
    noise = {case_id: speed_noise_of(baseline, case_id) for case_id in baseline.cases}
    return ResultSet(source, BASELINE, baseline.device_class, baseline.model_id, baseline.fingerprint, records,
                     acceptances=acceptances, history=baseline.history,
                     speed_noise={case_id: n for case_id, n in noise.items() if n},
                     case_fingerprints={case_id: saved_fingerprint(baseline, case_id) for case_id in baseline.cases})


def _parse_record(path: Path, where: str, data: Any) -> CaseRecord:
    try:
        return CaseRecord.from_dict(data)
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise ResultsError(f"{path}: {where} does not parse as a case record ({error}); it was written by another "
                           "version of the harness or edited by hand: re-run the cases to write it again") from None


def _parse_verdict(path: Path, where: str, data: Any) -> Verdict:
    try:
        return verdict_from_dict(data)
    except (TypeError, KeyError, ValueError) as error:
        raise ResultsError(f"{path}: {where} holds a verdict that does not parse ({error}); re-run the cases") from None


def _from_report(path: Path, data: dict[str, Any]) -> ResultSet:
    version = data.get("schema_version")
    if version != REPORT_SCHEMA_VERSION:
        raise ResultsError(f"{path} is a report of schema {version!r}, this version reads {REPORT_SCHEMA_VERSION}; "
                           "re-run pytest --benchmark --bench-report FILE.json with this version")
    records, verdicts = {}, {}
    for index, case in enumerate(data["cases"]):
        record = _parse_record(path, f"case {index}", case.get("record") if isinstance(case, dict) else None)
        records[record.case_id] = record
        if case.get("verdict") is not None:
            verdicts[record.case_id] = _parse_verdict(path, f"case {record.case_id!r}", case["verdict"])
    return ResultSet(str(path), REPORT, str(data.get("device_class")), str(data.get("model_id")),
                     dict(data.get("fingerprint") or {}), records, verdicts)


def _from_pytest_benchmark(path: Path, data: dict[str, Any]) -> ResultSet:
    machine = data["machine_info"].get(MACHINE_KEY) if isinstance(data["machine_info"], dict) else None
    records, verdicts, ignored = {}, {}, 0
    for benchmark in data["benchmarks"] or []:
        extra = benchmark.get("extra_info") or {}
        if RECORD_KEY not in extra:
            ignored += 1
            continue
        record = _parse_record(path, f"benchmark {benchmark.get('fullname', '?')!r}", extra[RECORD_KEY])
        records[record.case_id] = record
        if extra.get(VERDICT_KEY) is not None:
            verdicts[record.case_id] = _parse_verdict(path, f"benchmark {record.case_id!r}", extra[VERDICT_KEY])
    if not records or not isinstance(machine, dict):
        raise ResultsError(
            f"{path} is a pytest-benchmark JSON with no harness case records ({ignored} plain benchmarks); "
            "write it with pytest --benchmark --benchmark-json FILE so each bench case carries its record"
        )
    return ResultSet(str(path), PYTEST_BENCHMARK, str(machine.get("device_class")), str(machine.get("model_id")),
                     dict(machine.get("fingerprint") or {}), records, verdicts, ignored=ignored)


__all__ = [
    "REPORT_SCHEMA_VERSION",
    "baseline_results",
    "ResultsError",
    "read_results",
    "verdict_from_dict",
    "verdict_to_dict",
]
