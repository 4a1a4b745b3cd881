"""The gate study's bookkeeping: rule kinds, the A/A table, the learned speed noise, the slowdown rotation and
the tables of caught injections, on hand-made logs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from harness.calibrate import logged_runs, metric_kind, speed_noise
from harness.records import SpeedNoise
from research.studies.gate_study import (
    INJECTIONS,
    LEVELS,
    aa_table,
    calibration_line,
    caught,
    estimator_table,
    gate_command,
    held_out_line,
    injection_table,
    noise_table,
    paired_table,
    slowdown_levels,
    slowdown_table,
    spread_sources_table,
    timing_table,
)


def test_metric_kinds() -> None:
    assert [metric_kind(m) for m in ("speedup", "median_seconds", "speed", "accuracy", "auc", "counter:forward_passes",
                                     "counters", "fidelity", "decisions", "model")] == [
        "speed", "speed", "speed", "quality", "quality", "counters", "counters", "fidelity", "decisions", "model"]


def case(kinds: list[str] = (), speedup: float | None = 2.0, baseline_speedup: float | None = 2.0) -> dict:
    return {"status": "regressed" if kinds else "passed", "speedup": speedup, "baseline_speedup": baseline_speedup,
            "median_seconds": 1.0, "rounds": 10,
            "regressed": [{"kind": k, "metric": k, "against": "baseline", "message": f"{k} moved"} for k in kinds]}


def run(at: str, cases: dict[str, dict], **extra) -> dict:
    return {"at": at, "exit_code": 1 if any(c["regressed"] for c in cases.values()) else 0, "seconds": 600.0,
            "cpu": "AMD EPYC", "fingerprint": {"cpu_count": 2, "torch": "2.13.0+cpu", "torch_threads": 1}, "cases": cases,
            **extra}


def test_aa_table_counts_runs_per_rule(tmp_path: Path) -> None:
    log = tmp_path / "aa.jsonl"
    runs = [run("2026-11-23T10:00:00", {"a": case(), "b": case()}),
            run("2026-11-24T10:00:00", {"a": case(["speed"]), "b": case(["speed", "quality"])}),
            run("2026-11-25T10:00:00", {"a": case(["speed"]), "b": case()})]
    log.write_text("".join(json.dumps(r) + "\n" for r in runs))
    table = aa_table(logged_runs(log))
    assert "3 A/A runs from 2026-11-23 10:00 to 2026-11-25 10:00 UTC on AMD EPYC (2 cores, 1 torch thread(s)" in table
    assert "runs with any false alarm: 2/3" in table
    assert "| speed | 2/3 | 67% | `a` (2), `b` (1) |" in table
    assert "| quality | 1/3 | 33% | `b` (1) |" in table
    assert "| counters | 0/3 | 0% | none |" in table
    assert aa_table([]) == "no runs logged yet"


def test_aa_table_names_the_alarms_that_the_pairs_cleared() -> None:
    cleared = {**case(speedup=2.1, baseline_speedup=2.7), "paired_speedup": 2.8}
    table = aa_table([run("2026-12-01T10:00:00", {"a": case()}), run("2026-12-01T11:00:00", {"a": cleared})])
    assert "runs with any false alarm: 0/2" in table
    assert "cleared: 1: `a` (run 2: 2.10x in its rounds, 2.80x in its pairs, baseline 2.70x)" in table


def test_the_calibration_line_gives_the_spread_of_the_machine_speed_over_the_runs(tmp_path: Path) -> None:
    timed = [run(f"2026-12-02T1{i}:00:00", {"a": case()}) for i in range(3)]
    for logged, seconds in zip(timed, (0.018, 0.015, 0.020)):
        logged["fingerprint"]["calibration_seconds"] = seconds
    line = calibration_line([run("2026-12-01T10:00:00", {"a": case()}), *timed], tmp_path / "absent.json")
    assert line.startswith("the calibration workload (`harness/measure/machine_speed.py`) over 3 runs: median 18.0 ms, "
                           "15.0-20.0 ms (the slowest x1.33 the fastest); stored noise holds within x1.25 of the median calibration "
                           "of the A/A runs it was learned from")
    assert calibration_line([run("2026-12-01T10:00:00", {"a": case()})], tmp_path / "absent.json").startswith(
        "these runs were logged before the calibration workload was kept")


def test_held_out_runs_are_those_after_the_noise_was_stored_on_the_cpu_it_was_learned_on() -> None:
    runs = [run("2026-12-01T10:00:00+00:00", {"a": case(["speed"])}),  # before: judged by the factor rule
            run("2026-12-02T10:00:00+00:00", {"a": case()}),
            run("2026-12-02T11:00:00+00:00", {"a": case(["speed"])}),
            {**run("2026-12-02T12:00:00+00:00", {"a": case(["speed"])}), "cpu": "Intel Xeon"}]  # noise set aside
    noise = {"a": (SpeedNoise(center=0.0, spread=0.05, runs=8, measured="2026-12-01, AMD EPYC (2 cores)", cpu="AMD EPYC"),)}
    line = held_out_line(runs, "2026-12-01T21:22:23+00:00", noise)
    assert line.endswith("stored at 2026-12-01 21:22 UTC (learned from earlier runs, not from these): 2, with a false alarm: 1")
    assert "factor rule" in held_out_line(runs, None, {})
    # a run whose calibration was 0.65x the save's had its noise set aside too
    runs[2]["fingerprint"] = {**runs[2]["fingerprint"], "calibration_seconds": 0.0108}
    line = held_out_line(runs, "2026-12-01T21:22:23+00:00", noise, {"a": {"calibration_seconds": 0.0166}})
    assert line.endswith("not from these): 1, with a false alarm: 0; 1 more whose machine (calibration or CPU "
                         "generation) set the noise aside")


def test_speed_noise_is_the_spread_of_log_speedup_drops_over_runs() -> None:
    speedups = [2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 2.02, 1.98]
    runs = [run(f"2026-12-01T0{i}:00:00", {"v": case(speedup=s, baseline_speedup=2.0), "ref": case(speedup=None)})
            for i, s in enumerate(speedups)]
    noise = speed_noise(runs, "here")
    assert set(noise) == {"v"}  # the reference has no speedup
    drops = [math.log(2.0 / s) for s in speedups]
    assert noise["v"].runs == 8 and noise["v"].measured == "here"
    assert math.isclose(noise["v"].spread, (sum((d - sum(drops) / 8) ** 2 for d in drops) / 7) ** 0.5, abs_tol=1e-5)
    assert speed_noise(runs[:7], "here") == {}  # fewer than 8 runs pin nothing down


def test_noise_table_judges_each_run_by_the_others() -> None:
    steady = [run(f"2026-12-01T0{i}:00:00", {"v": case(speedup=2.0 * (1 + 0.01 * (i % 3 - 1)))}) for i in range(9)]
    outlier = run("2026-12-01T09:00:00", {"v": case(speedup=1.0)})
    assert "0 false alarm(s) in 9 variant-runs" in noise_table(steady)
    assert "1 false alarm(s) in 10 variant-runs: `v` (run 10)" in noise_table([*steady, outlier])


def test_spread_sources_split_a_speedups_spread_into_its_two_medians() -> None:
    def timed(median: float, rounds: list[float]) -> dict:
        return {**case(), "median_seconds": median, "round_seconds": rounds}

    # the variant's median moves from run to run while its rounds agree within each run; the reference holds
    # still, so the speedup spreads exactly as the variant's median does
    medians = [1.0, 1.2, 0.9, 1.1]
    runs = [run(f"2026-12-01T0{i}:00:00", {"c[g|reference]": timed(10.0, [10.0, 10.0]),
                                             "c[g|kv_cache=on]": timed(m, [m, m * 1.02, m * 0.98])})
            for i, m in enumerate(medians)]
    table = spread_sources_table(runs)
    spread = 100 * statistics.stdev([math.log(m) for m in medians])
    within = 100 * statistics.stdev([math.log(1.0), math.log(1.02), math.log(0.98)])
    assert f"| `c[g\\|kv_cache=on]` | {spread:.1f}% | 0.0% | {spread:.1f}% | +0.00 | {within:.1f}% |" in table
    assert "reference]`" not in table  # a reference has no speedup to split
    assert spread_sources_table(runs[:2]) == "too few A/A runs to split the spread"


def test_estimator_table_gives_the_speedup_spread_of_each_way_to_sum_up_the_rounds() -> None:
    def timed(rounds: list[float]) -> dict:
        return {**case(), "round_seconds": rounds}

    # one slow round per run in the variant, a different one each time: the median and the minimum ignore it,
    # the mean does not
    runs = [run(f"2026-12-01T0{i}:00:00", {"c[g|reference]": timed([10.0, 10.0, 10.0]),
                                             "c[g|kv_cache=on]": timed([1.0, 1.0, 1.0 + 0.5 * i])}) for i in range(4)]
    table = estimator_table(runs)
    mean_spread = 100 * statistics.stdev([math.log(10.0 / ((3.0 + 0.5 * i) / 3)) for i in range(4)])
    assert "| variant | median | mean | lower quartile | minimum |" in table
    assert f"| `c[g\\|kv_cache=on]` | 0.0% | {mean_spread:.1f}% | 0.0% | 0.0% |" in table
    assert "| **median of the 1 variants** |" in table
    assert estimator_table(runs[:2]) == "too few A/A runs with their rounds to compare estimators"


def test_timing_table_sets_the_speedup_spread_in_blocks_beside_the_one_in_turns() -> None:
    def runs(speedups: list[float]) -> list[dict]:
        return [run(f"2026-12-0{i + 1}T00:00:00", {"c[g|reference]": case(speedup=None),
                                                     "c[g|kv_cache=on]": case(speedup=s)}) for i, s in enumerate(speedups)]

    blocked, turns = [2.0, 2.4, 1.7, 2.2], [2.0, 2.05, 1.98]
    table = timing_table(runs(blocked), runs(turns))
    spreads = [100 * statistics.stdev([math.log(s) for s in values]) for values in (blocked, turns)]
    assert f"| `c[g\\|kv_cache=on]` | {spreads[0]:.1f}% | {spreads[1]:.1f}% |" in table
    assert f"| **median of the 1 variants** | **{spreads[0]:.1f}%** | **{spreads[1]:.1f}%** |" in table
    assert timing_table(runs(blocked), runs(turns)[:2]) == "too few A/A runs of both kinds to compare"


def test_slowdown_levels_rotate_so_every_case_gets_every_level() -> None:
    cases = ["a", "b", "c", "d", "e"]
    seen = {c: {slowdown_levels(cases, i)[c] for i in range(len(LEVELS))} for c in cases}
    assert all(levels == set(LEVELS) for levels in seen.values())
    assert sorted(slowdown_levels(cases, 0).values()) == [0.0, 0.0, 0.1, 0.25, 0.5]


def test_slowdown_table_counts_catches_per_level() -> None:
    runs = [run("2026-12-01T10:00:00", {"a": case(), "b": case(["speed"]), "c": case(["speed"]), "d": case()},
                slowdowns={"a": 0.0, "b": 0.1, "c": 0.25, "d": 0.5}),
            run("2026-12-01T11:00:00", {"a": case(["speed"]), "b": case(), "c": case(["speed"]), "d": case()},
                slowdowns={"a": 0.1, "b": 0.25, "c": 0.5, "d": 0.0})]
    table = slowdown_table(runs, {})  # no stored noise: what the gate said in each run
    assert "| 0% | 2 | 0 | 0% | 0 false alarm(s) |" in table
    assert "| 10% | 2 | 2 | 100% | none |" in table
    assert "| 25% | 2 | 1 | 50% | `b` (run 2) |" in table
    assert "| 50% | 2 | 1 | 50% | `d` (run 1) |" in table
    assert "smallest slowdown caught in every variant-run, and every larger one too: none of the levels" in table
    runs[1]["cases"]["b"] = runs[0]["cases"]["d"] = case(["speed"])
    runs[0]["cases"]["b"] = case()  # a 10% slowdown missed
    assert "smallest slowdown caught in every variant-run, and every larger one too: 25%" in slowdown_table(runs, {})


def test_slowdowns_are_judged_by_the_noise_stored_now() -> None:
    # the gate said nothing in the run, but the stored noise (2% sd: a 10% floor) fails a 20% drop
    slowed = {"speedup": 4.0, "baseline_speedup": 5.0, "regressed": [], "status": "passed"}
    runs = [run("2026-12-01T10:00:00", {"a": slowed}, slowdowns={"a": 0.25})]
    noise = {"a": (SpeedNoise(center=0.0, spread=0.02, runs=10, measured="x"),)}
    assert "| 25% | 1 | 1 | 100% | none |" in slowdown_table(runs, noise)
    assert "| 25% | 1 | 0 | 0% | `a` (run 1) |" in slowdown_table(runs, {})


def test_each_slowdown_run_is_judged_by_the_stored_noise_of_its_own_cpu() -> None:
    # A 20% drop: beyond the AMD EPYC's tight noise (a 10% limit), within the Intel Xeon's loose one (4 x 10%),
    # and the factor rule's where no noise of the run's CPU is stored.
    slowed = {"speedup": 4.0, "baseline_speedup": 5.0, "regressed": [], "status": "passed"}
    stored = {"a": (SpeedNoise(center=0.0, spread=0.10, runs=10, measured="x", cpu="Intel Xeon"),
                    SpeedNoise(center=0.0, spread=0.02, runs=10, measured="x", cpu="AMD EPYC"))}
    runs = [{**run("2026-12-01T10:00:00", {"a": slowed}, slowdowns={"a": 0.25}), "cpu": cpu}
            for cpu in ("AMD EPYC", "Intel Xeon", "Another CPU")]
    assert "| 25% | 3 | 1 | 33% | `a` (run 2), `a` (run 3) |" in slowdown_table(runs, stored)


def test_slowdowns_re_timed_in_pairs_are_caught_only_if_the_pairs_fall_beyond_the_limit_too() -> None:
    noise = {"a": (SpeedNoise(center=0.0, spread=0.02, runs=10, measured="x"),)}  # limit: a 10% drop
    confirmed = {"speedup": 4.0, "paired_speedup": 4.1, "baseline_speedup": 5.0, "regressed": [], "status": "regressed"}
    cleared = {**confirmed, "paired_speedup": 4.9, "status": "passed"}
    assert "| 25% | 1 | 1 | 100% | none |" in slowdown_table([run("2026-12-01T10:00:00", {"a": confirmed}, slowdowns={"a": 0.25})], noise)
    assert "| 25% | 1 | 0 | 0% | `a` (run 1) |" in slowdown_table([run("2026-12-01T10:00:00", {"a": cleared}, slowdowns={"a": 0.25})], noise)


def test_paired_table_sets_each_variants_rounds_and_pairs_against_its_limit() -> None:
    noise = {"a": (SpeedNoise(center=0.0, spread=0.05, runs=20, measured="x"),),  # limit: 1 - exp(-0.2) = 18%
             "b": (SpeedNoise(center=0.0, spread=0.05, runs=20, measured="x"),)}
    runs = [run("2026-12-01T10:00:00", {"a": {**case(speedup=1.5), "paired_speedup": 1.96},  # -25% in its rounds
                                        "b": {**case(speedup=1.9), "paired_speedup": 1.5},
                                        "reference": case(speedup=None, baseline_speedup=None)})]
    table = paired_table(runs, noise)
    assert "in 2 variant-runs: in its own rounds 1 (`a` (run 1)); in its pairs 1 (`b` (run 1))" in table
    assert "| `a` | 1 | -25.0% | -2.0% | 18% |" in table
    assert paired_table([run("2026-12-01T10:00:00", {"a": case()})], noise).startswith("no A/A runs with paired")


def test_injection_table_names_what_caught_each_injection() -> None:
    injection = INJECTIONS[0]
    target = injection.targets[0]
    runs = [run("2026-12-01T10:00:00", {target: case(["counters", "speed"])}, injection=injection.name),
            run("2026-12-01T11:00:00", {target: case([])}, injection=injection.name)]
    assert caught(runs[0], injection) and not caught(runs[1], injection)
    table = injection_table(runs)
    # the case id's pipe is escaped, so that it does not end the Markdown cell
    escaped = target.replace("|", "\\|")
    assert f"| {injection.name} | 2 | 1 | counters, speed | `{escaped}`: counters moved |" in table


def test_calibrate_stores_the_noise_of_runs_judged_against_the_baseline_it_has(tmp_path: Path) -> None:
    import shutil

    from diff_fixtures import ALL_ON, RECORDED, SEARCH_ALL_ON

    from harness.calibrate import baseline_speedups, calibrate
    from harness.store.baseline import load_baseline
    from harness.store.baseline_format import speed_noise_of
    from research.studies.gate_study import calibrated_at

    baseline = tmp_path / "baseline.json"
    shutil.copy(RECORDED, baseline)
    speedups = baseline_speedups(baseline)
    factors = [1.0, 1.02, 0.98, 1.05, 0.95, 1.01, 0.99, 1.03]
    runs = [run(f"2026-12-01T0{i}:00:00",
                {ALL_ON: case(speedup=speedups[ALL_ON] * f, baseline_speedup=speedups[ALL_ON]),
                 # judged against another baseline record: not learned from
                 SEARCH_ALL_ON: case(speedup=speedups[SEARCH_ALL_ON] * f, baseline_speedup=speedups[SEARCH_ALL_ON] * 2)})
            for i, f in enumerate(factors)]
    for logged, calibration in zip(runs, (0.013, 0.012, 0.020, 0.013, 0.014, 0.013, 0.012, 0.013)):
        logged["fingerprint"]["calibration_seconds"] = calibration
    for logged in runs[1:]:  # the first run logged no generation: it counts with the others
        logged["fingerprint"]["cpu_arch"] = "family 25 model 17, avx512"
    another_generation = run("2026-12-01T09:00:00", {ALL_ON: case(speedup=speedups[ALL_ON] / 2, baseline_speedup=speedups[ALL_ON])})
    another_generation["fingerprint"]["cpu_arch"] = "family 25 model 1, avx2"
    log = tmp_path / "aa.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [another_generation, *runs]))
    stored = calibrate(log, baseline)
    assert set(stored) == {ALL_ON}
    loaded = load_baseline(baseline, "cpu", "embedded-reference")
    (noise,) = speed_noise_of(loaded, ALL_ON)
    assert noise.runs == 8 and math.isclose(noise.spread, stored[ALL_ON].spread)
    assert noise.cpu == "AMD EPYC" and noise.arch == "family 25 model 17, avx512"
    assert noise.calibration_seconds == 0.013  # the runs' median: the machine speed it holds near
    assert speed_noise_of(loaded, SEARCH_ALL_ON) == ()
    assert loaded.history[-1]["speed_noise"] is True
    assert calibrated_at(baseline) == loaded.history[-1]["saved_at"]

    # The same variant's noise learned on another CPU is stored beside it; learned again on this one, it replaces it.
    intel = [{**logged, "cpu": "Intel Xeon", "fingerprint": {**logged["fingerprint"], "cpu_arch": "family 6 model 207, avx512"}}
             for logged in runs]
    log.write_text("".join(json.dumps(r) + "\n" for r in intel))
    calibrate(log, baseline)
    log.write_text("".join(json.dumps(r) + "\n" for r in runs))
    calibrate(log, baseline)
    noises = speed_noise_of(load_baseline(baseline, "cpu", "embedded-reference"), ALL_ON)
    assert [(n.cpu, n.arch) for n in noises] == [("Intel Xeon", "family 6 model 207, avx512"),
                                                 ("AMD EPYC", "family 25 model 17, avx512")]
    # each CPU's runs are held out from the time its own noise was stored
    history = load_baseline(baseline, "cpu", "embedded-reference").history
    assert history[-1]["cpus"] == ["AMD EPYC"] and history[-2]["cpus"] == ["Intel Xeon"]
    assert calibrated_at(baseline, "Intel Xeon") == history[-2]["saved_at"]
    assert calibrated_at(baseline, "AMD EPYC") == calibrated_at(baseline) == history[-1]["saved_at"]


def test_every_injection_target_is_a_collected_bench_case() -> None:
    from research.studies.gate_study import node_ids

    targets = tuple(target for injection in INJECTIONS for target in injection.targets)
    nodes = node_ids(targets)
    assert len(nodes) == len(targets) and all(node.startswith("bench_cases/") for node in nodes)


def test_the_report_names_how_the_runs_ran_the_gate() -> None:
    plain = run("2026-12-01T10:00:00", {"a": case()}, pytest_args=[])
    quick = run("2026-12-01T11:00:00", {"a": case()}, pytest_args=["--bench-matrix", "all-on"])
    assert gate_command([plain, plain]) == "`pytest --benchmark`, the default matrix"
    assert gate_command([quick]) == "`pytest --benchmark --bench-matrix all-on`, the all-on matrix"
    assert gate_command([{**quick, "pytest_args": ["--bench-matrix=all-on"]}]).endswith(", the all-on matrix")
    assert gate_command([plain, quick]) == "`pytest --benchmark` with no options / `--bench-matrix all-on`"
