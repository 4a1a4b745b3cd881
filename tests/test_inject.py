"""The injected regressions of the gate study: specs parse or say what parses, and each one breaks what it says."""

from __future__ import annotations

import time

import pytest

from harness.measure.inject import (
    InjectionError,
    Injections,
    parse_injections,
    patched_pipelines,
    slowed,
)
from harness.pipelines import decoding


def test_specs_parse() -> None:
    injections = parse_injections(["slowdown=0.25", "slowdown=0.5@eval[math|kv_cache=on]", "disable=kv_cache",
                                   "early-stop-cut=0.04", "topk-flip", "quantize=nf4"])
    assert injections.slowdown_of("eval[math|kv_cache=on]", is_reference=False) == 0.5
    assert injections.slowdown_of("eval[math|early_stop=on]", is_reference=False) == 0.25
    assert injections.slowdown_of("eval[math|reference]", is_reference=True) == 0.0  # the naive path is not slowed
    assert injections.pipeline_variant({"kv_cache": "on", "early_stop": "on"}) == {"kv_cache": "off", "early_stop": "on"}
    assert injections.quantization("none") == "nf4" and injections.quantization("int8") == "int8"
    assert injections.early_stop_cut == 0.04 and injections.topk_flip and injections.active
    assert not Injections().active and parse_injections([]) == Injections()


@pytest.mark.parametrize("spec, words", [
    ("slowdown=fast", "must be a number in (0, 10]"),
    ("slowdown=0", "must be a number in (0, 10]"),
    ("early-stop-cut=2", "must be a number in (0, 1]"),
    ("disable=turbo", "unknown toggle 'turbo'"),
    ("quantize=fp8", "not an injection; one of slowdown=F"),
    ("everything", "not an injection"),
])
def test_bad_specs_say_what_parses(spec: str, words: str) -> None:
    with pytest.raises(InjectionError, match="--bench-inject") as error:
        parse_injections([spec])
    assert words in str(error.value)


def test_slowed_waits_its_fraction_of_the_call() -> None:
    def work() -> str:
        time.sleep(0.05)
        return "done"

    start = time.perf_counter()
    assert slowed(work, 1.0)() == "done"
    assert time.perf_counter() - start >= 0.1
    assert slowed(work, 0.0) is work


def test_early_stop_cut_stops_inside_the_box_on_its_share_and_is_undone() -> None:
    honest = decoding.answer_complete
    texts = [f"step {i}: 3 + {i} = {3 + i}. \\boxed{{1" for i in range(400)]
    with patched_pipelines(parse_injections(["early-stop-cut=0.25"])):
        cut = sum(decoding.answer_complete(text, "number") for text in texts)
        assert not decoding.answer_complete("no box yet", "number")
    assert 60 < cut < 140  # about a quarter of the answers, chosen by their text
    assert decoding.answer_complete is honest
    assert not any(honest(text, "number") for text in texts)  # the honest rule waits for the closing brace


def test_topk_flip_shrinks_only_the_top_k_scores_and_is_undone() -> None:
    import torch

    from harness.pipelines import scoring

    torch.manual_seed(0)
    reference = scoring.ForcedBatch(torch.randn(2, 4, 10).log_softmax(-1), torch.randint(0, 10, (2, 4)))
    candidate = scoring.ForcedBatch(torch.randn(2, 4, 10).log_softmax(-1), reference.targets)
    honest = scoring.score_rows
    before_topk = [row.score for row in honest(reference, candidate, "topk_delta", 5)]
    before_full = [row.score for row in honest(reference, candidate, "delta_target", None)]
    with patched_pipelines(parse_injections(["topk-flip"])):
        shrunk = [row.score for row in scoring.score_rows(reference, candidate, "topk_delta", 5)]
        full = [row.score for row in scoring.score_rows(reference, candidate, "delta_target", None)]
    assert shrunk == pytest.approx([0.02 * score for score in before_topk]) and full == before_full
    assert scoring.score_rows is honest


def test_new_specs_parse_and_bad_ones_say_what_parses() -> None:
    injections = parse_injections(["early-stop-cut=@math-test-0-3", "stale-cache", "search-worse-rollout"])
    assert injections.early_stop_cut_item == "math-test-0-3" and injections.early_stop_cut == 0.0
    assert injections.stale_cache and injections.search_worse_rollout and injections.active
    for spec in ("early-stop-cut=@", "stale-cache=1", "search-worse-rollout=yes"):
        with pytest.raises(InjectionError, match="--bench-inject"):
            parse_injections([spec])


def test_stale_cache_reads_the_newest_cached_slot_a_write_late_and_is_undone() -> None:
    import torch
    from transformers.cache_utils import DynamicLayer

    def positions(count: int, start: int = 0) -> torch.Tensor:
        return torch.arange(start, start + count, dtype=torch.float32).view(1, 1, count, 1)

    honest = DynamicLayer.update
    layer = DynamicLayer()
    with patched_pipelines(parse_injections(["stale-cache"])):
        prefill, _ = layer.update(positions(3), positions(3))
        step, _ = layer.update(positions(1, 3), positions(1, 3))
    assert prefill.flatten().tolist() == [0, 1, 2]  # the prefill reads what it wrote
    assert step.flatten().tolist() == [0, 1, 1, 3]  # position 2 still holds position 1; the step's own is there
    assert layer.keys.flatten().tolist() == [0, 1, 2, 3]  # the cache itself is right
    assert DynamicLayer.update is honest


def test_search_worse_rollout_returns_the_runner_up_and_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.pipelines import search

    rewards = {"wrong": 0.0, "best": 1.1, "runner-up": 1.0, "also runner-up": 1.0}

    def fake_search(model, tokenizer, item, settings, reward):
        # the honest rule: the first of the best-rewarded texts
        values = [(reward(item, text), text) for text in rewards]
        best = max(values, key=lambda pair: pair[0])
        return search.SearchResult(root=None, text=best[1], reward=best[0], counters={})

    monkeypatch.setattr(search, "search_item", fake_search)
    with patched_pipelines(parse_injections(["search-worse-rollout"])):
        result = search.search_item(None, None, None, None, reward=lambda item, text: rewards[text])
    assert (result.text, result.reward) == ("runner-up", 1.0)
    assert search.search_item is fake_search
