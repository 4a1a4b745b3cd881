"""Result sets for the diff and report tests, derived from a recorded CPU baseline.

`tests/fixtures/recorded-cpu-baseline.json` is a frozen copy of real records (the eval, search[math] and
scoring cases of `baselines/cpu/embedded-reference.json`). Each scenario changes a copy the way a real
regression would show, and says how:
- `slowed`: a variant's rounds take `factor` times longer (its speedup recomputed from the same reference);
- `answers_lost`: `n` correct items of a variant become wrong (its accuracy recomputed);
- `dropped`: a case removed (new in the other side, or missing from this one);
- `on_device`: the same records said to come from another device class.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from harness.gate.verdict import bootstrap_speedup
from harness.records import CaseRecord, ResultSet
from harness.store.baseline import save_baseline
from harness.store.results import MACHINE_KEY, RECORD_KEY, read_results

RECORDED = Path(__file__).parent / "fixtures" / "recorded-cpu-baseline.json"
ALL_ON = "eval[math|kv_cache=on,early_stop=on,batching=dynamic,attention=sdpa]"
NO_BATCHING = "eval[math|kv_cache=on,early_stop=on,attention=sdpa,quantization=nf4]"
SEARCH_ALL_ON = "search[math|kv_cache=on,batching=dynamic,early_stop=on,attention=sdpa]"
EVAL_REFERENCE = "eval[math|reference]"


def recorded() -> ResultSet:
    return read_results(RECORDED)


def as_run(results: ResultSet) -> ResultSet:
    """The records of a baseline, as if a fresh run had produced them."""
    run = copy.deepcopy(results)
    run.kind, run.source, run.acceptances, run.history, run.case_fingerprints = "report", "run.json", {}, [], {}
    return run


def _reference_of(results: ResultSet, record: CaseRecord) -> CaseRecord:
    return next(r for r in results.records.values()
                if r.is_reference and (r.pipeline, r.group) == (record.pipeline, record.group))


def slowed(results: ResultSet, case_id: str, factor: float) -> ResultSet:
    changed = copy.deepcopy(results)
    record = changed.records[case_id]
    record.speed.round_seconds = [s * factor for s in record.speed.round_seconds]
    if record.speedup is not None:
        record.speedup = bootstrap_speedup(_reference_of(changed, record).speed.round_seconds, record.speed.round_seconds)
    return changed


def answers_lost(results: ResultSet, case_id: str, n: int) -> ResultSet:
    changed = copy.deepcopy(results)
    output = changed.records[case_id].output
    lost = 0
    for index, score in enumerate(output.item_scores):
        if score == 1.0 and lost < n:
            output.item_scores[index], output.item_outputs[index] = 0.0, "wrong"
            lost += 1
    metric = next(iter(output.quality))
    output.quality[metric] = sum(output.item_scores) / len(output.item_scores)
    return changed


def dropped(results: ResultSet, case_id: str) -> ResultSet:
    changed = copy.deepcopy(results)
    del changed.records[case_id]
    changed.acceptances.pop(case_id, None)
    return changed


def on_device(results: ResultSet, device_class: str) -> ResultSet:
    changed = copy.deepcopy(results)
    changed.device_class = device_class
    changed.fingerprint = {**changed.fingerprint, "device_class": device_class}
    for record in changed.records.values():
        record.metadata = {**record.metadata, "device": "cuda"}
    return changed


# --- writing result sets in each format the harness reads -----------------------------------------------------


def write_baseline(results: ResultSet, path: Path, reason: str = "recorded fixture") -> Path:
    save_baseline(path, results.device_class, results.model_id, results.fingerprint,
                  list(results.records.values()), reason, commit="abc1234")
    return path


def write_report_json(results: ResultSet, path: Path) -> Path:
    from harness.gate.diff import compare
    from harness.report import write_report

    write_report(path, compare(None, results))
    return path


def write_pytest_benchmark_json(results: ResultSet, path: Path) -> Path:
    """The shape of pytest-benchmark's `--benchmark-json`, with the records the plugin puts in `extra_info`."""
    benchmarks = [
        {"name": f"test_case[{case_id}]", "fullname": f"bench_cases/test_x.py::test_case[{case_id}]",
         "stats": {"median": record.speed.median_seconds, "rounds": len(record.speed.round_seconds)},
         "extra_info": {"case_id": case_id, RECORD_KEY: record.to_dict()}}
        for case_id, record in results.records.items()
    ]
    machine = {"device_class": results.device_class, "model_id": results.model_id, "fingerprint": results.fingerprint}
    data = {"machine_info": {"node": "ci", MACHINE_KEY: machine}, "commit_info": {}, "benchmarks": benchmarks,
            "datetime": "2026-11-23T00:00:00", "version": "5.2.3"}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
