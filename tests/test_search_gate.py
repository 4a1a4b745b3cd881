"""The gate catches the search's cache path silently falling back to recomputation.

The public original of this search caught a shape error in its cache path and went on without a
cache: same answers, several times slower, nothing reported. Here that fallback is injected with a
conftest into a plugin run against a baseline recorded without it; the counters and the speedup
must fail, naming what moved.
"""


CASE = '''
import pytest
from harness.pipelines.search import SearchSettings, run_search
from harness.tasks import generate_suite

# aime's long solutions make recomputation cost several times the cached search, so the speed drop
# stands clear of run-to-run noise even at the factor of 2 used against another machine (on one short math item it
# did not)
ITEMS = generate_suite("aime", n=1, seed=0)


@pytest.mark.bench(pipeline="search", toggles={"kv_cache": ["on"], "batching": ["dynamic"]})
def test_search(bench):
    def pipeline(model, tokenizer, variant, rollouts=3):
        return run_search(model, tokenizer, ITEMS, SearchSettings.from_variant(variant, 96, num_rollouts=rollouts))

    bench.run(group="aime", pipeline=pipeline, warm_up=lambda m, t, v: pipeline(m, t, v, rollouts=2))
'''

SILENT_CACHE_FALLBACK = '''
from dataclasses import replace

from harness.pipelines import search

_roll_out = search._roll_out


def _roll_out_without_cache(model, tokenizer, parent, children, seeds, item, prompt_width, settings, counters):
    # what the original did after its cache path raised: carry on with no cache, say nothing
    return _roll_out(model, tokenizer, parent, children, seeds, item, prompt_width,
                     replace(settings, kv_cache=False), counters)


search._roll_out = _roll_out_without_cache
'''


def test_silent_fallback_to_no_cache_fails_on_counters_and_speedup(pytester):
    pytester.makepyfile(test_bench=CASE)
    # the reference and the variants with the cache (batching alone, as slow as the reference, is left out)
    cases = ("-p", "no:cacheprovider", "--benchmark", "--bench-min-time", "0", "-k", "reference or kv_cache")
    saved = pytester.runpytest_subprocess(*cases, "--bench-save-baseline", "--bench-reason", "cache path working")
    saved.assert_outcomes(passed=3)

    pytester.makeconftest(SILENT_CACHE_FALLBACK)
    # one pair re-times each speed regression: enough to show that the pairs see it too
    injected = pytester.runpytest_subprocess(*cases, "--bench-confirm-pairs", "1")
    injected.assert_outcomes(passed=1, failed=2)  # the two variants with kv_cache=on
    # factor 1.5 on the baseline's CPU model (the machine this test saves on)
    injected.stdout.re_match_lines([
        r"search\[aime\|kv_cache=on,batching=dynamic\]: speedup \S+x -> \S+x \(.*CI.*factor 1\.5\); "
        r"confirmed by 1 paired round: \S+x \[vs baseline\]$",
        r"search\[aime\|kv_cache=on,batching=dynamic\]: counter recomputed_tokens 0 -> \d+ \(from zero\) \[vs baseline\]$",
        r"search\[aime\|kv_cache=on\]: ",
    ])
