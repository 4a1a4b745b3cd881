"""How far the gate's verdicts can be trusted, measured on the machine that gates (the CPU gate, `pytest --benchmark`).

    python -m research.studies.gate_study aa --runs 20
        runs the gate again and again with no change, against the committed baseline, one log line per run
        (research/logs/aa-cpu.jsonl): every case's status, what regressed, its speedup and its baseline's
    python -m research.studies.gate_study calibrate
        learns each variant's speed noise from the A/A runs and stores it with its baseline entry: from then
        on the gate fails a speedup that falls by more than 4 of its standard deviations (never under 10%)
    python -m research.studies.gate_study slowdowns --runs 8
        slows the optimized variants down on purpose, 0%, 10%, 25% or 50% in turn (a case's level rotates
        from run to run), and logs which slowdowns the gate caught (research/logs/slowdowns-cpu.jsonl)
    python -m research.studies.gate_study injections --runs 20
        puts in each regression of INJECTIONS, one gate run each, and logs whether the gate caught it
        (research/logs/injections-cpu.jsonl)
    python -m research.studies.gate_study aa --runs 1 --log research/logs/pairs-cpu.jsonl -- --bench-confirm-all
        A/A runs that time every variant again in pairs as well (about 22 more minutes a run): how the paired
        speedup, which judges a speed regression before it fails, lies against each variant's limit
    python -m research.studies.gate_study report --out docs/gate-study.md
        the tables of the logs, with the dates and the machine, and the A/A spread against that of the runs
        from before a case's rounds were taken in turns (research/logs/blocked/aa-cpu.jsonl)

Runs already in a log count, so a study can be continued later on the same machine. Extra arguments after
`--` go to pytest. The gate runs on one torch thread (half of two cores), so other work on the other core
does not stall it; it is still best run on an otherwise quiet machine.

One piece past 400 lines: the study's subcommands (aa, slowdowns, inject, calibrate, report) share one log format
and its tables; it is research, not part of the gate.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.calibrate import (
    append_run,
    baseline_speedups,
    calibrate,
    logged_runs,
    run_aa,
    run_gate,
    speed_noise,
)
from harness.gate.machine import match_machine
from harness.gate.verdict import GatePolicy, beyond_noise, noise_limit, noise_start
from harness.measure.machine_speed import FINGERPRINT_KEY as CALIBRATION_KEY
from harness.measure.machine_speed import SAME_SPEED_FACTOR
from harness.records import SpeedNoise
from harness.report.markdown import md_cell
from harness.store.results import read_results

KINDS = ("speed", "quality", "counters", "fidelity", "decisions", "model")
LEVELS = (0.0, 0.10, 0.25, 0.50)
DEFAULT_BASELINE = Path("baselines/cpu/embedded-reference.json")
DEFAULT_LOGS = {"aa": Path("research/logs/aa-cpu.jsonl"), "slowdowns": Path("research/logs/slowdowns-cpu.jsonl"),
                "injections": Path("research/logs/injections-cpu.jsonl"), "pairs": Path("research/logs/pairs-cpu.jsonl"),
                # the A/A runs of the gate before a case's rounds were taken in turns, each variant's in one block
                "blocked": Path("research/logs/blocked/aa-cpu.jsonl")}


@dataclass(frozen=True)
class Injection:
    """One regression put in through `--bench-inject`, the cases it must fail, and by which rules."""

    name: str
    specs: tuple[str, ...]
    targets: tuple[str, ...]  # case ids that must regress; only these (and their references) run
    kinds: tuple[str, ...]  # rule kinds that may catch it


_SEARCH_ALL_ON = "search[math|kv_cache=on,batching=dynamic,early_stop=on,attention=sdpa]"
INJECTIONS = (
    Injection("an optimization silently disabled: kv_cache=on runs without its cache", ("disable=kv_cache",),
              (_SEARCH_ALL_ON,), ("counters", "speed")),
    Injection("answers cut by early stopping: 4% of the answers lose their last digits, on 64 aime items",
              ("early-stop-cut=0.04",), ("eval[aime|early_stop=on]",), ("fidelity", "outputs")),
    Injection("top-k flips a decision: the top-k score shrinks 50-fold", ("topk-flip",),
              ("scoring[gpqa|topk=50,batching=dynamic,early_stop=on,kv_cache=on,attention=sdpa]",), ("decisions", "values")),
    Injection("quantization error: the model loads in nf4 where it should be unquantized (fp32)", ("quantize=nf4",),
              (_SEARCH_ALL_ON,), ("model",)),
)


# --- running the gate ------------------------------------------------------------------------------------


def slowdown_levels(case_ids: list[str], run_index: int, levels: tuple[float, ...] = LEVELS) -> dict[str, float]:
    """Each case's slowdown in one run: the levels rotate, so over len(levels) runs every case gets each once."""
    return {case_id: levels[(run_index + position) % len(levels)] for position, case_id in enumerate(sorted(case_ids))}


def run_slowdowns(log: Path, runs: int, pytest_args: list[str], baseline: Path) -> None:
    variants = [case_id for case_id, speedup in baseline_speedups(baseline).items() if speedup is not None]
    for index in range(len(logged_runs(log)), runs):
        levels = slowdown_levels(variants, index)
        specs = [arg for case_id, level in levels.items() if level for arg in ("--bench-inject", f"slowdown={level}@{case_id}")]
        summary = run_gate([*specs, *pytest_args], baseline)
        summary["slowdowns"] = levels
        append_run(log, summary)
        print(f"slowdown run {index + 1}/{runs}: exit {summary['exit_code']}, {summary['seconds']} s", flush=True)


@cache
def node_ids(case_ids: tuple[str, ...]) -> list[str]:
    """The pytest node ids of bench cases, by case id (`eval[math|kv_cache=on]` -> `...test_eval[kv_cache=on-math]`)."""
    listed = subprocess.run([sys.executable, "-m", "pytest", "--benchmark", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--bench-matrix", "leave-one-out"], capture_output=True, text=True).stdout.splitlines()
    nodes = []
    for case_id in case_ids:
        pipeline, rest = case_id.split("[", 1)
        group, label = rest[:-1].split("|", 1)
        found = [n for n in listed if f"test_{pipeline}.py::" in n and n.endswith("]")
                 and n.split("[", 1)[1][:-1] in (label, f"{label}-{group}")]
        if len(found) != 1:
            raise RuntimeError(f"no single bench case collected for {case_id} (found {found})")
        nodes += found
    return nodes


def run_injections(log: Path, runs: int, pytest_args: list[str], baseline: Path) -> None:
    for index in range(len(logged_runs(log)), runs):
        for injection in INJECTIONS:
            specs = [arg for spec in injection.specs for arg in ("--bench-inject", spec)]
            # the targets are collected from the leave-one-out matrix (node_ids): the run takes the same one
            summary = run_gate([*specs, "--bench-rounds", "1", "--bench-matrix", "leave-one-out", *pytest_args,
                                *node_ids(injection.targets)], baseline)
            summary["injection"] = injection.name
            append_run(log, summary)
            print(f"injection run {index + 1}/{runs}, {injection.name}: caught {caught(summary, injection)}", flush=True)


def caught(run: dict, injection: Injection) -> bool:
    return all(any(f["kind"] in injection.kinds for f in run["cases"].get(target, {}).get("regressed", []))
               for target in injection.targets)


# --- learning the speed noise ------------------------------------------------------------------------------


# --- the tables --------------------------------------------------------------------------------------------


def _machine_line(runs: list[dict], what: str) -> str:
    last = runs[-1]
    rounds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
    return (f"{len(runs)} {what} from {runs[0]['at'][:16].replace('T', ' ')} to {last['at'][:16].replace('T', ' ')} UTC on "
            f"{last['cpu']} ({last['fingerprint'].get('cpu_count')} cores, {last['fingerprint'].get('torch_threads')} torch "
            f"thread(s), torch {last['fingerprint'].get('torch')}, transformers {last['fingerprint'].get('transformers')}); "
            f"{len(last['cases'])} cases a run, median run {rounds:.0f} s")


def _raised_alarm(run: dict) -> bool:
    return any(case["regressed"] for case in run["cases"].values())


def aa_table(runs: list[dict]) -> str:
    """Per rule kind: runs with at least one false alarm of that kind, and the cases that raised them."""
    if not runs:
        return "no runs logged yet"
    failing = sum(map(_raised_alarm, runs))
    cleared = [f"`{case_id}` (run {index + 1}: {case['speedup']:.2f}x in its rounds, {case['paired_speedup']:.2f}x in "
               f"its pairs, baseline {case['baseline_speedup']:.2f}x)"
               for index, run in enumerate(runs) for case_id, case in run["cases"].items()
               if case.get("paired_speedup") and not case["regressed"]]
    lines = [_machine_line(runs, "A/A runs"), "", f"runs with any false alarm: {failing}/{len(runs)}", "",
             f"speed alarms of a variant's rounds that its paired re-timing cleared: {len(cleared)}"
             f"{': ' + ', '.join(cleared) if cleared else ''}", "",
             "| rule | runs with a false alarm | rate | cases that raised one (runs) |", "| --- | ---: | ---: | --- |"]
    for kind in KINDS:
        runs_hit, cases_hit = 0, Counter()
        for run in runs:
            hit = [case_id for case_id, case in run["cases"].items() if any(f["kind"] == kind for f in case["regressed"])]
            runs_hit += bool(hit)
            cases_hit.update(hit)
        named = ", ".join(f"`{case_id}` ({n})" for case_id, n in cases_hit.most_common()) or "none"
        named = md_cell(named)
        lines.append(f"| {kind} | {runs_hit}/{len(runs)} | {runs_hit / len(runs):.0%} | {named} |")
    return "\n".join(lines)


def calibrated_at(baseline: Path, cpu: str | None = None) -> str | None:
    """When `calibrate` last stored speed noise in the baseline (None: never), learned on `cpu` where given
    (stores from before the history named their CPU count for any)."""
    history = json.loads(baseline.read_text(encoding="utf-8")).get("history", [])
    saves = [entry["saved_at"] for entry in history
             if entry.get("speed_noise") and (cpu is None or cpu in entry.get("cpus", [cpu]))]
    return saves[-1] if saves else None


def held_out_line(runs: list[dict], since: str | None, stored: dict[str, tuple[SpeedNoise, ...]],
                  saved: dict[str, dict] | None = None) -> str:
    """The runs that the gate judged by the stored speed noise, which was learned from runs before them: taken
    after `calibrate` stored it, on a CPU it was learned on, and where `match_machine` (the gate's own rule) let
    it hold (elsewhere it is set aside)."""
    if since is None:
        return "no speed noise stored yet: every run's speed was judged by the factor rule"
    learned_on = {noise.learned_on for noises in stored.values() for noise in noises}
    later = [run for run in runs if run["at"] > since and run["cpu"] in learned_on]
    judged = [run for run in later if noise_for_run(run, stored, saved)]
    failing = sum(map(_raised_alarm, judged))
    aside = (f"; {len(later) - len(judged)} more whose machine (calibration or CPU generation) set the noise aside"
             if len(judged) < len(later) else "")
    return (f"runs that the gate judged by the speed noise stored at {since[:16].replace('T', ' ')} UTC (learned "
            f"from earlier runs, not from these): {len(judged)}, with a false alarm: {failing}{aside}")


def noise_for_run(run: dict, stored: dict[str, tuple[SpeedNoise, ...]],
                  saved: dict[str, dict] | None = None) -> dict[str, SpeedNoise]:
    """Per case, the stored noise that the gate's own rule (`match_machine`) would judge the logged run by: the
    one learned on its CPU, near its machine speed. `saved` is each case's save fingerprint
    (`ResultSet.fingerprint_of`), which noise stored without its runs' calibration is held against. Cases without
    such noise are left out."""
    fingerprint = {**run["fingerprint"], "cpu": run["cpu"]}
    matched = {case_id: match_machine(noises, fingerprint, (saved or {}).get(case_id, {})).noise
               for case_id, noises in stored.items()}
    return {case_id: noise for case_id, noise in matched.items() if noise is not None}


def noise_table(runs: list[dict], policy: GatePolicy = GatePolicy()) -> str:
    """The speed noise per variant, and how the noise rule fares on each run when learned from the others."""
    if len(runs) < 3:
        return "too few A/A runs for the speed noise"
    noise = speed_noise(runs, "", min_runs=3)
    alarms, checked = [], 0
    for index, run in enumerate(runs):
        others = speed_noise(runs[:index] + runs[index + 1:], "", min_runs=2)
        for case_id, case in run["cases"].items():
            if case_id in others and case["speedup"] and case.get("baseline_speedup"):
                checked += 1
                if beyond_noise(case["baseline_speedup"], case["speedup"], others[case_id], policy):
                    alarms.append(f"`{case_id}` (run {index + 1})")
    lines = [f"Each run judged by the noise rule learned from the other {len(runs) - 1} runs: "
             f"{len(alarms)} false alarm(s) in {checked} variant-runs{': ' + ', '.join(alarms) if alarms else ''}.", "",
             "| variant | A/A spread of the speedup (sd) | mean offset vs the baseline | the gate fails a drop of more than |",
             "| --- | ---: | ---: | ---: |"]
    for case_id, case_noise in sorted(noise.items(), key=lambda item: -item[1].spread):
        limit = 100 * (1 - math.exp(-noise_limit(case_noise, policy) - noise_start(case_noise)))
        lines.append(f"| {md_cell(f'`{case_id}`')} | {100 * case_noise.spread:.1f}% | {100 * (math.exp(-case_noise.center) - 1):+.1f}% | {limit:.0f}% |")
    return "\n".join(lines)


def _log_sd(values: list[float]) -> float:
    return statistics.stdev([math.log(v) for v in values]) if len(values) > 1 else 0.0


def spread_sources_table(runs: list[dict]) -> str:
    """Where a variant's speedup spread comes from: the run-to-run spread of its reference's median time and of
    its own, how far the two move together, and the spread of the rounds within one run.

    A speedup is reference median / variant median, so sd(log speedup)^2 = sd_ref^2 + sd_var^2 - 2 cov. Rounds
    that scatter little within a run, with medians that move from run to run, mean the speed changes from one
    run to the next (the machine over minutes, or the process's own state), not from round to round: more
    rounds of the same kind cannot cancel it.
    """
    if len(runs) < 3:
        return "too few A/A runs to split the spread"
    lines = ["| variant | speedup (sd) | reference median (sd) | variant median (sd) | correlation | rounds within a run (sd) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rows = []
    for case_id, reference in _variant_reference_pairs(runs, "median_seconds"):
        ref = [math.log(run["cases"][reference]["median_seconds"]) for run in runs]
        var = [math.log(run["cases"][case_id]["median_seconds"]) for run in runs]
        speedup, ref_sd, var_sd = statistics.stdev([r - v for r, v in zip(ref, var)]), statistics.stdev(ref), statistics.stdev(var)
        correlation = statistics.correlation(ref, var) if ref_sd and var_sd else 0.0
        within = statistics.median(_log_sd(run["cases"][case_id]["round_seconds"]) for run in runs)
        rows.append((speedup, case_id, ref_sd, var_sd, correlation, within))
    for speedup, case_id, ref_sd, var_sd, correlation, within in sorted(rows, reverse=True):
        lines.append(f"| {md_cell(f'`{case_id}`')} | {100 * speedup:.1f}% | {100 * ref_sd:.1f}% | {100 * var_sd:.1f}% "
                     f"| {correlation:+.2f} | {100 * within:.1f}% |")
    return "\n".join(lines)


# Ways to sum up one side's rounds before the ratio; the gate takes the median.
ESTIMATORS = {"median": statistics.median, "mean": statistics.fmean, "lower quartile": lambda rounds: (
                  statistics.quantiles(rounds, n=4, method="inclusive")[0] if len(rounds) > 1 else rounds[0]),
              "minimum": min}


def estimator_table(runs: list[dict]) -> str:
    """The run-to-run spread of each variant's log speedup when both sides' rounds are summed up otherwise. Where
    the spread comes from whole runs (the machine over minutes) and not from single slow rounds, none of these
    narrows it much: the minimum and the lower quartile leave out slow rounds, the mean keeps every one."""
    pairs = _variant_reference_pairs(runs)
    if len(runs) < 3 or not pairs:
        return "too few A/A runs with their rounds to compare estimators"
    lines = ["| variant | " + " | ".join(ESTIMATORS) + " |", "| --- |" + " ---: |" * len(ESTIMATORS)]
    spreads = {}
    for case_id, reference in pairs:
        spreads[case_id] = [_log_sd([summed(run["cases"][reference]["round_seconds"]) / summed(run["cases"][case_id]["round_seconds"])
                                     for run in runs]) for summed in ESTIMATORS.values()]
    for case_id, row in sorted(spreads.items(), key=lambda item: -item[1][0]):
        lines.append(f"| {md_cell(f'`{case_id}`')} | " + " | ".join(f"{100 * sd:.1f}%" for sd in row) + " |")
    medians = [statistics.median(row[index] for row in spreads.values()) for index in range(len(ESTIMATORS))]
    lines.append(f"| **median of the {len(spreads)} variants** | " + " | ".join(f"**{100 * sd:.1f}%**" for sd in medians) + " |")
    return "\n".join(lines)


def _variant_reference_pairs(runs: list[dict], field: str = "round_seconds") -> list[tuple[str, str]]:
    """Each variant of the first run with its case's reference, where every run logged `field` for both."""
    pairs = []
    for case_id in runs[0]["cases"] if runs else []:
        reference = case_id.split("|")[0] + "|reference]"
        if case_id != reference and all(run["cases"].get(key, {}).get(field)
                                        for run in runs for key in (case_id, reference)):
            pairs.append((case_id, reference))
    return pairs


def speedup_spreads(runs: list[dict]) -> dict[str, float]:
    """Per variant in every run: the standard deviation of its log speedup over the runs."""
    if len(runs) < 3:
        return {}
    return {case_id: _log_sd([run["cases"][case_id]["speedup"] for run in runs]) for case_id, case in runs[0]["cases"].items()
            if case["speedup"] and all(run["cases"].get(case_id, {}).get("speedup") for run in runs)}


def timing_table(blocked: list[dict], turns: list[dict]) -> str:
    """The run-to-run spread of each variant's speedup, timed in blocks (the gate before) and in turns (now)."""
    before, now = speedup_spreads(blocked), speedup_spreads(turns)
    shared = sorted(set(before) & set(now), key=lambda case_id: -before[case_id])
    if not shared:
        return "too few A/A runs of both kinds to compare"
    lines = [f"{len(blocked)} A/A runs in blocks ({blocked[0]['at'][:10]} to {blocked[-1]['at'][:10]}), {len(turns)} in turns "
             f"({turns[0]['at'][:10]} to {turns[-1]['at'][:10]}); the spread is the standard deviation of the log speedup "
             "over a kind's runs", "",
             "| variant | in blocks | in turns |", "| --- | ---: | ---: |"]
    lines += [f"| {md_cell(f'`{case_id}`')} | {100 * before[case_id]:.1f}% | {100 * now[case_id]:.1f}% |" for case_id in shared]
    medians = [statistics.median(spreads[c] for c in shared) for spreads in (before, now)]
    lines.append(f"| **median of the {len(shared)} variants** | **{100 * medians[0]:.1f}%** | **{100 * medians[1]:.1f}%** |")
    return "\n".join(lines)


def paired_table(runs: list[dict], stored: dict[str, tuple[SpeedNoise, ...]], policy: GatePolicy = GatePolicy(),
                 saved: dict[str, dict] | None = None) -> str:
    """Per variant timed again in pairs on A/A runs: its change vs the baseline in its own rounds and in the pairs,
    against the limit its stored noise sets (the pairs only ever judge a regression that the rounds found)."""
    noises = [noise_for_run(run, stored, saved) for run in runs]
    rows = [(case_id, case, index) for index, run in enumerate(runs) for case_id, case in run["cases"].items()
            if case.get("paired_speedup") and case.get("baseline_speedup") and case_id in noises[index]]
    if not rows:
        return "no A/A runs with paired re-timing logged yet"
    beyond = {way: [f"`{case_id}` (run {index + 1})" for case_id, case, index in rows
                    if beyond_noise(case["baseline_speedup"], case[way], noises[index][case_id], policy)]
              for way in ("speedup", "paired_speedup")}
    lines = [_machine_line(runs, "A/A runs with every variant re-timed in pairs"), "",
             f"beyond the variant's limit, in {len(rows)} variant-runs: in its own rounds {len(beyond['speedup'])}"
             f"{' (' + ', '.join(beyond['speedup']) + ')' if beyond['speedup'] else ''}; in its pairs "
             f"{len(beyond['paired_speedup'])}{' (' + ', '.join(beyond['paired_speedup']) + ')' if beyond['paired_speedup'] else ''}", "",
             "| variant | run | change in its rounds | change in the pairs | the gate fails a drop of more than |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for case_id, case, index in sorted(rows):
        noise = noises[index][case_id]
        limit = 100 * (1 - math.exp(-noise_limit(noise, policy) - noise_start(noise)))
        changes = [100 * (case[way] / case["baseline_speedup"] - 1) for way in ("speedup", "paired_speedup")]
        lines.append(f"| {md_cell(f'`{case_id}`')} | {index + 1} | {changes[0]:+.1f}% | {changes[1]:+.1f}% | {limit:.0f}% |")
    return "\n".join(lines)


def caught_on_speed(case_id: str, case: dict, noise: dict[str, SpeedNoise], policy: GatePolicy) -> bool:
    """Whether the gate fails the logged variant-run on speed, judged by the noise stored now (and, where the run
    timed the drop again in pairs, the paired speedup must fall beyond it too); a case without stored noise, by
    what the gate said in that run."""
    if case_id in noise and case["speedup"] and case.get("baseline_speedup"):
        ratios = [case["speedup"]] + ([case["paired_speedup"]] if case.get("paired_speedup") else [])
        return all(beyond_noise(case["baseline_speedup"], ratio, noise[case_id], policy) for ratio in ratios)
    return any(f["kind"] == "speed" for f in case["regressed"])


def slowdown_table(runs: list[dict], stored: dict[str, tuple[SpeedNoise, ...]], policy: GatePolicy = GatePolicy(),
                   saved: dict[str, dict] | None = None) -> str:
    """Per injected slowdown: how many slowed variant-runs the gate fails on speed, each run judged by the stored
    noise of its own CPU."""
    if not runs:
        return "no slowdown runs logged yet"
    noises = [noise_for_run(run, stored, saved) for run in runs]
    lines = [_machine_line(runs, "runs"), "", "| slowdown | variant-runs | failed on speed | rate | missed |",
             "| ---: | ---: | ---: | ---: | --- |"]
    reliable = []
    for level in LEVELS:
        hits, misses = 0, []
        for index, run in enumerate(runs):
            for case_id, case_level in run["slowdowns"].items():
                if case_level != level or case_id not in run["cases"]:
                    continue
                if caught_on_speed(case_id, run["cases"][case_id], noises[index], policy):
                    hits += 1
                else:
                    misses.append(f"`{case_id}` (run {index + 1})")
        total = hits + len(misses)
        if level and total and not misses:
            reliable.append(level)
        missed = (", ".join(misses) or "none") if level else "(no slowdown: these are false alarms)"
        shown = md_cell(missed) if level else f"{hits} false alarm(s)"
        lines.append(f"| {100 * level:.0f}% | {total} | {hits} | {hits / total if total else 0:.0%} | {shown} |")
    # The smallest level from which on every level was caught every time.
    from_on = [level for level in LEVELS[1:] if all(higher in reliable for higher in LEVELS if higher >= level)]
    smallest = f"{100 * min(from_on):.0f}%" if from_on else "none of the levels"
    return "\n".join([*lines, "", f"smallest slowdown caught in every variant-run, and every larger one too: {smallest}",
                      "", _slowdowns_by_pipeline(runs, noises, policy)])


def _slowdowns_by_pipeline(runs: list[dict], noises: list[dict[str, SpeedNoise]], policy: GatePolicy) -> str:
    """The same catches per pipeline: the noise, and so what the gate can see, differs from one to the next."""
    caught: dict[tuple[str, float], list[bool]] = {}
    for run, noise in zip(runs, noises):
        for case_id, level in run["slowdowns"].items():
            if case_id in run["cases"]:
                hit = caught_on_speed(case_id, run["cases"][case_id], noise, policy)
                caught.setdefault((case_id.split("[", 1)[0], level), []).append(hit)
    pipelines = sorted({pipeline for pipeline, _ in caught})
    lines = ["| pipeline | " + " | ".join(f"{100 * level:.0f}%" for level in LEVELS) + " |",
             "| --- |" + " ---: |" * len(LEVELS)]
    for pipeline in pipelines:
        cells = [f"{sum(hits)}/{len(hits)}" for hits in (caught.get((pipeline, level), []) for level in LEVELS)]
        lines.append(f"| {pipeline} | " + " | ".join(cells) + " |")
    return "\n".join(["failed on speed, per pipeline (at 0%: false alarms):", "", *lines])


def injection_table(runs: list[dict]) -> str:
    if not runs:
        return "no injection runs logged yet"
    lines = [_machine_line(runs, "runs"), "", "| regression injected | runs | caught | by | a failure it printed |",
             "| --- | ---: | ---: | --- | --- |"]
    for injection in INJECTIONS:
        mine = [run for run in runs if run.get("injection") == injection.name]
        if not mine:
            continue
        hits = [run for run in mine if caught(run, injection)]
        kinds = Counter(f["kind"] for run in hits for target in injection.targets
                        for f in run["cases"][target]["regressed"])
        example = next((f["message"] for run in hits for f in run["cases"][injection.targets[0]]["regressed"]
                        if f["kind"] in injection.kinds), "")
        by = ", ".join(kind for kind, _ in kinds.most_common())
        lines.append(f"| {injection.name} | {len(mine)} | {len(hits)} | {by} | {md_cell(f'`{injection.targets[0]}`: {example[:220]}')} |")
    return "\n".join(lines)


def calibration_line(runs: list[dict], baseline: Path) -> str:
    """How far the machine's calibration time moved over the runs, against the baseline's: the spread within which
    stored noise is trusted (machine_speed.SAME_SPEED_FACTOR) must cover it."""
    times = [run["fingerprint"].get(CALIBRATION_KEY) for run in runs]
    times = sorted(t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool))
    if not times:
        return "these runs were logged before the calibration workload was kept: no machine speed to show"
    saved = read_results(baseline).fingerprint.get(CALIBRATION_KEY) if baseline.exists() else None
    against = f", the baseline's last save {1e3 * saved:.1f} ms" if isinstance(saved, (int, float)) else ""
    return (f"the calibration workload (`harness/measure/machine_speed.py`) over {len(times)} runs: median "
            f"{1e3 * statistics.median(times):.1f} ms, {1e3 * times[0]:.1f}-{1e3 * times[-1]:.1f} ms (the slowest "
            f"x{times[-1] / times[0]:.2f} the fastest){against}; stored noise holds within x{SAME_SPEED_FACTOR:g} "
            "of the median calibration of the A/A runs it was learned from (of the saving machine's, for noise "
            "stored before that was kept)")


def gate_command(runs: list[dict]) -> str:
    """How the A/A runs ran the gate: the command with the options they were given, and which matrix."""
    options = sorted({" ".join(run.get("pytest_args", [])) for run in runs})
    if len(options) > 1:
        return "`pytest --benchmark` with " + " / ".join(f"`{o}`" if o else "no options" for o in options)
    args = options[0].split() if options else []
    matrix = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--bench-matrix=")),
                  args[args.index("--bench-matrix") + 1] if "--bench-matrix" in args[:-1] else None)
    command = " ".join(["pytest --benchmark", *args])
    return f"`{command}`, " + (f"the {matrix} matrix" if matrix else "the default matrix")


def report(logs: dict[str, Path], baseline: Path = DEFAULT_BASELINE) -> str:
    aa, slowdowns, injections, pairs, blocked = (logged_runs(logs[key]) for key in ("aa", "slowdowns", "injections", "pairs",
                                                                                     "blocked"))
    # the speed noise the baseline holds now, one per CPU (what `calibrate` stored), and each case's save
    committed = read_results(baseline) if baseline.exists() else None
    noise = committed.speed_noise if committed else {}
    saved = {case_id: committed.fingerprint_of(case_id) for case_id in committed.records} if committed else None
    return "\n".join([
        "# How far the gate can be trusted: measured", "",
        f"Written by `python -m research.studies.gate_study report` from `{logs['aa']}`, `{logs['slowdowns']}`, "
        f"`{logs['injections']}` and `{logs['pairs']}`. Every figure below comes from those logged runs of the CPU gate "
        f"({gate_command(aa)}, 1 torch thread, at least 3 rounds and 10 s of them per variant).", "",
        "## A/A: the same code, measured again and again", "",
        "Each run is the whole gate against the committed baseline, with no change. The table counts the findings "
        "each run failed on, by rule, as the gate judged them in that run (cases whose speed noise was not yet "
        "stored are judged by the factor rule).", "",
        aa_table(aa), "",
        held_out_line(aa, calibrated_at(baseline, aa[-1]["cpu"] if aa else None) if baseline.exists() else None,
                      noise, saved), "",
        calibration_line(aa, baseline), "",
        "### Speed noise per variant", "",
        "The noise rule judges a variant's speedup against the spread of its own A/A runs. Judged on runs it did "
        "not learn from (each run against the other runs), it raises this many false alarms:", "",
        noise_table(aa), "",
        "### Where the spread comes from", "",
        "A speedup is the reference's median time over the variant's. The gate times a case's reference and "
        "variants in turns (3 cycles, each variant's rounds spread over them), so the two medians come from the "
        "same minutes. Per variant, over the A/A runs: the spread of the speedup, of each median, how far the two "
        "medians move together, and the median spread of one variant's rounds within a run:", "",
        spread_sources_table(aa), "",
        "The same rounds summed up otherwise before the ratio: the run-to-run spread (sd of the log speedup) with "
        "each side's median (the gate), mean, lower quartile or minimum:", "",
        estimator_table(aa), "",
        "### In turns against in blocks", "",
        f"Before, the gate timed all of the reference's rounds and then all of each variant's (`{logs['blocked']}`, "
        "and docs/gate-study-blocked.md). The same variants' run-to-run spread of speedup, timed each way:", "",
        timing_table(blocked, aa), "",
        "### The paired re-timing", "",
        "A speed regression that a variant's rounds show is timed again in pairs before it fails "
        "(`--bench-confirm-pairs`, 3): a reference round, then the variant's, taking the median of the pairs' "
        "ratios, and it fails only if that speedup is beyond the same limit too. On these A/A runs "
        f"(`{logs['pairs']}`, with `--bench-confirm-all`) every variant was re-timed so, whether its rounds "
        "passed or not:", "",
        paired_table(pairs, noise, saved=saved), "",
        "## Injected slowdowns", "",
        "Each run slows every optimized variant by 0%, 10%, 25% or 50% (`--bench-inject slowdown=F@CASE`: a busy "
        "wait of F times each call of its pipeline); a variant's level rotates from run to run. Each logged speedup "
        f"is judged here by the noise rule with the speed noise `{baseline}` holds now (what `calibrate` stored), "
        "so the table is what the committed gate says of those measurements. A slowed variant is caught when "
        "it fails on speed; at 0% a failure on speed is a false alarm.", "",
        slowdown_table(slowdowns, noise, saved=saved), "",
        "## Injected regressions of quality, work and model", "",
        "Each run puts one regression in through `--bench-inject` and runs only the case it must fail (and its "
        "reference), with one timed round: these rules do not depend on timing.", "",
        injection_table(injections), "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m research.studies.gate_study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (("aa", "run the gate N times with no change"), ("slowdowns", "run the gate with slowed variants"),
                       ("injections", "run the gate once per injected regression, N times")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--runs", type=int, default=20 if name != "slowdowns" else 8, help="total runs wanted in the log")
        command.add_argument("--log", type=Path, default=DEFAULT_LOGS[name])
        command.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    command = commands.add_parser("calibrate", help="store each variant's A/A speed noise with its baseline entry")
    command.add_argument("--log", type=Path, default=DEFAULT_LOGS["aa"])
    command.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    command = commands.add_parser("report", help="the tables of the logs, as Markdown")
    command.add_argument("--out", type=Path, help="write them here (default: print)")
    command.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="whose stored speed noise judges the slowdowns")
    for name, path in DEFAULT_LOGS.items():
        command.add_argument(f"--{name}", type=Path, default=path)
    args = parser.parse_args(argv)
    if args.command in ("aa", "slowdowns", "injections"):
        {"aa": run_aa, "slowdowns": run_slowdowns, "injections": run_injections}[args.command](
            args.log, args.runs, pytest_args, args.baseline)
    elif args.command == "calibrate":
        noise = calibrate(args.log, args.baseline)
        print(f"speed noise of {len(noise)} variants stored in {args.baseline}")
    else:
        text = report({name: getattr(args, name) for name in DEFAULT_LOGS}, args.baseline)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text, encoding="utf-8")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
