"""Figures of the detection pipeline: AUC (combined, PK alone, ES alone) and samples/min per variant, on one run.

    python -m harness.studies.detection_study --n 600 --rounds 3

The embedded reference model's own answers on context_qa (seed 0, as in the bench case) are labelled
once; every variant calibrates on the same half and is scored on the same held-out half, so the AUC
columns compare like with like. samples/min counts both halves: each sample gets exactly one pass.
The last table times the Jensen-Shannon divergence alone, full vocabulary against top-k, at the
embedded model's vocabulary (100) and at a Llama-sized one, where top-k has something to save.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from harness.models import LoadSpec, load_model
from harness.pipelines.detection import DetectionSettings, build_samples, js_divergence, run_detection, split_samples
from harness.tasks import generate_suite

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
}


@dataclass
class Row:
    variant: str
    quality: dict[str, float]
    samples_per_minute: float
    counters: dict[str, int]


def run_variants(n: int, rounds: int) -> list[Row]:
    cpu = dict(device="cpu", dtype="float32")
    reference = load_model(LoadSpec("embedded", **cpu))
    samples = build_samples(reference.model, reference.tokenizer, generate_suite("context_qa", n, seed=0))
    calibration, held_out = split_samples(samples)
    rows = []
    for name, (attention, quantization, settings) in VARIANTS.items():
        model = reference.model if quantization == "none" else load_model(LoadSpec("embedded", quantization=quantization, **cpu)).model
        model.set_attn_implementation(attention)
        run_detection(model, reference.tokenizer, calibration[:20], held_out[:20], settings)  # warm-up
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            output = run_detection(model, reference.tokenizer, calibration, held_out, settings)
            seconds.append(time.perf_counter() - start)
        rows.append(Row(name, output.quality, 60 * len(samples) / statistics.median(seconds), output.counters))
    return rows


def jsd_seconds(vocab: int, rows: int, topk: int | None, repeats: int = 5) -> float:
    """Median time of one js_divergence call over `rows` random logit rows."""
    generator = torch.Generator().manual_seed(0)
    p, q = torch.randn(rows, vocab, generator=generator), torch.randn(rows, vocab, generator=generator)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        js_divergence(p, q, topk)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="context_qa items (half calibrate, half are scored)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    args = parser.parse_args()

    print("| variant | AUC | AUC PK alone | AUC ES alone | Pearson r | samples/min | forward passes | JSD terms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in run_variants(args.n, args.rounds):
        q, c = row.quality, row.counters
        print(f"| {row.variant} | {q['auc']:.3f} | {q['auc_pk']:.3f} | {q['auc_es']:.3f} | {q['pearson_r']:.3f} "
              f"| {row.samples_per_minute:,.0f} | {c['forward_passes']} | {c['jsd_terms']:,} |")

    print("\n| vocabulary | rows | full (ms) | top-50 (ms) |")
    print("| ---: | ---: | ---: | ---: |")
    for vocab in (100, 32000, 128256):
        full, top = jsd_seconds(vocab, 256, None), jsd_seconds(vocab, 256, 50)
        print(f"| {vocab:,} | 256 | {1e3 * full:.2f} | {1e3 * top:.2f} |")


if __name__ == "__main__":
    main()
