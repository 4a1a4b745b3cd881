"""Bench cases of the eval pipeline: accuracy runs on MATH- and GPQA-style suites, per toggle variant."""

import pytest

from harness.pipelines.eval import EvalSettings, run_eval
from harness.tasks import SUITES, generate_suite

TOGGLES = {
    "kv_cache": ["on"],
    "early_stop": ["on"],
    "batching": ["static8", "dynamic"],
    "attention": ["sdpa", "flash_attention_2"],
    "quantization": ["int8", "nf4"],
}


@pytest.mark.bench(pipeline="eval", toggles=TOGGLES)
# The sweep of every toggle, on a suite short to answer; test_eval_headroom judges quality on harder ones.
@pytest.mark.parametrize("suite", ["math"])
def test_eval(bench, suite):
    items = generate_suite(suite, n=16, seed=0)

    def pipeline(model, tokenizer, variant, items=items):
        settings = EvalSettings.from_variant(variant, max_new_tokens=SUITES[suite].max_new_tokens)
        return run_eval(model, tokenizer, items, settings)

    bench.run(group=suite, pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, items[:2]))


@pytest.mark.bench(pipeline="eval", toggles={"early_stop": ["on"], "quantization": ["nf4"]})
@pytest.mark.parametrize("suite", ["aime", "gpqa", "context_qa"])
def test_eval_headroom(bench, suite):
    # Suites the model does not ace, 64 items each: one changed answer fails early_stop, and a net loss of 2 items
    # (3.1 points) fails nf4's 2-point budget (docs/verdict.md). The cache and batching stay on, which keeps the
    # reference fast.
    items = generate_suite(suite, n=64, seed=0)

    def pipeline(model, tokenizer, variant, items=items):
        settings = EvalSettings.from_variant({"kv_cache": "on", "batching": "dynamic", **variant}, SUITES[suite].max_new_tokens)
        return run_eval(model, tokenizer, items, settings)

    bench.run(group=suite, pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, items[:8]))
