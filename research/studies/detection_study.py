"""Figures of the detection pipeline: AUC (combined, PK alone, ES alone) and samples/min per variant, on one run.

    python -m research.studies.detection_study --n 600 --rounds 3
    python -m research.studies.detection_study --model random:llama-3.2-1b --device cuda --context-tokens 512 --no-quantized

The embedded reference model's own answers on context_qa (seed 0, as in the bench case) are labelled
once (a speed profile's random answers cannot label: the embedded model labels for it, as in the bench
case; `--context-tokens` then lengthens each context with more of the world's facts, for the speed at
long contexts, whose answers were labelled on the short ones); every variant calibrates on the same half and is scored on the same held-out half, so the AUC
columns compare like with like. samples/min counts both halves: each sample gets exactly one pass.
The last table times the Jensen-Shannon divergence alone, full vocabulary against top-k, at the
embedded model's vocabulary (100) and at a Llama-sized one, where top-k has something to save.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from harness.models.loading import LoadSpec, default_dtype, load_model, resolve_device
from harness.models.profiles import is_profile
from harness.pipelines.attention import KernelRefused
from harness.pipelines.detection import (
    DetectionSettings,
    Sample,
    build_samples,
    js_divergence,
    run_detection,
    split_samples,
)
from harness.tasks import generate_suite
from harness.tasks.context_qa import lengthened_context

# name -> (attention, quantization, settings): the reference first, then one change at a time, then all on.
VARIANTS = {
    "reference (eager, batch 1, full vocabulary)": ("eager", "none", DetectionSettings()),
    "attention=sdpa (recompute)": ("sdpa", "none", DetectionSettings()),
    "batching=dynamic": ("eager", "none", DetectionSettings(batching="dynamic")),
    "topk=50": ("eager", "none", DetectionSettings(topk=50)),
    "topk=10": ("eager", "none", DetectionSettings(topk=10)),
    "quantization=int8": ("eager", "int8", DetectionSettings()),
    "quantization=nf4": ("eager", "nf4", DetectionSettings()),
    "all on (sdpa, dynamic, topk=50)": ("sdpa", "none", DetectionSettings(batching="dynamic", topk=50)),
    "attention=sdpa_fa (recompute)": ("sdpa_fa", "none", DetectionSettings()),
    "sdpa_fa, batch 1, topk=50": ("sdpa_fa", "none", DetectionSettings(topk=50)),
    "all on (sdpa_fa, dynamic, topk=50)": ("sdpa_fa", "none", DetectionSettings(batching="dynamic", topk=50)),
}


@dataclass
class Row:
    variant: str
    quality: dict[str, float]
    samples_per_minute: float
    counters: dict[str, int]


def lengthened(sample: Sample, tokens: int, tokenizer) -> Sample:
    """The sample with its context lengthened to at least `tokens` prompt tokens (tasks.context_qa)."""
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    return replace(sample, prompt=lengthened_context(sample.prompt, tokens, count, sample.id))


def run_variants(n: int, rounds: int, model: str = "embedded", device: str = "cpu", context_tokens: int = 0,
                 quantized: bool = True, only: tuple[str, ...] = ()) -> Iterator[Row]:
    """Each variant's row as soon as it is measured, so that a cut-off run keeps what it measured; `only`
    names the variants to run (all when empty)."""
    spec = LoadSpec(model, device, default_dtype(device))
    reference = load_model(spec)
    labeller = load_model(replace(spec, source="embedded")) if is_profile(model) else reference
    samples = build_samples(labeller.model, labeller.tokenizer, generate_suite("context_qa", n, seed=0))
    if context_tokens:
        samples = [lengthened(sample, context_tokens, reference.tokenizer) for sample in samples]
        lengths = sorted(len(reference.tokenizer(s.prompt)["input_ids"]) for s in samples)
        print(f"{len(samples)} samples, prompts of {lengths[0]} to {lengths[-1]} tokens", flush=True)
    calibration, held_out = split_samples(samples)
    for name, (attention, quantization, settings) in VARIANTS.items():
        if (quantization != "none" and not quantized) or (only and name not in only):
            continue
        model = reference.model if quantization == "none" else load_model(replace(spec, quantization=quantization)).model
        model.set_attn_implementation(attention)
        try:
            run_detection(model, reference.tokenizer, calibration[:20], held_out[:20], settings)  # warm-up
        except KernelRefused as refused:  # sdpa_fa with padded rows on CUDA: a row that says why, then the next variant
            print(f"| {name} | refused: {str(refused).split(': ', 2)[-1][:160]} |", flush=True)
            continue
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            output = run_detection(model, reference.tokenizer, calibration, held_out, settings)
            seconds.append(time.perf_counter() - start)
        yield Row(name, output.quality, 60 * len(samples) / statistics.median(seconds), output.counters)


def jsd_seconds(vocab: int, rows: int, topk: int | None, device: str = "cpu", repeats: int = 5) -> float:
    """Median time of one js_divergence call over `rows` random logit rows."""
    generator = torch.Generator().manual_seed(0)
    p, q = (torch.randn(rows, vocab, generator=generator).to(device) for _ in range(2))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        js_divergence(p, q, topk)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="context_qa items (half calibrate, half are scored)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--model", default="embedded", help="embedded, a speed profile (random:<arch>) or a model directory")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda runs bf16, cpu fp32")
    parser.add_argument("--context-tokens", type=int, default=0, help="lengthen every context to this many prompt tokens")
    parser.add_argument("--no-quantized", action="store_true", help="leave the int8 and nf4 variants out")
    parser.add_argument("--variants", nargs="+", default=(), choices=tuple(VARIANTS), metavar="VARIANT",
                        help=f"run only these variants: {', '.join(VARIANTS)}")
    args = parser.parse_args()

    print("| variant | AUC | AUC PK alone | AUC ES alone | Pearson r | samples/min | forward passes | JSD terms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    device = resolve_device(args.device)
    for row in run_variants(args.n, args.rounds, args.model, device, args.context_tokens, not args.no_quantized,
                            tuple(args.variants)):
        q, c = row.quality, row.counters
        print(f"| {row.variant} | {q['auc']:.3f} | {q['auc_pk']:.3f} | {q['auc_es']:.3f} | {q['pearson_r']:.3f} "
              f"| {row.samples_per_minute:,.0f} | {c['forward_passes']} | {c['jsd_terms']:,} |", flush=True)

    print("\n| vocabulary | rows | full (ms) | top-50 (ms) |")
    print("| ---: | ---: | ---: | ---: |")
    for vocab in (100, 32000, 128256):
        full, top = jsd_seconds(vocab, 256, None, device), jsd_seconds(vocab, 256, 50, device)
        print(f"| {vocab:,} | 256 | {1e3 * full:.2f} | {1e3 * top:.2f} |")


if __name__ == "__main__":
    main()
