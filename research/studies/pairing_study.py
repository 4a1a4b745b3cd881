"""Does timing the reference and a variant side by side cancel the run-to-run spread of a speedup?

    python -m research.studies.pairing_study --processes 10

The search case's reference and its all-on variant (the pipeline with the cheapest reference, and an A/A
spread of 7-10%) are timed on the embedded model in N fresh processes, one after the other, as N gate runs
would be. Each process times them two ways:

- blocked, as the gate does: the reference's rounds, then the variant's (at least 3, and 10 s of them);
- paired: a reference round, then a variant round, again and again; the speedup is the median of the pairs'
  ratios, so that a change of the machine's speed over the minutes falls on both sides of each ratio.

The table gives each way's spread over the processes (the sd of log speedup), which is what a speed limit
learned from A/A runs has to cover.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys

import torch

from harness.measure.timing import MeasureSettings, perf_counter_timer, time_pairs
from harness.models.loading import LoadSpec, load_model
from harness.pipelines.search import SearchSettings, run_search
from harness.records import Confirmation
from harness.tasks import SUITES, generate_suite
from harness.toggles import variants

# The search bench case's toggles (bench_cases/test_search.py): its reference and its all-on variant.
REFERENCE, ALL_ON = variants({"kv_cache": ("on",), "batching": ("dynamic",), "early_stop": ("on",), "attention": ("sdpa",)},
                             "leave-one-out")[:2]


def measure_once(pairs: int) -> dict:
    """One process's blocked and paired speedups, with the round times they came from."""
    torch.set_num_threads(1)  # as the CPU gate
    loaded = load_model(LoadSpec("embedded", "cpu", "float32"))
    items = generate_suite("math", n=2, seed=0)  # the search bench case's work

    def run(variant: dict[str, str], work=items, rollouts: int = 4) -> None:
        loaded.use_attention(variant)
        run_search(loaded.model, loaded.tokenizer, work, SearchSettings.from_variant(variant, SUITES["math"].max_new_tokens,
                                                                                     num_rollouts=rollouts))

    def blocked_rounds(variant: dict[str, str]) -> list[float]:
        """As the gate times a variant: a first round, then as many as the 10-second budget asks for."""
        first = perf_counter_timer(lambda: run(variant), 1)
        return perf_counter_timer(lambda: run(variant), MeasureSettings(min_time=10.0).rounds_after(first[0]), first)

    for variant in (REFERENCE, ALL_ON):  # the bench case's warm-up
        run(variant, items[:1], rollouts=2)
    reference, variant = blocked_rounds(REFERENCE), blocked_rounds(ALL_ON)
    paired = Confirmation(time_pairs(lambda: run(REFERENCE), lambda: run(ALL_ON), pairs))  # as the gate confirms
    return {"blocked": statistics.median(reference) / statistics.median(variant), "paired": paired.ratio,
            "reference_rounds": reference, "variant_rounds": variant, "pairs": paired.pairs}


def spread(speedups: list[float]) -> float:
    return statistics.stdev(math.log(s) for s in speedups)


def table(results: list[dict]) -> str:
    lines = ["| timing | processes | mean speedup | spread over processes (sd of log speedup) |",
             "| --- | ---: | ---: | ---: |"]
    for way, label in (("blocked", "blocked (the gate today)"), ("paired", "paired rounds")):
        speedups = [r[way] for r in results]
        lines.append(f"| {label} | {len(speedups)} | {statistics.fmean(speedups):.2f}x | {100 * spread(speedups):.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=10, help="fresh processes, each timing both ways")
    parser.add_argument("--pairs", type=int, default=5, help="reference-variant pairs a process times")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one process's figures
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_once(args.pairs)))
        return
    if args.processes < 3:
        parser.error("--processes must be at least 3 to show a spread")
    results = []
    for index in range(args.processes):
        child = subprocess.run([sys.executable, "-m", "research.studies.pairing_study", "--one", "--pairs", str(args.pairs)],
                               capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"process {index + 1}/{args.processes}: blocked {results[-1]['blocked']:.2f}x, "
              f"paired {results[-1]['paired']:.2f}x", flush=True)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
