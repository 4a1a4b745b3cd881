"""The speed gate study: how often the default gate (`pytest --benchmark`) fails when nothing changed, and how often
it catches a variant slowed down on purpose, on the machine that gates.

    python research/studies/speed_gate_study.py run --runs 20 --log research/logs/speed-gate-cpu.jsonl
    python research/studies/speed_gate_study.py run --runs 20 --log research/logs/speed-gate-h100.jsonl \\
        -- --bench-device cuda -k "decode"
    python research/studies/speed_gate_study.py report research/logs/speed-gate-cpu.jsonl [more logs] --out docs/results/X.md

Each run is the whole gate against the committed baseline. Every optimized variant of the baseline gets one level
of slowdown (`--bench-inject slowdown=F@CASE`: after each call of its pipeline a busy wait of F times the call's CPU
time on a CPU, its wall time on a GPU), the levels rotating from run to run, so that over 4 runs each variant gets each
level once. A run is an A/A run for everything the slowdowns leave alone: every case's outputs, quality, counters
and fidelity, every reference's own time, and the speedup of each variant at 0%. A slowed variant is caught when its
verdict fails on speed; a case that fails on anything else, or a variant at 0% that fails, is a false alarm.

Runs already in a log count, so a study can be continued later on the same machine. Extra arguments after `--` go
to pytest.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.gate.policy import DEFAULT_SPEED_FACTOR  # noqa: E402
from research.studies.gate_study import (  # noqa: E402
    DEFAULT_BASELINE,
    _append,
    baseline_speedups,
    logged_runs,
    run_gate,
    slowdown_levels,
)

LEVELS = (0.0, 0.10, 0.25, 0.50)


def run(log: Path, runs: int, pytest_args: list[str], baseline: Path, levels: tuple[float, ...] = LEVELS) -> None:
    variants = [case_id for case_id, speedup in baseline_speedups(baseline).items() if speedup is not None]
    for index in range(len(logged_runs(log)), runs):
        levels_now = slowdown_levels(variants, index, levels)
        specs = [arg for case_id, level in levels_now.items() if level for arg in ("--bench-inject", f"slowdown={level}@{case_id}")]
        summary = run_gate([*specs, *pytest_args], baseline)
        summary["slowdowns"] = {case_id: level for case_id, level in levels_now.items() if case_id in summary["cases"]}
        _append(log, summary)
        print(f"run {index + 1}/{runs}: exit {summary['exit_code']}, {summary['seconds']} s", flush=True)


# --- the tables --------------------------------------------------------------------------------------------


def _speed_failed(case: dict) -> bool:
    return any(f["kind"] == "speed" for f in case["regressed"])


def _observations(runs: list[dict]) -> list[dict]:
    """One row per case and run: its level (None: a reference), whether it failed on speed and on anything else,
    and its log speedup drop against the baseline (first measurement and, where timed, its pairs)."""
    rows = []
    for index, summary in enumerate(runs):
        for case_id, case in summary["cases"].items():
            base, ratio, paired = case.get("baseline_speedup"), case.get("speedup"), case.get("paired_speedup")
            rows.append({
                "run": index, "case": case_id, "level": summary.get("slowdowns", {}).get(case_id),
                "speed": _speed_failed(case),
                "other": sorted({f["kind"] for f in case["regressed"] if f["kind"] != "speed"}),
                "drop": math.log(base / ratio) if base and ratio else None,
                "paired_drop": math.log(base / paired) if base and paired else None,
            })
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def level_table(rows: list[dict]) -> list[str]:
    lines = ["| slowdown | variant-runs | failed on speed | rate | speedup change vs baseline: median (min to max) |",
             "| ---: | ---: | ---: | ---: | --- |"]
    for level in sorted({r["level"] for r in rows if r["level"] is not None}):
        chosen = [r for r in rows if r["level"] == level]
        if not chosen:
            continue
        failed = sum(r["speed"] for r in chosen)
        changes = sorted(math.exp(-r["drop"]) - 1 for r in chosen if r["drop"] is not None)
        spread = (f"{_pct(statistics.median(changes))} ({_pct(changes[0])} to {_pct(changes[-1])})" if changes else "")
        what = "0% (A/A)" if level == 0 else f"{level:.0%}"
        lines.append(f"| {what} | {len(chosen)} | {failed} | {failed / len(chosen):.0%} | {spread} |")
    return lines


def aa_lines(runs: list[dict], rows: list[dict]) -> list[str]:
    """False alarms: any failure of a reference, of a variant at 0%, or of a slowed variant on a rule other than speed."""
    references = [r for r in rows if r["level"] is None]
    alarms = ([r for r in rows if r["level"] is None and (r["speed"] or r["other"])]
              + [r for r in rows if r["level"] == 0 and (r["speed"] or r["other"])]
              + [r for r in rows if r["level"] and r["other"]])
    runs_with_alarm = len({r["run"] for r in alarms})
    aa_drops = [r["drop"] for r in rows if r["level"] == 0 and r["drop"] is not None]
    lines = [f"- runs with any false alarm: **{runs_with_alarm} of {len(runs)}**",
             f"- false alarms: {len(alarms)}" + (": " + ", ".join(f"`{r['case']}` run {r['run'] + 1} "
                                                               f"({'speed' if r['speed'] else ', '.join(r['other'])})"
                                                               for r in alarms) if alarms else ""),
             f"- judged in these runs with nothing changed: {len(references)} reference times, "
             f"{sum(r['level'] == 0 for r in rows)} variant speedups, and the outputs, quality, counters and fidelity of "
             f"all {len(rows)} case-runs (a slowdown changes none of them)"]
    if len(aa_drops) >= 2:
        sd = statistics.stdev(aa_drops)
        worst = max(aa_drops)
        lines.append(f"- A/A spread of a variant's speedup against its baseline: sd {_pct(sd)} (log), the largest drop "
                     f"{_pct(1 - math.exp(-worst))}")
    paired = [r for r in rows if r["paired_drop"] is not None]
    if paired:
        cleared = sum(1 for r in paired if not r["speed"])
        lines.append(f"- first measurements re-timed in pairs: {len(paired)}, of which the pairs cleared {cleared}")
    return lines


FACTORS = (1.15, 1.25, 1.35, 1.5, 2.0)


def drops_table(drops: dict[float, list[float]], counted: str) -> list[str]:
    """Per slowdown level, the share of log speedup drops beyond each of FACTORS."""
    lines = [f"| slowdown | {counted} | " + " | ".join(f"fell by more than x{f:g}" for f in FACTORS) + " |",
             "| ---: | ---: | " + " | ".join("---:" for _ in FACTORS) + " |"]
    for level in sorted(drops):
        values = drops[level]
        cells = [f"{sum(d > math.log(f) for d in values) / len(values):.0%}" for f in FACTORS]
        lines.append(f"| {'0% (A/A)' if level == 0 else f'{level:.0%}'} | {len(values)} | " + " | ".join(cells) + " |")
    return lines


def factor_table(rows: list[dict]) -> list[str]:
    """The factor rule on the first measurement alone against the committed baseline: the share of variant-runs
    whose speedup fell by more than each factor (before the pairs and the another-machine rule)."""
    by_level: dict[float, list[float]] = {}
    for r in rows:
        if r["level"] is not None and r["drop"] is not None:
            by_level.setdefault(r["level"], []).append(r["drop"])
    lines = drops_table(by_level, "variant-runs")
    factor = DEFAULT_SPEED_FACTOR
    alarms = [r for r in rows if r["drop"] is not None and r["drop"] > math.log(factor)]
    timed = [r for r in alarms if r["paired_drop"] is not None]
    kept = [r for r in timed if r["paired_drop"] > math.log(factor)]
    cleared = [r for r in timed if r not in kept]

    def levels(chosen: list[dict]) -> str:
        return ", ".join(f"{r['level']:.0%}" for r in chosen) or "none"

    lines += ["", f"At x{factor:g} (the CPU gate's factor), {len(alarms)} first measurements fell beyond it; {len(timed)} of "
              "them were re-timed in pairs in these runs (the runs re-timed only what their own rules flagged), and the "
              f"pairs confirmed {len(kept)} (slowed by {levels(kept)}) and cleared {len(cleared)} (slowed by {levels(cleared)})."]
    return lines


def within_speed_table(runs: list[dict]) -> list[str]:
    """The factor rule on the first measurement alone, judged within one machine speed: every variant-run against
    each other run of the same variant at 0% whose calibration lies within SAME_SPEED_FACTOR of its own (a
    baseline saved at that speed), the share whose speedup fell by more than each factor."""
    from harness.measure.machine_speed import SAME_SPEED_FACTOR

    def close(a: dict, b: dict) -> bool:
        ca, cb = a["fingerprint"].get("calibration_seconds"), b["fingerprint"].get("calibration_seconds")
        return bool(ca and cb) and 1 / SAME_SPEED_FACTOR <= ca / cb <= SAME_SPEED_FACTOR

    drops: dict[float, list[float]] = {}
    for i, run_i in enumerate(runs):
        for case_id, level in run_i.get("slowdowns", {}).items():
            now = run_i["cases"].get(case_id, {}).get("speedup")
            for j, run_j in enumerate(runs):
                then = run_j["cases"].get(case_id, {}).get("speedup")
                if i != j and run_j.get("slowdowns", {}).get(case_id) == 0 and now and then and close(run_i, run_j):
                    drops.setdefault(level, []).append(math.log(then / now))
    if not drops:
        return ["too few runs at one machine speed"]
    return drops_table(drops, "pairs of runs")


def time_rule_table(runs: list[dict], baseline: Path) -> list[str]:
    """The reference-time rule judged again from the logged rounds at several factors, as the gate judges it: this
    run's judged rounds divided by how much slower this machine ran the calibration, a one-sided Mann-Whitney
    p <= 0.05, and the median's growth beyond the factor. Every reference of every run is an A/A measurement."""
    import json

    from scipy import stats

    cases = json.loads(baseline.read_text(encoding="utf-8"))["cases"]
    growths = []
    for summary in runs:
        for case_id, case in summary["cases"].items():
            entry = cases.get(case_id)
            if not case_id.endswith("|reference]") or entry is None:
                continue
            speed = entry["record"]["speed"]
            before = speed["cpu_seconds"] if speed.get("timer") == "cpu" else speed["round_seconds"]
            now = case["cpu_seconds"] if case.get("timer") == "cpu" else case["round_seconds"]
            ran, saved = summary["fingerprint"].get("calibration_seconds"), entry.get("fingerprint", {}).get("calibration_seconds")
            scale = ran / saved if ran and saved and ran > saved else 1.0
            now = [t / scale for t in now]
            growth = statistics.median(now) / statistics.median(before)
            p = stats.mannwhitneyu(now, before, alternative="greater").pvalue
            growths.append((growth, p <= 0.05 + 1e-9))
    if not growths:
        return ["no reference rounds logged"]
    factors = (1.25, 1.5, 2.0, 2.5)
    lines = [f"The reference-time rule judged again from the logged rounds ({len(growths)} reference-runs, nothing "
             f"changed; before the another-machine rule; the largest growth x{max(g for g, _ in growths):.2f}, the smallest x{min(g for g, _ in growths):.2f}):", "",
             "| time factor | " + " | ".join(f"x{f:g}" for f in factors) + " |",
             "| --- | " + " | ".join("---:" for _ in factors) + " |",
             "| false alarms | " + " | ".join(str(sum(1 for g, sig in growths if sig and g > f)) for f in factors) + " |"]
    return lines


def smallest_caught(rows: list[dict]) -> str:
    tried = sorted({r["level"] for r in rows if r["level"]})
    caught = [level for level in tried if all(r["speed"] for r in rows if r["level"] == level)]
    return f"{min(caught):.0%}" if caught else "none of the levels tried"


def machine_line(runs: list[dict]) -> str:
    fp = runs[-1]["fingerprint"]
    where = fp.get("gpu") or f"{runs[-1]['cpu']} ({fp.get('cpu_arch', '')}, {fp.get('cpu_count')} cores, {fp.get('torch_threads')} torch thread(s))"
    seconds = sorted(r["seconds"] for r in runs)
    return (f"{len(runs)} runs from {runs[0]['at'][:16].replace('T', ' ')} to {runs[-1]['at'][:16].replace('T', ' ')} UTC "
            f"on {where}, torch {fp.get('torch')}, transformers {fp.get('transformers')}; {len(runs[-1]['cases'])} cases "
            f"a run; a run took {statistics.median(seconds):.0f} s (median), {seconds[0]:.0f}-{seconds[-1]:.0f} s")


def report(logs: list[Path], baseline: Path | None = None) -> str:
    out = ["# The speed gate study", "", "Written by `python research/studies/speed_gate_study.py report` from "
           + ", ".join(f"`{log}`" for log in logs) + ".", ""]
    for log in logs:
        runs = logged_runs(log)
        if not runs:
            continue
        rows = _observations(runs)
        given = runs[-1]["pytest_args"]
        args = " ".join(a for i, a in enumerate(given) if a != "--bench-inject" and (i == 0 or given[i - 1] != "--bench-inject"))
        out += [f"## `{log}`", "", machine_line(runs), "",
                f"Each run: `pytest --benchmark` (the default gate) with the slowdowns injected{f' and `{args}`' if args else ''}.", ""]
        out += aa_lines(runs, rows) + [""] + level_table(rows) + [""]
        out += [f"The smallest slowdown caught in every run it was tried: **{smallest_caught(rows)}**.", ""]
        out += ["The factor rule on the first measurement alone against the baseline, at other factors (before the "
                "pairs and the another-machine rule):", ""] + factor_table(rows) + [""]
        calibrations = sorted(r["fingerprint"].get("calibration_seconds") or 0 for r in runs)
        if calibrations[0]:
            out += [f"Within one machine speed (the calibration workload took {calibrations[0] * 1e3:.1f}-"
                    f"{calibrations[-1] * 1e3:.1f} ms over these runs): each variant-run against each other run of "
                    "the same variant at 0% whose calibration lies within x1.25 of its own, as against a baseline "
                    "saved at that speed; the first measurement alone, before the pairs:", ""]
            out += within_speed_table(runs) + [""]
        if baseline is not None and baseline.exists():
            out += time_rule_table(runs, baseline) + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("run", help="gate runs with rotating slowdowns, one log line each")
    command.add_argument("--runs", type=int, default=20)
    command.add_argument("--log", type=Path, required=True)
    command.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    command.add_argument("--levels", default="0,0.1,0.25,0.5", help="the slowdowns that rotate (default 0,0.1,0.25,0.5)")
    command = commands.add_parser("report", help="the tables of the logs, as Markdown")
    command.add_argument("logs", type=Path, nargs="+")
    command.add_argument("--out", type=Path)
    command.add_argument("--baseline", type=Path, help="the baseline the runs were judged against: the time rule judged again")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.log, args.runs, extra, args.baseline, tuple(float(x) for x in args.levels.split(",")))
    else:
        text = report(args.logs, args.baseline)
        if args.out:
            args.out.write_text(text + "\n", encoding="utf-8")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
