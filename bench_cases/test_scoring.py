"""Bench cases of the scoring pipeline: is a candidate the same model as the reference? SAME / DIFFERENT per pair."""

from dataclasses import replace

import pytest

from harness.pipelines.scoring import (
    DIFFERENT,
    QUICK,
    SAME,
    Pair,
    ScoringSettings,
    run_scoring,
)
from harness.tasks import generate_suite
from harness.tasks.context_qa import lengthened_context

TOGGLES = {
    "topk": ["50", "30"],  # of the embedded model's 100 tokens (k=100 would keep them all, and is refused)
    "batching": ["dynamic"],  # length-sorted buckets under a token budget
    "early_stop": ["on"],  # stop a pair at its first decision
    "kv_cache": ["on"],  # the reference's continuations
    "attention": ["sdpa", "sdpa_fa"],  # sdpa_fa: PyTorch's FlashAttention kernel forced (on CUDA it refuses padded rows)
}
ALL_ON = {"topk": "50", "batching": "dynamic", "early_stop": "on", "kv_cache": "on"}


def panel(bench, model):
    """Pairs whose right decision is known without scoring them.

    Add your own: Pair("mine", bench.load("path/to/model").model, DIFFERENT).
    """
    other_dtype = "bfloat16" if bench.device == "cpu" else "float32"  # the session runs float32 on CPU, bfloat16 on GPU
    pairs = [
        Pair("self", model, SAME),
        Pair("twin", bench.load(copy=True).model, SAME),  # the same weights loaded again: other module objects
        # the same weights in another precision: a deployment change, not another model
        Pair(f"{other_dtype} copy", bench.load(dtype=other_dtype).model, None if bench.speed_profile else SAME),
    ]
    if not bench.speed_profile:  # the sibling shares the embedded model's vocabulary, not a profile's
        pairs.append(Pair("sibling", bench.load("embedded-sibling").model, DIFFERENT))  # trained apart
    if bench.device == "cuda":  # 4-bit is slow on CPU; random weights exaggerate its error: no expected decision
        pairs.append(Pair("nf4 copy", bench.load(quantization="nf4").model, None if bench.speed_profile else SAME))
    return pairs


def run_case(bench, group, fixed=None):
    # gpqa prompts separate the sibling; on aime prompts both models are near-deterministic and agree.
    # Every pair decides within 16 queries (an nf4 copy on CPU too), which bound the variants that run to the end.
    prompts = [item.prompt for item in generate_suite("gpqa", n=16, seed=0)]

    def pipeline(model, tokenizer, variant):
        settings = ScoringSettings.from_variant({**(fixed or {}), **variant})
        return run_scoring(model, tokenizer, panel(bench, model), prompts, settings)

    # the warm-up loads the panel's models, so that no timed round includes a load (on a GPU, and with compile=on,
    # the plugin warms up with the whole pipeline instead)
    bench.run(group=group, pipeline=pipeline, warm_up=lambda model, tokenizer, variant: panel(bench, model))


@pytest.mark.bench(pipeline="scoring", toggles=TOGGLES)
def test_scoring(bench):
    run_case(bench, "gpqa")


@pytest.mark.gpu
@pytest.mark.bench(pipeline="scoring", toggles={"compile": ["on"]})
def test_scoring_compiled(bench):
    # all on, with the continuations decoded by the compiled static-cache loop against generate's
    run_case(bench, "gpqa-compiled", fixed=ALL_ON)


@pytest.mark.gpu
@pytest.mark.bench(pipeline="scoring", toggles={"compile": ["on"]})
def test_scoring_batch32(bench):
    # Milliseconds a query at a batch of 32: no decision before 32 queries, so the first window of dynamic batching
    # holds 32 prompts, and a token budget that fits them makes it one batch. One candidate, the twin, so that each
    # query costs what comparing two models does: the reference's continuation and teacher forcing, the candidate's.
    prompts = [item.prompt for item in generate_suite("gpqa", n=64, seed=0)]
    preset = replace(QUICK, name="batch32", n_min=32, n_max=64)

    def pipeline(model, tokenizer, variant):
        settings = ScoringSettings.from_variant({**ALL_ON, **variant}, preset=preset, token_budget=1 << 16)
        return run_scoring(model, tokenizer, pairs(model), prompts, settings)

    def pairs(model):
        return [Pair("twin", bench.load(copy=True).model, SAME)]

    bench.run(group="gpqa-batch32", pipeline=pipeline)  # a GPU case warms up with the whole pipeline


@pytest.mark.gpu
@pytest.mark.bench(pipeline="scoring", toggles={"attention": ["sdpa", "sdpa_fa"]})
@pytest.mark.parametrize("tokens", [512, 2048])
def test_scoring_long_context(bench, tokens):
    # Attention where it matters: context_qa prompts lengthened to exactly `tokens` (the speed profiles' character
    # tokenizer makes exact lengths), 16 in one batch with no padding, so that sdpa_fa's flash kernel takes them.
    session_model = bench.load()
    if session_model.model.config.max_position_embeddings < 2 * tokens:  # room for the prompt and its continuation
        pytest.skip(f"{tokens}-token contexts need a model of {2 * tokens:,} positions or more "
                    "(--bench-model random:llama-3.2-1b)")
    tokenizer = session_model.tokenizer
    count = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    prompts = [lengthened_context(item.prompt, tokens, count, item.id, exact=True)
               for item in generate_suite("context_qa", n=16, seed=0)]
    preset = replace(QUICK, name="one-batch", n_min=16, n_max=16)

    def pipeline(model, tokenizer, variant):
        settings = ScoringSettings.from_variant({**ALL_ON, **variant}, preset=preset, token_budget=1 << 16)
        return run_scoring(model, tokenizer, [Pair("twin", bench.load(copy=True).model, SAME)], prompts, settings)

    bench.run(group=f"context_qa-{tokens}", pipeline=pipeline)
