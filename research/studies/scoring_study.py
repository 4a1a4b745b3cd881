"""Figures of the scoring pipeline: decisions, queries and score shifts per variant, and per-query latency.

    python -m research.studies.scoring_study --suite gpqa --n 120 --rounds 3
    python -m research.studies.scoring_study --model random:llama-3.2-1b --device cuda --topk full 100 --batching dynamic

The panel is the reference against itself, a separately loaded twin, its copy in the other precision
(bfloat16 on CPU, float32 on GPU), the embedded sibling (embedded reference only: a speed profile's
vocabulary is not the sibling's), and the reference's own int8 and nf4 copies.
Every variant (topk full / 50 / 30 / 10, batching 1 / dynamic) runs on the same prompts in one process;
the table shows each pair's decision and value (its mean score over the first n_min prompts, what the
gate compares), and how far top-k moved that value from the full vocabulary's. Latency is the median
round time over the queries scored, continuations included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace

from harness.models.loading import (
    LoadSpec,
    default_dtype,
    load_model,
    resolve_device,
    weights_summary,
)
from harness.models.profiles import is_profile
from harness.pipelines.scoring import (
    DIFFERENT,
    PRESETS,
    QUANTIZED_COPY_EXPECTED,
    SAME,
    Pair,
    ScoringSettings,
    run_scoring,
)
from harness.tasks import SUITES, generate_suite


@dataclass
class VariantFigures:
    topk: str
    batching: str
    compiled: bool
    decisions: dict[str, str]
    values: dict[str, float]  # per pair: the mean score over the first n_min prompts
    queries: int
    queries_to_decision: int
    ms_per_query: float


def _panel(reference, quantized: bool) -> list[Pair]:
    spec = reference.spec
    other_dtype = "bfloat16" if spec.dtype == "float32" else "float32"
    panel = [Pair("self", reference.model, SAME), Pair("twin", load_model(replace(spec, copy=True)).model, SAME),
             Pair(f"{other_dtype}-copy", load_model(replace(spec, dtype=other_dtype)).model,
                  None if is_profile(spec.source) else SAME)]
    if spec.source == "embedded":
        panel.append(Pair("sibling", load_model(replace(spec, source="embedded-sibling")).model, DIFFERENT))
    if quantized:
        for kind in ("int8", "nf4"):
            copy = load_model(replace(spec, quantization=kind)).model
            # random weights exaggerate quantization error: no decision is expected of a profile's copies
            panel.append(Pair(f"{kind}-copy", copy, None if is_profile(spec.source) else QUANTIZED_COPY_EXPECTED))
    return panel


def run_variants(suite: str, n: int, rounds: int, preset: str, quantized: bool = True, model: str = "embedded",
                 device: str = "cpu", topks: tuple[str, ...] = ("full", "50", "30", "10"),
                 batchings: tuple[str, ...] = ("1", "dynamic"), compiled: bool = False) -> list[VariantFigures]:
    reference = load_model(LoadSpec(model, device, default_dtype(device), compile=compiled))
    panel = _panel(reference, quantized)
    print("weights: " + ", ".join(f"{pair.name} {weights_summary(pair.candidate)['bytes'] / 1e6:,.2f} MB" for pair in panel), flush=True)
    prompts = [item.prompt for item in generate_suite(suite, n, seed=0)]
    figures = []
    for topk in topks:
        for batching in batchings:
            settings = ScoringSettings(topk=None if topk == "full" else int(topk), batching=batching,
                                       early_stop=True, kv_cache=True, compile=compiled, preset=PRESETS[preset])
            # warm-up; compiled, on every prompt, so that each shape the rounds meet is compiled before them
            run_scoring(reference.model, reference.tokenizer, panel, prompts if compiled else prompts[:8], settings)
            seconds = []
            for _ in range(rounds):
                start = time.perf_counter()
                # the decisions are host values: the GPU's work is done when run_scoring returns
                output = run_scoring(reference.model, reference.tokenizer, panel, prompts, settings)
                seconds.append(time.perf_counter() - start)
            figures.append(VariantFigures(
                topk, batching, compiled, dict(zip(output.item_ids, output.item_outputs)),
                dict(zip(output.item_ids, output.item_values)),
                output.counters["queries"], output.counters["queries_to_decision"],
                1000 * statistics.median(seconds) / output.counters["queries"],
            ))
            print(table(figures[-1:]).splitlines()[-1], flush=True)
    return figures


def table(figures: list[VariantFigures]) -> str:
    """Values are compared with topk=full at the same batching: the same queries, so any shift is top-k's."""
    full_at = {f.batching: f for f in figures if f.topk == "full"}
    pairs = list(figures[0].decisions)
    header = "| topk | batching | compile | " + " | ".join(f"{p}: decision, value (vs full)" for p in pairs) + " | queries (to decision) | ms/query |"
    lines = [header, "|" + " --- |" * (len(pairs) + 5)]
    for f in figures:
        full = full_at.get(f.batching, f)
        cells = [f"{f.decisions[p]}, {f.values[p]:.4f} ({f.values[p] - full.values[p]:+.4f})" for p in pairs]
        lines.append(f"| {f.topk} | {f.batching} | {'on' if f.compiled else 'off'} | " + " | ".join(cells) + f" | {f.queries} ({f.queries_to_decision}) | {f.ms_per_query:.2f} |")
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
    parser.add_argument("--topk", nargs="+", default=["full", "50", "30", "10"],
                        help="top-k values to run (full = none), each below the model's vocabulary size")
    parser.add_argument("--batching", nargs="+", default=["1", "dynamic"], choices=("1", "static8", "dynamic"),
                        help="batchings to run")
    parser.add_argument("--compile", action="store_true",
                        help="continuations by the static-cache loop compiled into CUDA graphs (compile=on; a GPU)")
    args = parser.parse_args(argv)
    figures = run_variants(args.suite, args.n, args.rounds, args.preset, quantized=not args.no_quantized,
                           model=args.model, device=resolve_device(args.device), topks=tuple(args.topk),
                           batchings=tuple(args.batching), compiled=args.compile)
    print()
    print(table(figures))


if __name__ == "__main__":
    main()
