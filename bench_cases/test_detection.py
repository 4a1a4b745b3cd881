"""Bench case of the detection pipeline: hallucination detection on the model's own context_qa answers."""

import functools
from dataclasses import replace

import pytest

from harness.pipelines.detection import (
    DetectionSettings,
    build_samples,
    run_detection,
    split_samples,
)
from harness.tasks import generate_suite
from harness.tasks.context_qa import lengthened_context

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


@functools.cache
def lengthened(model, tokenizer, counting_tokenizer, tokens: int = 512):
    # The same labelled samples with their contexts lengthened, once per session: every variant scores them.
    count = lambda text: len(counting_tokenizer(text)["input_ids"])  # noqa: E731
    return [replace(s, prompt=lengthened_context(s.prompt, tokens, count, s.id)) for s in labelled(model, tokenizer)]


def run_case(bench, group, samples):
    def pipeline(model, tokenizer, variant, samples=samples):
        calibration, held_out = split_samples(samples)
        return run_detection(model, tokenizer, calibration, held_out, DetectionSettings.from_variant(variant))

    bench.run(group=group, pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, samples[:40]))


def labeller(bench):
    # The session's model, unquantized, labels every variant; a speed profile's random answers cannot, so the
    # embedded model labels those (the tokenizers agree on every character)
    return bench.load("embedded" if bench.speed_profile else None, quantization="none")


@pytest.mark.bench(pipeline="detection", toggles=TOGGLES)
def test_detection(bench):
    labels = labeller(bench)
    run_case(bench, "context_qa", labelled(labels.model, labels.tokenizer))


@pytest.mark.gpu
@pytest.mark.bench(pipeline="detection", toggles={"topk": ["50"], "batching": ["dynamic"], "attention": ["sdpa", "sdpa_fa"]})
def test_detection_long_context(bench):
    # The same samples with 512-token contexts, where attention matters: samples/min with batching=dynamic, and
    # sdpa_fa at batch 1 (its padded batches are refused on CUDA).
    session_model = bench.load()
    if session_model.model.config.max_position_embeddings < 1024:  # the embedded models hold 512 positions
        pytest.skip("512-token contexts need a model of 1,024 positions or more (--bench-model random:llama-3.2-1b)")
    labels = labeller(bench)
    run_case(bench, "context_qa-512", lengthened(labels.model, labels.tokenizer, session_model.tokenizer))
