"""Bench case of the detection pipeline: hallucination detection on the model's own context_qa answers."""

import functools

import pytest

from harness.pipelines.detection import (
    DetectionSettings,
    build_samples,
    run_detection,
    split_samples,
)
from harness.tasks import generate_suite

TOGGLES = {
    "topk": ["50"],
    "batching": ["dynamic"],
    # ES through the recompute path; sdpa_fa: PyTorch's FlashAttention kernel forced (on CUDA it refuses padded rows)
    "attention": ["sdpa", "flash_attention_2", "sdpa_fa"],
    # "quantization": ["nf4"] on GPU; on CPU bitsandbytes is slow (nf4 costs this detector 1.5 AUC points, within
    # quantization's 2-point budget: python -m research.studies.detection_study quantization).
}


@functools.cache
def labelled(model, tokenizer):
    # The reference model's answers, labelled once per session: every variant scores the same samples.
    # 400 items, 200 to select heads and layers on and 200 held out: the default gate's time; the selection gets noisy
    # with fewer (python -m research.studies.detection_study).
    return build_samples(model, tokenizer, generate_suite("context_qa", n=400, seed=0))


@pytest.mark.bench(pipeline="detection", toggles=TOGGLES)
def test_detection(bench):
    # The session's model, unquantized, labels every variant; a speed profile's random answers cannot, so the
    # embedded model labels those (the tokenizers agree on every character)
    labeller = bench.load("embedded" if bench.speed_profile else None, quantization="none")
    samples = labelled(labeller.model, labeller.tokenizer)

    def pipeline(model, tokenizer, variant, samples=samples):
        calibration, held_out = split_samples(samples)
        return run_detection(model, tokenizer, calibration, held_out, DetectionSettings.from_variant(variant))

    bench.run(group="context_qa", pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, samples[:40]))
