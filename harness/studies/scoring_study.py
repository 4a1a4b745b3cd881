"""Figures of the scoring pipeline: decisions, queries and score shifts per variant, and per-query latency.

    python -m harness.studies.scoring_study --suite gpqa --n 120 --rounds 3

The panel is the embedded reference against itself, its sibling, and its own int8 and nf4 copies.
Every variant (topk full / 100 / 50, batch 1 / 32) runs on the same prompts in one process; the
table shows each pair's decision and mean score, and how far top-k moved that score from the full
vocabulary's. Latency is the median round time over the queries scored, continuations included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

from harness.models import LoadSpec, load_model
from harness.pipelines.scoring import DIFFERENT, PRESETS, QUANTIZED_COPY_EXPECTED, SAME, Pair, ScoringSettings, run_scoring
from harness.tasks import SUITES, generate_suite


@dataclass
class VariantFigures:
    topk: str
    batch_size: int
    decisions: dict[str, str]
    scores: dict[str, float]
    queries: int
    queries_to_decision: int
    ms_per_query: float


def _panel(reference, quantized: bool) -> list[Pair]:
    cpu = dict(device="cpu", dtype="float32")
    panel = [Pair("self", reference.model, SAME),
             Pair("sibling", load_model(LoadSpec("embedded-sibling", **cpu)).model, DIFFERENT)]
    if quantized:
        for kind in ("int8", "nf4"):
            copy = load_model(LoadSpec("embedded", quantization=kind, **cpu)).model
            panel.append(Pair(f"{kind}-copy", copy, QUANTIZED_COPY_EXPECTED))
    return panel


def run_variants(suite: str, n: int, rounds: int, preset: str, quantized: bool = True) -> list[VariantFigures]:
    reference = load_model(LoadSpec("embedded", "cpu", "float32"))
    panel = _panel(reference, quantized)
    prompts = [item.prompt for item in generate_suite(suite, n, seed=0)]
    figures = []
    for topk in ("full", "100", "50"):
        for batch_size in (1, 32):
            settings = ScoringSettings(topk=None if topk == "full" else int(topk), batch_size=batch_size,
                                       early_stop=True, kv_cache=True, preset=PRESETS[preset])
            seconds = []
            for _ in range(rounds):
                start = time.perf_counter()
                output = run_scoring(reference.model, reference.tokenizer, panel, prompts, settings)
                seconds.append(time.perf_counter() - start)
            figures.append(VariantFigures(
                topk, batch_size, dict(zip(output.item_ids, output.item_outputs)),
                {name[6:-1]: value for name, value in output.quality.items() if name.startswith("score[")},
                output.counters["queries"], output.counters["queries_to_decision"],
                1000 * statistics.median(seconds) / output.counters["queries"],
            ))
            print(table(figures[-1:]).splitlines()[-1], flush=True)
    return figures


def table(figures: list[VariantFigures]) -> str:
    """Scores are compared with topk=full at the same batch size: the same queries, so any shift is top-k's."""
    full_at = {f.batch_size: f for f in figures if f.topk == "full"}
    pairs = list(figures[0].decisions)
    header = "| topk | batch | " + " | ".join(f"{p}: decision, score (vs full)" for p in pairs) + " | queries (to decision) | ms/query |"
    lines = [header, "|" + " --- |" * (len(pairs) + 4)]
    for f in figures:
        full = full_at.get(f.batch_size, f)
        cells = [f"{f.decisions[p]}, {f.scores[p]:.4f} ({f.scores[p] - full.scores[p]:+.4f})" for p in pairs]
        lines.append(f"| {f.topk} | {f.batch_size} | " + " | ".join(cells) + f" | {f.queries} ({f.queries_to_decision}) | {f.ms_per_query:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="gpqa", choices=tuple(SUITES))
    parser.add_argument("--n", type=int, default=120, help="prompts (the preset's n_max caps the queries)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="quick", choices=tuple(PRESETS))
    parser.add_argument("--no-quantized", action="store_true", help="leave the int8 and nf4 copies out of the panel")
    args = parser.parse_args(argv)
    figures = run_variants(args.suite, args.n, args.rounds, args.preset, quantized=not args.no_quantized)
    print()
    print(table(figures))


if __name__ == "__main__":
    main()
