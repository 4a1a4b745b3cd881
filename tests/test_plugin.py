"""End-to-end runs of the plugin with pytester, on the embedded model and a few real items.

Each run is a subprocess: in-process runs would import torch a second time.
"""

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.gate.diff import CaseDiff, Diff
from harness.plugin.case import chosen_warm_up
from harness.plugin.session import confirmation_lines
from harness.records import (
    PASSED,
    REGRESSED,
    CaseRecord,
    Confirmation,
    Finding,
    Speedup,
    Verdict,
)

CASE = '''
import pytest
from harness.pipelines.eval import EvalSettings, run_eval
from harness.tasks import generate_suite

ITEMS = generate_suite("context_qa", n=12, seed=0)


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"], "early_stop": ["on"]})
def test_qa(bench):
    def pipeline(model, tokenizer, variant):
        settings = EvalSettings.from_variant(variant, max_new_tokens=MAX_NEW_TOKENS_WITH_EARLY_STOP
                                             if variant["early_stop"] == "on" else 16)
        return run_eval(model, tokenizer, ITEMS, settings)

    bench.run(group="context_qa", pipeline=pipeline)
'''


def _write_case(pytester: pytest.Pytester, max_new_tokens_with_early_stop: int = 16) -> None:
    pytester.makepyfile(test_bench=CASE.replace("MAX_NEW_TOKENS_WITH_EARLY_STOP", str(max_new_tokens_with_early_stop)))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bench-rounds", "1", *args)


def _baseline(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "baselines" / "cpu" / "embedded-reference.json").read_text())


def test_the_warm_up_is_the_whole_pipeline_when_compiling_or_on_a_gpu():
    def pipeline(model, tokenizer, variant):
        return "whole"

    def few_items(model, tokenizer, variant):
        return "few"

    assert chosen_warm_up({"kv_cache": "on"}, "cpu", pipeline, few_items) is few_items
    assert chosen_warm_up({"compile": "on"}, "cpu", pipeline, few_items) is pipeline
    assert chosen_warm_up({"kv_cache": "on"}, "cuda", pipeline, few_items) is pipeline
    assert chosen_warm_up({"kv_cache": "on"}, "cuda", pipeline, None) is pipeline
    assert chosen_warm_up({"kv_cache": "on"}, "cpu", pipeline, None)(None, None, {}) is None  # no warm-up


COLD_CASE = '''
import time
import pytest
from harness.pipelines.eval import EvalSettings, run_eval
from harness.tasks import generate_suite

ITEMS = generate_suite("context_qa", n=4, seed=0)
CALLS = []


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"]})
def test_qa(bench):
    def pipeline(model, tokenizer, variant):
        CALLS.append(variant["kv_cache"])
        if CALLS.count(variant["kv_cache"]) == 2 and variant["kv_cache"] == "on":
            time.sleep(1.0)  # after its warm-up, the variant's first timed round pays a one-time cost
        return run_eval(model, tokenizer, ITEMS, EvalSettings.from_variant(variant, max_new_tokens=8))

    bench.run(group="context_qa", pipeline=pipeline, warm_up=pipeline)
'''


def test_a_cold_first_round_is_named_in_the_run_notes_and_the_details(pytester):
    pytester.makepyfile(test_bench=COLD_CASE)
    report = pytester.path / "report.md"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark", "--bench-rounds", "3",
                                           "--bench-min-time", "0", "--bench-report", str(report))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["note: * case(s) timed a cold first round*: *eval[[]context_qa|kv_cache=on]*"])
    assert "passed (warm-up vs its other rounds): first timed round" in report.read_text()


def test_plain_run_skips_bench_cases_with_reason(pytester):
    _write_case(pytester)
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=3)  # the default (all-on) matrix: the reference, all on, kv_cache alone
    result.stdout.fnmatch_lines(["*runs with pytest --benchmark*"])


def test_save_needs_a_reason(pytester):
    _write_case(pytester)
    result = _run(pytester, "--benchmark", "--bench-save-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bench-save-baseline needs --bench-reason*"])


def test_save_then_compare_passes_and_keeps_reason(pytester):
    _write_case(pytester)
    # the leave-one-out matrix (4 variants), saved over the 3 rounds a baseline needs; compared at 1 round below
    saved = _run(pytester, "--benchmark", "--bench-matrix", "leave-one-out", "--bench-rounds", "3", "--bench-save-baseline",
                 "--bench-reason", "first record")
    saved.assert_outcomes(passed=4)
    saved.stdout.fnmatch_lines(["*LLM inference benchmarks*", "*eval[[]context_qa|reference]*new*", "*baselines saved to*"])
    data = _baseline(pytester)
    assert data["schema_version"] == 1
    assert set(data["cases"]) == {"eval[context_qa|reference]", "eval[context_qa|kv_cache=on,early_stop=on]",
                                  "eval[context_qa|early_stop=on]", "eval[context_qa|kv_cache=on]"}
    assert data["history"][-1]["reason"] == "first record"

    report, markdown, pytest_benchmark = (pytester.path / name for name in ("report.json", "report.md", "bench.json"))
    compared = _run(pytester, "--benchmark", "--bench-matrix", "leave-one-out", "--bench-report", str(report),
                    "--bench-report", str(markdown), "--benchmark-json", str(pytest_benchmark))
    compared.assert_outcomes(passed=4)
    statuses = {c["record"]["case_id"]: c["verdict"]["status"] for c in json.loads(report.read_text())["cases"]}
    assert "new" not in statuses.values() and "regressed" not in statuses.values()
    assert markdown.read_text().startswith("## Benchmark: 0 regressed, 0 improved, 4 passed, 0 new")
    assert 'last accepted "first record"' in markdown.read_text()
    # pytest-benchmark's JSON carries the records: the diff command judges it without rerunning
    baseline = pytester.path / "baselines" / "cpu" / "embedded-reference.json"
    assert main(["diff", str(baseline), str(pytest_benchmark)]) == 0
    assert main(["diff", str(baseline), str(report)]) == 0

    # The quick gate: the reference, all on and kv_cache alone (the exact pair every matrix holds); the leave-one-out
    # variants it does not run are not missing.
    quick = _run(pytester, "--benchmark", "--bench-matrix", "all-on", "--bench-report", str(markdown))
    quick.assert_outcomes(passed=3)
    assert markdown.read_text().startswith("## Benchmark: 0 regressed, 0 improved, 3 passed, 0 new\n")
    assert "> 1 baseline case(s) of variants outside this run's --bench-matrix were not run" in markdown.read_text()


def test_speed_noise_learned_on_another_cpu_is_set_aside_and_the_run_says_so(pytester):
    from harness.records import SpeedNoise
    from harness.store.baseline import store_speed_noise

    _write_case(pytester)
    timed = ("--benchmark", "-k", "reference or kv_cache", "--bench-rounds", "3", "--bench-min-time", "0")  # 3 rounds: judged
    _run(pytester, *timed, "--bench-save-baseline", "--bench-reason", "first").assert_outcomes(passed=3)
    path = pytester.path / "baselines" / "cpu" / "embedded-reference.json"
    # Without its calibration time the saved speed cannot set the noise aside: only the CPU decides here (a run
    # timed while the machine was loaded could take the calibration 1.25x as long and set it aside as well).
    data = json.loads(path.read_text())
    for fingerprint in [data["fingerprint"], *(entry["fingerprint"] for entry in data["cases"].values())]:
        fingerprint.pop("calibration_seconds")
    path.write_text(json.dumps(data))
    elsewhere = SpeedNoise(center=0.0, spread=0.0001, runs=8, measured="2026-12-01, Another CPU (2 cores)", cpu="Another CPU")
    store_speed_noise(path, "cpu", "embedded-reference", {"eval[context_qa|kv_cache=on]": elsewhere}, "A/A runs elsewhere")
    report = pytester.path / "report.json"
    compared = _run(pytester, *timed, "--bench-report", str(report))
    compared.assert_outcomes(passed=3)
    compared.stdout.fnmatch_lines(["the baseline's speed noise was learned on Another CPU, this run is on *: "
                                   "speedups are judged by the factor rule (--bench-speed-factor) instead"])
    assert not any("A/A noise" in message for message in _speedup_messages(report, "eval[context_qa|kv_cache=on]"))

    # The control: the same noise learned on this run's CPU judges the variant.
    from harness.measure.environment import cpu_model

    here = SpeedNoise(center=0.0, spread=0.0001, runs=8, measured=f"2026-12-01, {cpu_model()} (2 cores)", cpu=cpu_model())
    store_speed_noise(path, "cpu", "embedded-reference", {"eval[context_qa|kv_cache=on]": here}, "A/A runs here")
    _run(pytester, *timed, "--bench-report", str(report))
    assert any("A/A noise" in message for message in _speedup_messages(report, "eval[context_qa|kv_cache=on]"))


def test_a_baseline_saved_on_a_faster_machine_scales_the_reference_times_and_the_run_says_so(pytester):
    _write_case(pytester)
    timed = ("--benchmark", "-k", "reference", "--bench-rounds", "3", "--bench-min-time", "0")
    _run(pytester, *timed, "--bench-save-baseline", "--bench-reason", "first").assert_outcomes(passed=1)
    path = pytester.path / "baselines" / "cpu" / "embedded-reference.json"
    data = json.loads(path.read_text())
    entry = data["cases"]["eval[context_qa|reference]"]
    assert entry["fingerprint"]["calibration_seconds"] > 0
    # As if a machine 4x as fast at the calibration had saved rounds 4x as fast. Not 2x: calibrations of one
    # sitting spread 1.7x under a busy neighbour worker, enough to make a 2x-faster machine look slower.
    faster = 4
    entry["fingerprint"]["calibration_seconds"] /= faster
    data["fingerprint"]["calibration_seconds"] /= faster  # the file's last save, which the report's header names
    entry["record"]["speed"]["round_seconds"] = [t / faster for t in entry["record"]["speed"]["round_seconds"]]
    path.write_text(json.dumps(data))
    report = pytester.path / "report.json"
    # Unscaled, the times are 4x the baseline's and fail this factor; scaled, they pass it with room for noise.
    compared = _run(pytester, *timed, "--bench-report", str(report), "--bench-speed-factor", "3")
    compared.assert_outcomes(passed=1)
    compared.stdout.fnmatch_lines(["this machine ran the calibration workload x* as long as the baseline's: the "
                                   "reference variants' times are divided by that before they are compared"])
    cases = {c["record"]["case_id"]: c for c in json.loads(report.read_text())["cases"]}
    messages = [f["message"] for f in cases["eval[context_qa|reference]"]["verdict"]["findings"]
                if f["metric"] == "median_seconds"]
    assert messages and "as timed" in messages[0] and "scaled by this machine's x" in messages[0]
    markdown = pytester.path / "report.md"
    _run(pytester, *timed, "--bench-report", str(markdown), "--bench-speed-factor", "3")
    assert "ran the calibration workload x" in markdown.read_text()


def _speedup_messages(report: Path, case_id: str) -> list[str]:
    cases = {c["record"]["case_id"]: c for c in json.loads(report.read_text())["cases"]}
    return [f["message"] for f in cases[case_id]["verdict"]["findings"] if f["metric"] == "speedup"]


def test_ratchet_fails_a_case_that_beats_its_baseline(pytester):
    _write_case(pytester)
    _run(pytester, "--benchmark", "--bench-rounds", "3", "--bench-save-baseline", "--bench-reason", "first", "-k",
         "reference").assert_outcomes(passed=1)
    path = pytester.path / "baselines" / "cpu" / "embedded-reference.json"
    data = json.loads(path.read_text())
    speed = data["cases"]["eval[context_qa|reference]"]["record"]["speed"]
    # As if the baseline had been 10x slower, over the 3 rounds a speed verdict needs (with a little spread), by the
    # CPU time it is judged on and the wall time recorded beside.
    assert speed["timer"] == "cpu"
    for timer in ("cpu_seconds", "round_seconds"):
        speed[timer] = [10 * speed[timer][0] * f for f in (1.0, 1.02, 0.98)]
    path.write_text(json.dumps(data))
    ratcheted = _run(pytester, "--benchmark", "-k", "reference", "--bench-rounds", "3", "--bench-min-time", "0", "--bench-ratchet")
    ratcheted.assert_outcomes(failed=1)
    ratcheted.stdout.fnmatch_lines(["*eval[[]context_qa|reference]: median cpu time *(x0.*[[]vs baseline]",
                                    "the baseline is stale (--bench-ratchet): accept the new figures with harness accept*"])


SLOW_MINUTE = """
from dataclasses import replace

import harness.plugin.case
from harness.measure.inject import slowed

_measure_interleaved = harness.plugin.case.measure_interleaved


def _variant_in_a_slow_minute(sides, settings, progress=None):
    # the machine slows down 4x whenever the variant's rounds are timed, and is back to its speed for the paired
    # re-timing, which does not go through measure_interleaved
    reference, *variants = sides
    return _measure_interleaved([reference, *(replace(side, run=slowed(side.run, 3.0)) for side in variants)],
                                settings, progress)


harness.plugin.case.measure_interleaved = _variant_in_a_slow_minute
"""


def test_a_slow_minute_during_a_variants_rounds_is_cleared_by_the_paired_re_timing(pytester):
    _write_case(pytester)
    timed = ("--bench-rounds", "3", "--bench-min-time", "0", "-k", "reference or kv_cache and not early")
    _run(pytester, "--benchmark", *timed, "--bench-save-baseline", "--bench-reason", "first").assert_outcomes(passed=2)
    pytester.makeconftest(SLOW_MINUTE)
    report = pytester.path / "report.json"
    cleared = _run(pytester, "--benchmark", *timed, "--bench-report", str(report))
    cleared.assert_outcomes(passed=2)
    cleared.stdout.fnmatch_lines(["eval[[]context_qa|kv_cache=on]: speedup *x in its rounds, *x in 3 paired rounds: "
                                  "cleared: a change of the machine's speed, not of the code's"])
    case = next(c for c in json.loads(report.read_text())["cases"] if c["record"]["case_id"] == "eval[context_qa|kv_cache=on]")
    speedup = next(f for f in case["verdict"]["findings"] if f["metric"] == "speedup")
    assert "not confirmed by 3 paired rounds" in speedup["message"]
    assert len(case["record"]["confirmation"]["pairs"]) == 3  # (its rounds alone failed it: "not confirmed")


def test_the_run_names_what_each_paired_re_timing_said() -> None:
    recorded = json.loads((Path(__file__).parent / "fixtures" / "recorded-cpu-baseline.json").read_text())
    record = CaseRecord.from_dict(next(e["record"] for e in recorded["cases"].values() if e["record"]["speedup"]))
    record.speedup, record.confirmation = Speedup(2.0, 1.9, 2.1), Confirmation([[3.0, 1.0]])
    passed = Finding("speedup", "baseline", PASSED, "speedup 2.10x -> 2.00x")
    cleared = Finding("speedup", "baseline", PASSED, "speedup 3.00x -> 2.00x; not confirmed by 1 paired round: 3.00x")
    confirmed = Finding("speedup", "baseline", REGRESSED, "speedup 4.00x -> 2.00x; confirmed by 1 paired round: 3.00x")
    lines = [confirmation_lines(Diff(None, None, [CaseDiff(record.case_id, "eval", status, record, None,
                                                            Verdict(record.case_id, status, (finding,)))]))
             for status, finding in ((PASSED, passed), (PASSED, cleared), (REGRESSED, confirmed))]
    start = f"{record.case_id}: speedup 2.00x in its rounds, 3.00x in 1 paired round: "
    assert lines == [[start + "re-timed on request (--bench-confirm-all); its rounds had passed"],
                     [start + "cleared: a change of the machine's speed, not of the code's"], [start + "confirmed"]]


def test_early_stop_that_cuts_answers_fails_against_the_reference(pytester):
    _write_case(pytester, max_new_tokens_with_early_stop=1)  # the answer never fits
    result = _run(pytester, "--benchmark", "--bench-matrix", "leave-one-out")  # early_stop=on alone and with kv_cache
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*eval[[]context_qa|*early_stop=on]: fidelity: *early_stop must preserve every answer, "
                                 "but */* differ from the reference*"])


def test_corrupt_baseline_fails_cases_with_the_fix(pytester):
    _write_case(pytester)
    path = pytester.path / "baselines" / "cpu"
    path.mkdir(parents=True)
    (path / "embedded-reference.json").write_text("{not json")
    result = _run(pytester, "--benchmark", "--bench-matrix", "leave-one-out")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(["*embedded-reference.json*not valid JSON*"])
    assert (path / "embedded-reference.json").read_text() == "{not json"  # nothing overwritten


def test_unavailable_variant_is_skipped_with_what_to_change(pytester):
    pytester.makepyfile(test_flash='''
import pytest

@pytest.mark.bench(pipeline="eval", toggles={"attention": ["flash_attention_2"]})
def test_flash(bench):
    pass
''')
    result = _run(pytester, "--benchmark", "--bench-device", "cpu", "-rs")
    result.stdout.fnmatch_lines(["*flash_attention_2 needs a CUDA device*"])


def test_injected_regressions_are_caught_and_never_saved(pytester):
    pytest.importorskip("bitsandbytes")
    _write_case(pytester)
    _run(pytester, "--benchmark", "-k", "reference", "--bench-rounds", "3", "--bench-save-baseline", "--bench-reason", "clean"
         ).assert_outcomes(passed=1)
    quantized = _run(pytester, "--benchmark", "-k", "reference", "--bench-inject", "quantize=nf4")
    quantized.assert_outcomes(failed=1)
    quantized.stdout.fnmatch_lines(["*model changed vs the baseline: * quantization none -> * quantization bitsandbytes-nf4*",
                                    "note: regressions injected on purpose (--bench-inject quantize=nf4)*"])

    refused = _run(pytester, "--benchmark", "--bench-inject", "slowdown=0.5", "--bench-rounds", "3", "--bench-save-baseline",
                   "--bench-reason", "x")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*must not become baselines; drop --bench-save-baseline*"])
    unknown = _run(pytester, "--benchmark", "--bench-inject", "faster=2")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(["*--bench-inject faster=2: not an injection; one of slowdown=F*"])


TURNS = '''
import pytest
from harness.records import PipelineOutput


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"], "early_stop": ["on"]})
def test_turns(bench):
    def pipeline(model, tokenizer, variant):
        with open("calls.log", "a") as log:
            log.write(f"{bench.request.node.callspec.id} {variant['kv_cache']}/{variant['early_stop']}\\n")
        return PipelineOutput(quality={"accuracy": 1.0}, counters={"generated_tokens": 1}, item_ids=["a"],
                              item_scores=[1.0], item_outputs=["x"])

    bench.run(group="turns", pipeline=pipeline)
'''


def test_the_first_item_of_a_case_times_all_its_variants_in_turns(pytester):
    pytester.makepyfile(test_turns=TURNS)
    result = _run(pytester, "--benchmark", "--bench-rounds", "3", "--bench-min-time", "0", "--bench-matrix", "leave-one-out")
    result.assert_outcomes(passed=4)
    calls = (pytester.path / "calls.log").read_text().split()
    items, variants = calls[::2], calls[1::2]
    assert set(items) == {"reference"}  # every round ran in the case's first item
    cycle = ["off/off", "on/on", "off/on", "on/off"]  # reference, all on, then all on but one toggle each
    assert variants == [*cycle, *reversed(cycle), *cycle]


def test_a_variant_picked_alone_is_timed_in_turns_with_the_reference_only(pytester):
    pytester.makepyfile(test_turns=TURNS)
    result = _run(pytester, "--benchmark", "--bench-rounds", "3", "--bench-min-time", "0", "-k", "kv_cache and early_stop")
    result.assert_outcomes(passed=1)
    calls = (pytester.path / "calls.log").read_text().split()
    assert calls[1::2] == ["off/off", "on/on", "on/on", "off/off", "off/off", "on/on"]


IGNORED = '''
import pytest


@pytest.mark.bench(pipeline="detection", toggles={"topk": ["50"]}, gpu_toggles={"kv_cache": ["on"]})
def test_x(bench):
    pass
'''


def test_a_case_sweeping_a_toggle_its_pipeline_ignores_fails_collection_with_the_reason(pytester):
    # on a CPU, where gpu_toggles are not swept: the refusal must not wait for a GPU run
    pytester.makepyfile(test_ignored=IGNORED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark", "--collect-only", "--bench-device", "cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_ignored.py*",
                                 "test_x sweeps kv_cache, which the detection pipeline does not read (kv_cache is read by: "
                                 "eval, scoring, search): drop it from the case's gpu_toggles"])
