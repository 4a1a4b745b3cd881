"""Small bench cases for the catch matrix (tests/test_catch_matrix.py), a few seconds a variant on a 2-core CPU.

Not named test_*.py, so that neither `pytest` nor `pytest --benchmark` collects them: only a run that passes this
file's path does.
"""

import pytest

from harness.pipelines.eval import EvalSettings, run_eval
from harness.pipelines.scoring import (
    DIFFERENT,
    SAME,
    Pair,
    ScoringSettings,
    run_scoring,
)
from harness.pipelines.search import SearchSettings, run_search
from harness.tasks import generate_suite

MATH = generate_suite("math", n=8, seed=0)
GPQA_PROMPTS = [item.prompt for item in generate_suite("gpqa", n=32, seed=0)]  # with early_stop each pair stops at its decision


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"], "early_stop": ["on"]})
def test_eval(bench):
    def pipeline(model, tokenizer, variant):
        # batched in every variant, and 48 new tokens (the longest answer here takes 46 and EOS): the uncached
        # reference is the slowest part of the matrix
        return run_eval(model, tokenizer, MATH, EvalSettings.from_variant({"batching": "dynamic", **variant}, 48))

    bench.run(group="math", pipeline=pipeline)


@pytest.mark.bench(pipeline="search", toggles={"kv_cache": ["on"]})
def test_search(bench):
    def pipeline(model, tokenizer, variant):
        return run_search(model, tokenizer, MATH[:2], SearchSettings.from_variant(variant, 64, num_rollouts=3))

    bench.run(group="math", pipeline=pipeline)


@pytest.mark.bench(pipeline="scoring", toggles={"topk": ["50"]})  # 100 would keep the whole 100-token vocabulary
def test_scoring(bench):
    def pipeline(model, tokenizer, variant):
        pairs = [Pair("self", model, SAME), Pair("sibling", bench.load("embedded-sibling").model, DIFFERENT)]
        settings = ScoringSettings.from_variant({"batching": "dynamic", "kv_cache": "on", "early_stop": "on", **variant})
        return run_scoring(model, tokenizer, pairs, GPQA_PROMPTS, settings)

    bench.run(group="gpqa", pipeline=pipeline)
