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
# "gpqa" and "aime" run the same way; each adds about two minutes on a 2-core CPU.
@pytest.mark.parametrize("suite", ["math"])
def test_eval(bench, suite):
    items = generate_suite(suite, n=32, seed=0)

    def pipeline(model, tokenizer, variant, items=items):
        settings = EvalSettings.from_variant(variant, max_new_tokens=SUITES[suite].max_new_tokens)
        return run_eval(model, tokenizer, items, settings)

    bench.run(group=suite, pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, items[:2]))


@pytest.mark.bench(pipeline="eval", toggles={"early_stop": ["on"]})
def test_eval_at_scale(bench):
    # 200 items, so that the paired test sees a 3-point accuracy drop; the cache and batching stay on, which
    # keeps the reference (early_stop off) fast
    items = generate_suite("math", n=200, seed=1)

    def pipeline(model, tokenizer, variant, items=items):
        settings = EvalSettings.from_variant({"kv_cache": "on", "batching": "dynamic", **variant}, SUITES["math"].max_new_tokens)
        return run_eval(model, tokenizer, items, settings)

    bench.run(group="math-200", pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, items[:8]))
