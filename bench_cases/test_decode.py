"""GPU bench cases of greedy decoding: tokens/s and the share of the memory-bandwidth roofline, compile off and on.

On a speed-profile model for figures at a realistic scale:
    pytest --benchmark --bench-device cuda --bench-model random:llama-3.2-1b -k decode
"""

from dataclasses import replace

import pytest

from harness.pipelines.eval import EvalSettings, run_eval
from harness.tasks import generate_suite


@pytest.mark.gpu
@pytest.mark.bench(pipeline="eval", toggles={"compile": ["on"]})
@pytest.mark.parametrize("batch", [1, 32])
def test_decode(bench, batch):
    # Fixed work: one prompt, so that every call has the shapes the compiled step was built for; each row decodes
    # 128 tokens with the cache on and no early stop. 8 rows one at a time, or 32 in one batch.
    prompt = generate_suite("math", n=1, seed=2)[0]
    items = [replace(prompt, id=f"{prompt.id}-{row}") for row in range(32 if batch > 1 else 8)]

    def pipeline(model, tokenizer, variant):
        decoding = {"kv_cache": "on", "batching": "dynamic" if batch > 1 else "1", **variant}
        return run_eval(model, tokenizer, items, EvalSettings.from_variant(decoding, max_new_tokens=128, token_budget=1 << 16))

    # the warm-up is a whole run: without one, the reference's first round was its slowest (18.3 s against 10.8 and
    # 11.1 on the 1B profile)
    bench.run(group=f"decode-batch{batch}", pipeline=pipeline, warm_up=pipeline)
