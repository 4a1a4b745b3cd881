"""The scoring pipeline: zero for identical models, non-negative KL, batched = unbatched, the decision's error rate."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.models import LoadSpec, load_model
from harness.pipelines.scoring import (
    AUDIT,
    DIFFERENT,
    QUICK,
    SAME,
    UNDECIDED,
    Pair,
    PromptBank,
    ScoringSettings,
    SequentialTest,
    decide_pair,
    run_scoring,
    score_rows,
    teacher_force,
)
from harness.records import CaseRecord, PipelineOutput, Speed
from harness.tasks import generate_suite
from harness.verdict import REGRESSED, judge

_MODELS = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def reference():
    return load_model(LoadSpec("embedded", "cpu", "float32", "none"))


@pytest.fixture(scope="module")
def twin():
    """A second, separately loaded copy of the reference: the same weights through another object."""
    return load_model(LoadSpec("embedded", "cpu", "float32", "none"))


@pytest.fixture(scope="module")
def sibling():
    return load_model(LoadSpec("embedded-sibling", "cpu", "float32", "none"))


def _prompts(seed: int, n: int) -> list[str]:
    suites = ["math", "gpqa", "context_qa", "aime"]
    return [item.prompt for i in range(n) for item in generate_suite(suites[i % 4], 1, seed=seed + i)]


def _forced(model, tokenizer, prompts, k=8):
    conts = [random.Random(p).choices(range(3, 100), k=k) for p in prompts]
    return teacher_force(model, tokenizer, prompts, conts)


@_MODELS
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 4), topk=st.sampled_from([1, 10, 50, 100]))
def test_every_method_scores_exactly_zero_for_identical_models(reference, twin, seed, rows, topk):
    prompts = _prompts(seed, rows)
    a, b = _forced(reference.model, reference.tokenizer, prompts), _forced(twin.model, twin.tokenizer, prompts)
    for method in ("kl_full", "delta_target", "topk_delta"):
        assert [s.score for s in score_rows(a, b, method, topk)] == [0.0] * rows


@_MODELS
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 4))
def test_kl_full_is_non_negative_and_positive_for_another_model(reference, sibling, seed, rows):
    prompts = _prompts(seed, rows)
    a, b = _forced(reference.model, reference.tokenizer, prompts), _forced(sibling.model, sibling.tokenizer, prompts)
    scores = [s.score for s in score_rows(a, b, "kl_full", None)]
    assert all(score > 0 for score in scores)


def test_topk_over_the_whole_vocabulary_equals_delta_target(reference, sibling):
    prompts = _prompts(1, 3)
    a, b = _forced(reference.model, reference.tokenizer, prompts), _forced(sibling.model, sibling.tokenizer, prompts)
    full = [s.score for s in score_rows(a, b, "delta_target", None)]
    whole = score_rows(a, b, "topk_delta", a.log_probs.shape[-1])
    assert [s.score for s in whole] == pytest.approx(full, abs=1e-5) and all(s.skipped == 0 for s in whole)
    narrow = score_rows(a, b, "topk_delta", 1)  # random targets mostly fall outside the top token
    assert sum(s.skipped for s in narrow) > 0


def test_padded_batches_gather_each_rows_own_positions(reference, sibling):
    prompts = _prompts(5, 4)  # lengths differ, so rows are padded differently
    together = score_rows(_forced(reference.model, reference.tokenizer, prompts),
                          _forced(sibling.model, sibling.tokenizer, prompts), "kl_full", None)
    alone = [score_rows(_forced(reference.model, reference.tokenizer, [p]), _forced(sibling.model, sibling.tokenizer, [p]),
                        "kl_full", None)[0] for p in prompts]
    assert [s.score for s in together] == pytest.approx([s.score for s in alone], abs=1e-4)


def test_teacher_forcing_scores_the_positions_of_the_full_forward(reference):
    # only the last K + 1 positions go through the head; they must be the ones the full forward gives
    prompts, k = _prompts(7, 3), 8
    forced = _forced(reference.model, reference.tokenizer, prompts, k)
    conts = [random.Random(p).choices(range(3, 100), k=k) for p in prompts]
    for row, (prompt, cont) in enumerate(zip(prompts, conts)):
        ids = torch.tensor([reference.tokenizer(prompt)["input_ids"] + cont])
        full = torch.log_softmax(reference.model(input_ids=ids).logits[0, -k - 1 : -1].float(), dim=-1)
        assert torch.allclose(forced.log_probs[row], full, atol=1e-4)
        assert forced.targets[row].tolist() == cont


# --- the sequential decision --------------------------------------------------------------------


def _first_decisions(preset, draw, runs: int = 400) -> list[str | None]:
    """The decision of each simulated stream (None if it reached n_max undecided)."""
    decisions = []
    for seed in range(runs):
        rng, test, decision = random.Random(seed), SequentialTest(preset), None
        while decision is None and test.n < preset.n_max:
            test.add(draw(rng))
            decision = test.decision()
        decisions.append(decision)
    return decisions


@pytest.mark.parametrize("preset", [QUICK, AUDIT], ids=lambda p: p.name)
def test_false_different_rate_is_below_alpha_when_the_true_mean_is_zero_ish(preset):
    """Streams with a small true mean (well inside SAME) must almost never read DIFFERENT."""
    decisions = _first_decisions(preset, lambda rng: min(rng.expovariate(1 / 0.03), 1.0))  # mean 0.03, heavy tail
    assert decisions.count(DIFFERENT) / len(decisions) < preset.alpha
    assert decisions.count(SAME) > len(decisions) / 2  # and the streams do get decided


@pytest.mark.parametrize("preset", [QUICK, AUDIT], ids=lambda p: p.name)
def test_false_same_rate_is_below_alpha_when_the_models_differ(preset):
    decisions = _first_decisions(preset, lambda rng: rng.random())  # uniform on [0, 1]: mean 0.5
    assert decisions.count(SAME) / len(decisions) < preset.alpha


def test_a_zero_stream_reads_same_and_a_stream_of_ones_different():
    same, different = SequentialTest(QUICK), SequentialTest(QUICK)
    decisions = []
    for _ in range(QUICK.n_max):
        same.add(0.0)
        different.add(1.0)
        decisions.append((same.decision(), different.decision()))
    assert decisions[QUICK.n_min - 2] == (None, None)  # nothing is decided before n_min
    assert decisions[-1] == (SAME, DIFFERENT)


# --- the panel ------------------------------------------------------------------------------------


def test_panel_decides_self_same_and_sibling_different_with_early_stop_saving_queries(reference, sibling):
    prompts = [item.prompt for item in generate_suite("gpqa", n=64, seed=0)]
    panel = [Pair("self", reference.model, SAME), Pair("sibling", sibling.model, DIFFERENT)]
    outputs = {}
    for early_stop in (False, True):
        settings_ = ScoringSettings(batch_size=8, kv_cache=True, early_stop=early_stop)
        outputs[early_stop] = run_scoring(reference.model, reference.tokenizer, panel, prompts, settings_)
    assert outputs[True].item_outputs == outputs[False].item_outputs == [SAME, DIFFERENT]
    assert outputs[True].quality["decision_accuracy"] == 1.0
    assert outputs[True].quality["score[self]"] == 0.0
    assert outputs[True].counters["queries"] < outputs[False].counters["queries"] == 128
    assert outputs[True].counters["queries_to_decision"] == outputs[False].counters["queries_to_decision"]


def test_too_few_prompts_leave_the_pair_undecided(reference, sibling):
    bank = PromptBank(reference.model, reference.tokenizer, _prompts(0, 12), ScoringSettings(batch_size=4))
    result = decide_pair(bank, Pair("sibling", sibling.model, DIFFERENT))
    assert result.decision == UNDECIDED and result.decided_at is None and result.queries == 12


def _decision_record(decisions: list[str], variant: dict[str, str]) -> CaseRecord:
    output = PipelineOutput({"decision_accuracy": 1.0}, {}, ["self", "sibling"], [1.0, 1.0], decisions, decisions=True)
    speed = Speed([1.0, 1.0, 1.0], 2, 0, 0, "cpu_process_peak_rss")
    return CaseRecord("scoring[gpqa|x]", "scoring", "gpqa", variant, {"topk": "full"}, {"topk": "budgeted"}, speed, output,
                      metadata={"dtype": "float32"})


def test_a_changed_decision_fails_the_gate_even_with_accuracy_unchanged():
    reference = _decision_record([SAME, DIFFERENT], {"topk": "full"})
    flipped = _decision_record([SAME, UNDECIDED], {"topk": "50"})
    verdict = judge(flipped, None, reference)
    assert verdict.status == REGRESSED
    assert "decision changed vs the reference: sibling DIFFERENT -> UNDECIDED" in verdict.message


def test_settings_read_the_variant():
    settings_ = ScoringSettings.from_variant({"topk": "50", "batching": "dynamic", "early_stop": "on", "kv_cache": "on"})
    assert (settings_.effective_method, settings_.topk, settings_.batch_size, settings_.early_stop) == ("topk_delta", 50, 32, True)
    assert ScoringSettings.from_variant({"topk": "full"}).effective_method == "delta_target"
    with pytest.raises(ValueError, match="scoring method must be one of"):
        ScoringSettings(method="kl")
