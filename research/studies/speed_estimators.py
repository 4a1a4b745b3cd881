"""Which summary of a case's rounds gives the steadiest speedup: the gate study's logged rounds judged again offline.

    python research/studies/speed_estimators.py research/logs/speed-gate-cpu.jsonl baselines/cpu/embedded-reference.json

For every optimized variant and run: log(baseline speedup / run speedup), each speedup the ratio of the reference's
summary to the variant's summary of their judged rounds (CPU time on a CPU), for the median, the minimum and the
mean. Printed per slowdown level: the spread at 0% (false alarms live there) and the smallest drop at each level
(misses live there).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ESTIMATORS = {"median": statistics.median, "min": min, "mean": statistics.fmean, "cycle-paired": None}


def speedup(name: str, reference: list[float], variant: list[float]) -> float:
    """The reference's summary over the variant's; "cycle-paired": the median of round k's ratio over the cycles, the
    rounds of one cycle taken seconds apart (with as many rounds a side as cycles)."""
    if name == "cycle-paired":
        return statistics.median(r / v for r, v in zip(reference, variant))
    summary = ESTIMATORS[name]
    return summary(reference) / summary(variant)


def judged(speed: dict) -> list[float]:
    return speed["cpu_seconds"] if speed.get("timer") == "cpu" else speed["round_seconds"]


def main(log: Path, baseline: Path) -> None:
    cases = json.loads(baseline.read_text())["cases"]
    base = {case_id: judged(entry["record"]["speed"]) for case_id, entry in cases.items()}
    refs = {case_id: entry["record"]["case_id"].rsplit("|", 1)[0] + "|reference]" for case_id, entry in cases.items()}
    runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for name in ESTIMATORS:
        drops: dict[float, list[float]] = {}
        for run in runs:
            for case_id, level in run.get("slowdowns", {}).items():
                ref = refs[case_id]
                if ref not in run["cases"] or case_id not in base:
                    continue
                now_ref = run["cases"][ref].get("cpu_seconds") or run["cases"][ref]["round_seconds"]
                now_var = run["cases"][case_id].get("cpu_seconds") or run["cases"][case_id]["round_seconds"]
                then = speedup(name, base[ref], base[case_id])
                now = speedup(name, now_ref, now_var)
                drops.setdefault(level, []).append(math.log(then / now))
        parts = []
        for level in sorted(drops):
            values = drops[level]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            parts.append(f"{level:.0%}: n={len(values)} mean {100 * statistics.fmean(values):+.1f}% sd {100 * sd:.1f}% "
                         f"min {100 * min(values):+.1f}% max {100 * max(values):+.1f}%")
        print(f"{name:6s} | " + " | ".join(parts))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
