"""`harness diff` on recorded fixtures: exit codes, what each report says, and the accept flow.

The run side is written in each format the harness reads (JSON report, pytest-benchmark JSON, baseline),
so every reader is exercised end to end through `harness.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from diff_fixtures import (
    ALL_ON,
    EVAL_REFERENCE,
    NO_BATCHING,
    RECORDED,
    SEARCH_ALL_ON,
    answers_lost,
    as_run,
    dropped,
    on_device,
    recorded,
    slowed,
    write_baseline,
    write_pytest_benchmark_json,
    write_report_json,
)

from harness.cli import main
from harness.gate.diff import (
    EXIT_OK,
    EXIT_REGRESSED,
    EXIT_STALE,
    EXIT_USAGE,
    MISSING,
    compare,
)
from harness.records import IMPROVED, NEW, PASSED, REGRESSED, SpeedNoise
from harness.report import markdown_report
from harness.store.results import read_results

WRITERS = {"report": write_report_json, "pytest-benchmark": write_pytest_benchmark_json}


def statuses(old, new, **options) -> dict[str, str]:
    return {case.case_id: case.status for case in compare(old, new, **options).cases}


# --- compare ---------------------------------------------------------------------------------------------------


def test_an_unchanged_run_passes_every_case() -> None:
    found = statuses(recorded(), as_run(recorded()))
    assert set(found.values()) == {PASSED} and len(found) == 20


def test_a_slowed_variant_regresses_on_its_speedup() -> None:
    diff = compare(recorded(), slowed(as_run(recorded()), ALL_ON, 4.0))
    case = next(c for c in diff.cases if c.case_id == ALL_ON)
    assert case.status == REGRESSED
    assert any(f.metric == "speedup" and f.status == REGRESSED and "32.60x -> 8.15x" in f.message
               for f in case.verdict.findings)
    assert {c.status for c in diff.cases if c.case_id != ALL_ON} == {PASSED}


def test_speed_noise_judges_only_on_the_cpu_it_was_learned_on() -> None:
    # a 30% slower variant: beyond a 2% noise's limit (10%) on the CPU it was learned on; elsewhere the factor rule
    # judges it, and a 23% lower speedup is within its 1.5
    tight = SpeedNoise(center=0.0, spread=0.02, runs=10, measured="2026-12-01, AMD EPYC (2 cores)")
    old = recorded()
    old.speed_noise = {ALL_ON: (tight,)}
    for cpu, expected in (("AMD EPYC", REGRESSED), ("Intel(R) Xeon(R) Processor", PASSED)):
        run = slowed(as_run(recorded()), ALL_ON, 1.3)
        run.fingerprint = {**run.fingerprint, "cpu": cpu}
        case = next(c for c in compare(old, run).cases if c.case_id == ALL_ON)
        assert case.status == expected, cpu
        assert any("A/A noise" in f.message for f in case.verdict.findings) == (cpu == "AMD EPYC")


def test_on_a_machine_slower_at_the_calibration_times_are_scaled_and_noise_is_set_aside() -> None:
    old = recorded()
    old.speed_noise = {ALL_ON: (SpeedNoise(center=0.0, spread=0.02, runs=10, measured="x", cpu="AMD EPYC"),)}
    old.case_fingerprints = {case_id: {"cpu": "AMD EPYC", "calibration_seconds": 0.040} for case_id in old.records}
    for calibration, expected in ((0.040, REGRESSED), (0.088, PASSED)):  # the same machine, then one 2.2x slower
        # every case timed 2.2x slower, the variant 30% slower again: its speedup over the reference 30% lower
        run = slowed(slowed(as_run(recorded()), EVAL_REFERENCE, 2.2), ALL_ON, 2.2 * 1.3)
        run.fingerprint = {**run.fingerprint, "cpu": "AMD EPYC", "calibration_seconds": calibration}
        found = {c.case_id: c for c in compare(old, run).cases}
        assert found[EVAL_REFERENCE].status == expected, calibration
        # a 30% lower speedup: beyond the 2% noise's limit where it holds, within the factor rule where it does not
        assert found[ALL_ON].status == expected, calibration
        assert any("A/A noise" in f.message for f in found[ALL_ON].verdict.findings) == (calibration == 0.040)


def test_a_slowed_reference_regresses_on_its_own_time_and_its_variants_improve() -> None:
    found = statuses(recorded(), slowed(as_run(recorded()), EVAL_REFERENCE, 4.0))
    assert found[EVAL_REFERENCE] == REGRESSED


def test_a_faster_variant_is_improved_and_the_ratchet_flags_it() -> None:
    diff = compare(recorded(), slowed(as_run(recorded()), NO_BATCHING, 0.25))
    assert next(c for c in diff.cases if c.case_id == NO_BATCHING).status == IMPROVED
    assert diff.exit_code() == EXIT_OK
    assert diff.exit_code(ratchet=True) == EXIT_STALE


def test_lost_answers_regress_on_the_baseline_outputs_and_the_reference_budget() -> None:
    diff = compare(recorded(), answers_lost(as_run(recorded()), NO_BATCHING, 8))
    case = next(c for c in diff.cases if c.case_id == NO_BATCHING)
    assert case.status == REGRESSED
    assert any(f.metric == "outputs" and f.against == "baseline" and f.status == REGRESSED
               and "outputs changed vs the baseline on 8/32 items" in f.message for f in case.verdict.findings)
    assert any(f.metric == "accuracy" and f.against == "reference" and f.status == REGRESSED
               and "net 8 of 32 items" in f.message for f in case.verdict.findings)


def test_new_and_missing_cases() -> None:
    diff = compare(dropped(recorded(), ALL_ON), dropped(as_run(recorded()), SEARCH_ALL_ON))
    found = {case.case_id: case for case in diff.cases}
    assert found[ALL_ON].status == NEW and found[ALL_ON].baseline is None
    assert found[SEARCH_ALL_ON].status == MISSING and found[SEARCH_ALL_ON].current is None
    assert diff.exit_code() == EXIT_REGRESSED
    assert diff.exit_code(allow_missing=True) == EXIT_OK


def test_a_run_of_the_all_on_matrix_lists_as_missing_only_the_variants_that_matrix_has() -> None:
    baseline = recorded()
    run = as_run(recorded())
    for case_id in [c for c, r in run.records.items() if r.pipeline == "eval" and c not in (EVAL_REFERENCE, ALL_ON)]:
        run = dropped(run, case_id)
    run = dropped(run, EVAL_REFERENCE)  # as if its item had failed: a variant of the matrix, so still missing
    labels = {"eval": {"reference", run.records[ALL_ON].label}, "search": {"reference", run.records[SEARCH_ALL_ON].label}}
    for case_id in [c for c, r in run.records.items() if r.pipeline == "search"]:
        run = dropped(run, case_id)  # a case deselected whole (-k): out of the run's scope
    diff = compare(baseline, run, missing_within_groups_run=True, matrix_labels=labels)
    missing = {c.case_id for c in diff.cases if c.status == MISSING}
    assert missing == {EVAL_REFERENCE}
    # counted in the groups the run ran only: the search case's variants are neither missing nor counted
    outside = len([r for r in baseline.records.values() if r.pipeline == "eval" and r.group == "math"]) - 2
    assert f"{outside} baseline case(s) of variants outside this run's --bench-matrix were not run" in diff.notes[0]
    # without the matrix, every eval variant the run lacks is missing
    assert len({c.case_id for c in compare(baseline, run, missing_within_groups_run=True).cases if c.status == MISSING}) > 2


def test_a_subset_of_the_default_matrix_lists_its_variants_as_missing_though_the_baseline_sorted_their_toggles() -> None:
    from dataclasses import replace

    # A baseline read back from JSON holds each variant's toggles sorted by name; the run's matrix labels keep the
    # case's toggle order, as its case ids do.
    baseline = recorded()
    baseline.records = {c: replace(r, variant=dict(sorted(r.variant.items()))) for c, r in baseline.records.items()}
    run = dropped(as_run(recorded()), ALL_ON)
    labels = {"eval": {r.label for r in recorded().records.values() if r.pipeline == "eval"}}
    diff = compare(baseline, run, missing_within_groups_run=True, matrix_labels=labels)
    assert {c.case_id for c in diff.cases if c.status == MISSING} == {ALL_ON}
    assert not diff.notes


def test_the_all_on_matrix_is_the_reference_and_every_toggle_on() -> None:
    from harness.toggles import variants

    chosen = variants({"kv_cache": ("on",), "batching": ("static8", "dynamic")}, "all-on")
    # and kv_cache alone: the exact toggle's pair with the reference, which every matrix holds
    assert chosen == [{"kv_cache": "off", "batching": "1"}, {"kv_cache": "on", "batching": "dynamic"},
                      {"kv_cache": "on", "batching": "1"}]


def test_another_device_class_is_refused_unless_asked_and_then_speed_is_not_judged() -> None:
    from harness.gate.diff import DiffRefused

    gpu_run = on_device(slowed(as_run(recorded()), ALL_ON, 4.0), "cuda-h100-80gb-hbm3")
    with pytest.raises(DiffRefused, match=r"absolute times do not transfer across device classes.*--cross-device"):
        compare(recorded(), gpu_run)
    diff = compare(recorded(), gpu_run, cross_device=True)
    assert {c.status for c in diff.cases} == {PASSED}  # the 4x slowdown is not judged across devices
    assert "speed not judged" in diff.notes[0]


def test_another_model_is_refused() -> None:
    from harness.gate.diff import DiffRefused

    other = as_run(recorded())
    other.model_id = "org--other-model"
    with pytest.raises(DiffRefused, match="measurements of one model do not judge another"):
        compare(recorded(), other)


# --- the command line ------------------------------------------------------------------------------------------


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_diff_exit_codes_on_each_format(kind: str, tmp_path: Path, capsys) -> None:
    write = WRITERS[kind]
    same = write(as_run(recorded()), tmp_path / "same.json")
    assert run_cli("diff", RECORDED, same) == EXIT_OK
    assert "0 regressed, 0 improved, 20 passed, 0 new" in capsys.readouterr().out

    worse = write(slowed(as_run(recorded()), ALL_ON, 4.0), tmp_path / "worse.json")
    assert run_cli("diff", RECORDED, worse) == EXIT_REGRESSED
    output = capsys.readouterr()
    assert "speedup 32.60x -> 8.15x" in output.out and "1 regressed" in output.err

    better = write(slowed(as_run(recorded()), NO_BATCHING, 0.25), tmp_path / "better.json")
    assert run_cli("diff", RECORDED, better) == EXIT_OK
    assert run_cli("diff", RECORDED, better, "--ratchet") == EXIT_STALE
    assert run_cli("diff", RECORDED, worse, "--exit-zero") == EXIT_OK

    partial = write(dropped(as_run(recorded()), SEARCH_ALL_ON), tmp_path / "partial.json")
    assert run_cli("diff", RECORDED, partial) == EXIT_REGRESSED
    assert run_cli("diff", RECORDED, partial, "--allow-missing") == EXIT_OK


def test_diff_refuses_another_device_class_with_the_fix(tmp_path: Path, capsys) -> None:
    gpu = write_report_json(on_device(as_run(recorded()), "cuda-h100-80gb-hbm3"), tmp_path / "gpu.json")
    assert run_cli("diff", RECORDED, gpu) == EXIT_USAGE
    assert "absolute times do not transfer across device classes" in capsys.readouterr().err
    assert run_cli("diff", RECORDED, gpu, "--cross-device") == EXIT_OK


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1 col 2"),
        ('{"something": "else"}', "is neither a baseline, a harness JSON report nor a pytest-benchmark JSON"),
        ('{"schema_version": 1, "cases": []}', "is a report of schema 1, this version reads 2"),
        ('{"machine_info": {}, "benchmarks": [{"name": "t", "extra_info": {}}]}',
         "a pytest-benchmark JSON with no harness case records (1 plain benchmarks)"),
    ],
)
def test_diff_of_a_bad_file_exits_2_with_the_fix(content: str, message: str, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    assert run_cli("diff", RECORDED, bad) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert run_cli("diff", RECORDED, tmp_path / "absent.json") == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def row_of(table: str, variant: str) -> str:
    """The Markdown table row of one variant (its cell may carry a `*(dominated)*` mark)."""
    return next(line for line in table.splitlines()
                if line.startswith("| ") and line.split(" | ")[1].removesuffix(" *(dominated)*") == variant)


def test_markdown_report_of_a_regressed_run(tmp_path: Path, capsys) -> None:
    new = answers_lost(slowed(as_run(recorded()), ALL_ON, 4.0), NO_BATCHING, 8)
    new = write_report_json(dropped(new, SEARCH_ALL_ON), tmp_path / "run.json")
    markdown = tmp_path / "summary.md"
    assert run_cli("diff", RECORDED, new, "--markdown", markdown) == EXIT_REGRESSED
    text = markdown.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "## Benchmark: 3 regressed, 0 improved, 16 passed, 0 new, 1 missing"
    assert "last accepted \"search, scoring and detection pipelines: first CPU baselines\" (2026-11-23, 8d20552)" in text
    regressions = text[text.index("### Regressions"):text.index("### Missing from this run")]
    assert f"- `{ALL_ON}`: speedup 32.60x -> 8.15x" in regressions
    assert f"- `{NO_BATCHING}`: outputs changed vs the baseline on 8/32 items" in regressions
    assert f"- `{SEARCH_ALL_ON}`: in the baseline, not in this run" in text
    eval_table = text[text.index("### eval"):text.index("### scoring")]
    slowed_row = row_of(eval_table, "kv_cache=on,early_stop=on,batching=dynamic,attention=sdpa")
    assert "8.2x [6.3-10.5] (was 32.6x)" in slowed_row and "**regressed**" in slowed_row
    lost_row = row_of(eval_table, "kv_cache=on,early_stop=on,attention=sdpa,quantization=nf4")
    assert "accuracy 0.750 (-25.0 pts)" in lost_row
    # the PR view stays short: one table row per case, details folded
    assert text.index("<details>") > text.index("### search")
    assert len([line for line in lines if line.startswith("| math ") or line.startswith("| gpqa ")]) == 20  # with the missing one


def test_report_renders_stored_verdicts_and_exits_on_regressions(tmp_path: Path, capsys) -> None:
    run = write_report_json(as_run(recorded()), tmp_path / "run.json")
    assert run_cli("report", run, "--markdown", "-") == EXIT_OK
    assert capsys.readouterr().out.startswith("## Benchmark: 0 regressed, 0 improved, 0 passed, 20 new")
    judged = tmp_path / "judged.json"
    assert run_cli("diff", RECORDED, write_report_json(slowed(as_run(recorded()), ALL_ON, 4.0), tmp_path / "w.json"),
                   "--json", judged) == EXIT_REGRESSED
    assert run_cli("report", judged) == EXIT_REGRESSED
    assert json.loads(judged.read_text())["summary"]["regressed"] == 1


def test_accept_stores_the_reason_and_the_next_diff_shows_it(tmp_path: Path, capsys) -> None:
    baselines = tmp_path / "baselines"
    old = write_baseline(recorded(), baselines / "cpu" / "embedded-reference.json", reason="first record")
    before = tmp_path / "before.json"
    before.write_bytes(old.read_bytes())  # the base branch's copy, for the pull request's "baseline changes"
    faster = write_report_json(slowed(as_run(recorded()), NO_BATCHING, 0.25), tmp_path / "faster.json")
    judged = tmp_path / "judged.json"  # what CI's `pytest --benchmark --bench-report` leaves as an artifact
    assert run_cli("diff", old, faster, "--ratchet", "--json", judged) == EXIT_STALE
    capsys.readouterr()

    assert run_cli("accept", judged, "--reason", "static batches of 8 now reuse the cache", "--case", "eval[math|",
                   "--baseline-dir", baselines, "--commit", "f00dbab") == EXIT_OK
    said = capsys.readouterr().out
    assert f"accepted {NO_BATCHING} (improved)" in said and "7 case(s) accepted" in said
    accepted = read_results(old)
    assert accepted.acceptances[NO_BATCHING].reason == "static batches of 8 now reuse the cache"
    assert accepted.acceptances[SEARCH_ALL_ON].reason == "first record"  # not selected: kept as it was
    assert accepted.history[-1]["commit"] == "f00dbab"

    assert run_cli("diff", old, faster, "--ratchet") == EXIT_OK  # the baseline is no longer stale
    text = markdown_report(compare(accepted, read_results(faster)))
    assert 'last accepted "static batches of 8 now reuse the cache" (' in text
    assert '- baseline accepted: "static batches of 8 now reuse the cache"' in text

    changes = markdown_report(compare(read_results(before), accepted))
    listed = changes[changes.index("### Baseline changes accepted"):changes.index("### eval")]
    assert f"- `{NO_BATCHING}`: \"static batches of 8 now reuse the cache\"" in listed
    assert SEARCH_ALL_ON not in listed


def test_accept_refuses_a_baseline_and_an_empty_selection(tmp_path: Path, capsys) -> None:
    assert run_cli("accept", RECORDED, "--reason", "x", "--baseline-dir", tmp_path) == EXIT_USAGE
    assert "is already a baseline" in capsys.readouterr().err
    run = write_report_json(as_run(recorded()), tmp_path / "run.json")
    assert run_cli("accept", run, "--reason", "x", "--case", "nothing-like-this", "--baseline-dir", tmp_path) == EXIT_USAGE
    assert "no case of" in capsys.readouterr().err
    assert run_cli("accept", run, "--reason", "  ", "--baseline-dir", tmp_path) == EXIT_USAGE
    assert "without a reason" in capsys.readouterr().err
    assert not list(tmp_path.glob("cpu/*.json"))


def test_diff_names_a_case_whose_first_round_ran_cold(tmp_path: Path, capsys) -> None:
    run = as_run(recorded())
    rounds = run.records[ALL_ON].speed.round_seconds
    rounds[0] = 3 * float(sorted(rounds[1:])[len(rounds[1:]) // 2])
    assert run_cli("diff", RECORDED, write_report_json(run, tmp_path / "run.json")) == EXIT_OK
    out = capsys.readouterr().out
    assert "note: 1 case(s) timed a cold first round, their figures leaning on it" in out and ALL_ON in out.split("note: 1 case(s)")[1]
    assert not compare(recorded(), as_run(recorded())).notes  # warm rounds: no note
