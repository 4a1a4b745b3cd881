"""Bench cases of the search pipeline: MaxEnt-TS tree search on arithmetic suites, per toggle variant."""

import pytest

from harness.pipelines.search import SearchSettings, run_search
from harness.tasks import SUITES, generate_suite

TOGGLES = {
    "kv_cache": ["on"],
    "batching": ["dynamic"],  # the sibling rollouts of an expansion in one generate call
    "early_stop": ["on"],
    "attention": ["sdpa"],
}
# on a GPU only: bitsandbytes is slow on a CPU, and compile's CUDA graphs need CUDA
GPU_TOGGLES = {"quantization": ["nf4"], "compile": ["on"]}


@pytest.mark.bench(pipeline="search", toggles=TOGGLES, gpu_toggles=GPU_TOGGLES)
# "aime" runs the same way (longer answers, 96 new tokens); it adds about two minutes on a 2-core CPU.
@pytest.mark.parametrize("suite", ["math"])
def test_search(bench, suite):
    items = generate_suite(suite, n=2, seed=0)

    def pipeline(model, tokenizer, variant, items=items, rollouts=4):
        settings = SearchSettings.from_variant(variant, SUITES[suite].max_new_tokens, num_rollouts=rollouts)
        return run_search(model, tokenizer, items, settings)

    bench.run(group=suite, pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, items[:1], rollouts=2))
