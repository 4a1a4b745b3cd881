"""Figures of the scoring pipeline: decisions, queries and score shifts per variant, and per-query latency.

    python -m harness.studies.scoring_study --suite gpqa --n 120 --rounds 3
    python -m harness.studies.scoring_study --model random:llama-3.2-1b --device cuda --topk full 100 --batch 32

The panel is the reference against itself, the embedded sibling (embedded reference only: a speed
profile's vocabulary is not the sibling's), and the reference's own int8 and nf4 copies.
Every variant (topk full / 100 / 50, batch 1 / 32) runs on the same prompts in one process; the
table shows each pair's decision and mean score, and how far top-k moved that score from the full
vocabulary's. Latency is the median round time over the queries scored, continuations included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace

from harness.models import LoadSpec, default_dtype, load_model, resolve_device, weights_summary
from harness.profiles import is_profile
from harness.pipelines.scoring import DIFFERENT, PRESETS, QUANTIZED_COPY_EXPECTED, SAME, Pair, ScoringSettings, run_scoring
from harness.tasks import SUITES, generate_suite


@dataclass
class VariantFigures:
    topk: str
    batch_size: int
    compiled: bool
    decisions: dict[str, str]
    scores: dict[str, float]
    queries: int
    queries_to_decision: int
    ms_per_query: float


def _panel(reference, quantized: bool) -> list[Pair]:
    spec = reference.spec
    panel = [Pair("self", reference.model, SAME)]
    if spec.source == "embedded":
        panel.append(Pair("sibling", load_model(replace(spec, source="embedded-sibling")).model, DIFFERENT))
    if quantized:
        for kind in ("int8", "nf4"):
            copy = load_model(replace(spec, quantization=kind)).model
            # random weights exaggerate quantization error: no decision is expected of a profile's copies
            panel.append(Pair(f"{kind}-copy", copy, None if is_profile(spec.source) else QUANTIZED_COPY_EXPECTED))
    return panel


def run_variants(suite: str, n: int, rounds: int, preset: str, quantized: bool = True, model: str = "embedded",
                 device: str = "cpu", topks: tuple[str, ...] = ("full", "100", "50"),
                 batch_sizes: tuple[int, ...] = (1, 32), compiled: bool = False) -> list[VariantFigures]:
    reference = load_model(LoadSpec(model, device, default_dtype(device), compile=compiled))
    panel = _panel(reference, quantized)
    print("weights: " + ", ".join(f"{pair.name} {weights_summary(pair.candidate)['bytes'] / 1e6:,.2f} MB" for pair in panel), flush=True)
    prompts = [item.prompt for item in generate_suite(suite, n, seed=0)]
    figures = []
    for topk in topks:
        for batch_size in batch_sizes:
            settings = ScoringSettings(topk=None if topk == "full" else int(topk), batch_size=batch_size,
                                       early_stop=True, kv_cache=True, compile=compiled, preset=PRESETS[preset])
            # warm-up; compiled, on every prompt, so that each shape the rounds meet is compiled before them
            run_scoring(reference.model, reference.tokenizer, panel, prompts if compiled else prompts[:batch_size], settings)
            seconds = []
            for _ in range(rounds):
                start = time.perf_counter()
                # the decisions are host values: the GPU's work is done when run_scoring returns
                output = run_scoring(reference.model, reference.tokenizer, panel, prompts, settings)
                seconds.append(time.perf_counter() - start)
            figures.append(VariantFigures(
                topk, batch_size, compiled, dict(zip(output.item_ids, output.item_outputs)),
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
    header = "| topk | batch | compile | " + " | ".join(f"{p}: decision, score (vs full)" for p in pairs) + " | queries (to decision) | ms/query |"
    lines = [header, "|" + " --- |" * (len(pairs) + 5)]
    for f in figures:
        full = full_at.get(f.batch_size, f)
        cells = [f"{f.decisions[p]}, {f.scores[p]:.4f} ({f.scores[p] - full.scores[p]:+.4f})" for p in pairs]
        lines.append(f"| {f.topk} | {f.batch_size} | {'on' if f.compiled else 'off'} | " + " | ".join(cells) + f" | {f.queries} ({f.queries_to_decision}) | {f.ms_per_query:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="gpqa", choices=tuple(SUITES))
    parser.add_argument("--n", type=int, default=120, help="prompts (the preset's n_max caps the queries)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="quick", choices=tuple(PRESETS))
    parser.add_argument("--no-quantized", action="store_true", help="leave the int8 and nf4 copies out of the panel")
    parser.add_argument("--model", default="embedded", help="embedded, a speed profile (random:<arch>) or a model directory")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda runs bf16, cpu fp32")
    parser.add_argument("--topk", nargs="+", default=["full", "100", "50"], help="top-k values to run (full = none)")
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 32], help="batch sizes to run")
    parser.add_argument("--compile", action="store_true",
                        help="continuations by the static-cache loop compiled into CUDA graphs (compile=on; a GPU)")
    args = parser.parse_args(argv)
    figures = run_variants(args.suite, args.n, args.rounds, args.preset, quantized=not args.no_quantized,
                           model=args.model, device=resolve_device(args.device), topks=tuple(args.topk),
                           batch_sizes=tuple(args.batch), compiled=args.compile)
    print()
    print(table(figures))


if __name__ == "__main__":
    main()
