"""Bench cases of the search pipeline: MaxEnt-TS tree search on arithmetic suites, per toggle variant."""

import pytest

from harness.pipelines.search import SearchSettings, run_search
from harness.tasks import SUITES, generate_suite

TOGGLES = {
    "kv_cache": ["on"],
    "batching": ["dynamic"],  # the sibling rollouts of an expansion in one generate call
    "early_stop": ["on"],
    "attention": ["sdpa"],
}  # quantization runs on GPU only (gpu_toggles): on CPU, bitsandbytes is slow
ALL_ON = {"kv_cache": "on", "batching": "dynamic", "early_stop": "on", "attention": "sdpa"}


def run_case(bench, suite, group, fixed=None, n=2):
    items = generate_suite(suite, n=n, seed=0)

    def pipeline(model, tokenizer, variant, items=items, rollouts=4):
        settings = SearchSettings.from_variant({**(fixed or {}), **variant}, SUITES[suite].max_new_tokens, num_rollouts=rollouts)
        return run_search(model, tokenizer, items, settings)

    bench.run(group=group, pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, items[:1], rollouts=2))


@pytest.mark.bench(pipeline="search", toggles=TOGGLES, gpu_toggles={"quantization": ["nf4"]})
# "aime" runs the same way (longer answers, 96 new tokens); it adds about two minutes on a 2-core CPU.
@pytest.mark.parametrize("suite", ["math"])
def test_search(bench, suite):
    run_case(bench, suite, group=suite)


@pytest.mark.gpu
@pytest.mark.bench(pipeline="search", toggles={"compile": ["on"]})
def test_search_compiled(bench):
    # all on, with the rollouts sampled in the compiled static-cache loop against generate's
    run_case(bench, "math", group="math-compiled", fixed=ALL_ON)


# Outside the default gate (about 100 s on a 2-core CPU): it runs with a whole --bench-matrix.
@pytest.mark.bench(pipeline="search", toggles={"early_stop": ["on"]}, gpu_toggles={"quantization": ["nf4"]}, gate=False)
def test_search_headroom(bench):
    # 16 aime items (the model solves 0.81 of them): enough that one worse answer shows on an item the reference
    # got right. The cache and batching stay on, which keeps the reference fast.
    run_case(bench, "aime", group="aime-16", fixed={"kv_cache": "on", "batching": "dynamic", "attention": "sdpa"}, n=16)
