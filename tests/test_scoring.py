"""The scoring pipeline: zero for identical models, non-negative KL, batched = unbatched, the decision's error rates,
the no-op top-k refusal, the panel's known truths, and the injections that move its per-item values."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.gate.policy import GatePolicy
from harness.gate.verdict import judge
from harness.measure.inject import parse_injections, patched_pipelines
from harness.models.loading import LoadSpec, load_model
from harness.pipelines.detection import DetectionSettings, run_detection
from harness.pipelines.scoring import (
    AUDIT,
    DIFFERENT,
    QUICK,
    SAME,
    UNDECIDED,
    DecisionPreset,
    Pair,
    PromptBank,
    ScoringSettings,
    SequentialTest,
    decide_pair,
    plan_batches,
    run_scoring,
    score_rows,
    teacher_force,
)
from harness.plugin.case import BenchCase
from harness.plugin.session import BenchSession
from harness.records import REGRESSED, CaseRecord, PipelineOutput, Speed
from harness.tasks import generate_suite

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


@pytest.fixture(scope="module")
def gpqa():
    # every pair of the panel decides within 13 queries
    return [item.prompt for item in generate_suite("gpqa", n=24, seed=0)]


def _prompts(seed: int, n: int) -> list[str]:
    suites = ["math", "gpqa", "context_qa", "aime"]
    return [item.prompt for i in range(n) for item in generate_suite(suites[i % 4], 1, seed=seed + i)]


def _forced(model, tokenizer, prompts, k=8):
    conts = [random.Random(p).choices(range(3, 100), k=k) for p in prompts]
    return teacher_force(model, tokenizer, prompts, conts)


@_MODELS
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 4), topk=st.sampled_from([1, 10, 50, 99]))
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
    # why run_scoring refuses such a k: it scores exactly what the full vocabulary does
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


# --- top-k that keeps the whole vocabulary ---------------------------------------------------------


def _forward_counter(model):
    calls = []
    return calls, model.register_forward_pre_hook(lambda module, args: calls.append(1))


@pytest.mark.parametrize("topk", [100, 150])
def test_a_topk_keeping_the_whole_vocabulary_is_refused_before_any_work(reference, topk):
    calls, hook = _forward_counter(reference.model)
    try:
        with pytest.raises(ValueError, match=rf"^topk={topk} keeps the whole 100-token vocabulary: a no-op; choose k below 100$"):
            run_scoring(reference.model, reference.tokenizer, [Pair("self", reference.model, SAME)], _prompts(0, 2),
                        ScoringSettings(topk=topk))
        with pytest.raises(ValueError, match=rf"^topk={topk} keeps the whole 100-token vocabulary"):
            run_detection(reference.model, reference.tokenizer, [], [], DetectionSettings(topk=topk))
    finally:
        hook.remove()
    assert not calls


# --- the sequential decision --------------------------------------------------------------------


@dataclass(frozen=True)
class Streams:
    """Simulated score streams with a known true mean: Bernoulli (the largest variance a mean allows in [0, 1])
    or Beta with a + b = 2 (spread over the interval)."""

    mean: float
    kind: str = "bernoulli"
    runs: int = 2000

    def draw(self, rng: random.Random) -> float:
        if self.kind == "bernoulli":
            return float(rng.random() < self.mean)
        return rng.betavariate(2 * self.mean, 2 * (1 - self.mean)) if self.mean > 0 else 0.0

    def rates(self, preset: DecisionPreset) -> dict[str | None, float]:
        """The share of streams that end SAME, DIFFERENT or undecided (None) at n_max."""
        counts: dict[str | None, int] = {SAME: 0, DIFFERENT: 0, None: 0}
        for seed in range(self.runs):
            rng, test, decision = random.Random(seed), SequentialTest(preset), None
            while decision is None and test.n < preset.n_max:
                test.add(self.draw(rng))
                decision = test.decision()
            counts[decision] += 1
        return {decision: count / self.runs for decision, count in counts.items()}


def _at_most(rate: float, bound: float, runs: int) -> bool:
    """rate <= bound, with three binomial standard deviations for the simulation's own noise."""
    return rate <= bound + 3 * math.sqrt(bound * (1 - bound) / runs)


@pytest.mark.parametrize("preset", [QUICK, AUDIT], ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["bernoulli", "beta"])
def test_wrong_decisions_stay_below_alpha_at_the_edges_of_the_zone(preset, kind):
    # the hardest true means for each error: SAME at gamma itself, DIFFERENT at delta* itself
    runs = 2000 if preset is QUICK else 500  # AUDIT's streams run to 400 queries
    at_gamma = Streams(preset.gamma, kind, runs).rates(preset)
    at_delta = Streams(preset.delta_star, kind, runs).rates(preset)
    assert _at_most(at_gamma[SAME], preset.alpha, runs) and at_gamma[DIFFERENT] == 0
    assert _at_most(at_delta[DIFFERENT], preset.alpha, runs) and at_delta[SAME] == 0


def test_a_stream_of_mean_0_295_never_reads_different():
    # just below QUICK's gamma: a rule whose DIFFERENT needs only mean >= delta* without a lower bound would read
    # it DIFFERENT whenever delta* sits below the mean; measured: 0 of 2,000 streams of either kind
    for kind in ("bernoulli", "beta"):
        assert Streams(0.295, kind).rates(QUICK)[DIFFERENT] == 0


def test_inside_the_indifference_zone_the_test_mostly_stays_undecided():
    # QUICK's zone is (0.3, 0.5); measured at 0.4: 99.75% (Bernoulli) and 100% (Beta) of 2,000 streams undecided at
    # 120 queries, the rest SAME
    for kind in ("bernoulli", "beta"):
        rates = Streams(0.4, kind).rates(QUICK)
        assert rates[None] >= 0.95 and rates[DIFFERENT] == 0


@pytest.mark.parametrize("streams, decision, share", [
    (Streams(0.0), SAME, 1.0),  # a model against itself
    (Streams(0.05, "beta"), SAME, 0.99),
    (Streams(0.8), DIFFERENT, 0.99),  # the sibling's clipped mean is 0.83
    (Streams(0.8, "beta"), DIFFERENT, 0.99),
])
def test_far_from_the_zone_streams_get_decided(streams, decision, share):
    assert streams.rates(QUICK)[decision] >= share


def test_a_zero_stream_reads_same_and_a_stream_of_ones_different_not_before_n_min():
    same, different = SequentialTest(QUICK), SequentialTest(QUICK)
    decisions = []
    for _ in range(QUICK.n_max):
        same.add(0.0)
        different.add(1.0)
        decisions.append((same.decision(), different.decision()))
    assert decisions[QUICK.n_min - 2] == (None, None)  # nothing is decided before n_min
    assert decisions[QUICK.n_min - 1] == (None, DIFFERENT)
    assert decisions[11][0] is None and decisions[12] == (SAME, DIFFERENT)  # zeros: 13 queries at gamma 0.3, alpha 0.025


def test_presets_need_an_indifference_zone():
    with pytest.raises(ValueError, match="0 < gamma < delta"):
        DecisionPreset("flat", alpha=0.025, gamma=0.5, delta_star=0.3, n_min=10, n_max=120)


# --- batches ------------------------------------------------------------------------------------------


def _settings(batching: str, **overrides) -> ScoringSettings:
    return ScoringSettings(batching=batching, **overrides)


def test_dynamic_batches_are_length_sorted_buckets_under_the_budget_within_windows():
    lengths = [random.Random(i).randint(40, 200) for i in range(100)]
    settings_ = _settings("dynamic", token_budget=1000)  # n_min 10: windows [0, 10), [10, 20), [20, 40), [40, 80), [80, 100)
    batches = plan_batches(lengths, settings_)
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    windows = [(0, 10), (10, 20), (20, 40), (40, 80), (80, 100)]
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 1000
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
        assert sum(start <= min(batch) and max(batch) < end for start, end in windows) == 1  # one window each
    assert len(batches) < 100 and len(plan_batches(lengths, _settings("dynamic", token_budget=100_000))) == len(windows)


def test_static8_is_fixed_groups_of_eight_and_1_one_at_a_time():
    assert plan_batches([50] * 20, _settings("static8")) == [list(range(0, 8)), list(range(8, 16)), list(range(16, 20))]
    assert plan_batches([50] * 3, _settings("1")) == [[0], [1], [2]]


def test_batching_and_early_stop_keep_every_decision_and_value_in_fp32(reference, twin, sibling, gpqa):
    panel = [Pair("self", reference.model, SAME), Pair("twin", twin.model, SAME), Pair("sibling", sibling.model, DIFFERENT)]
    outputs = {(batching, early_stop): run_scoring(reference.model, reference.tokenizer, panel, gpqa,
                                                   _settings(batching, kv_cache=True, early_stop=early_stop))
               for batching, early_stop in (("1", False), ("static8", True), ("dynamic", True), ("dynamic", False))}
    first = outputs["1", False]
    assert first.item_outputs == [SAME, SAME, DIFFERENT] and first.quality["decision_accuracy"] == 1.0
    for output in outputs.values():
        assert output.item_outputs == first.item_outputs
        assert output.item_values == pytest.approx(first.item_values, abs=1e-5)
        assert output.counters["queries_to_decision"] == first.counters["queries_to_decision"] == 13 + 13 + 10
    assert first.item_values[:2] == [0.0, 0.0] and first.item_values[2] > 1.0
    assert outputs["dynamic", True].counters["queries"] == 50 < outputs["dynamic", False].counters["queries"] == 72


def test_too_few_prompts_leave_the_pair_undecided_with_a_value_over_what_was_scored(reference, sibling):
    bank = PromptBank(reference.model, reference.tokenizer, _prompts(0, QUICK.n_min - 2), _settings("static8", kv_cache=True))
    result = decide_pair(bank, Pair("sibling", sibling.model, DIFFERENT))
    assert result.decision == UNDECIDED and result.decided_at is None and result.queries == QUICK.n_min - 2
    assert result.value == pytest.approx(sum(result.scores.values()) / len(result.scores))


# --- the panel ------------------------------------------------------------------------------------


def _session(device: str = "cpu") -> BenchSession:
    return BenchSession(config=None, device=device)


def test_the_twin_is_another_object_with_the_same_weights_and_outputs(gpqa):
    case = BenchCase(_session(), None, {}, "scoring", {})
    own, copy = case.load(), case.load(copy=True)
    assert copy.model is not own.model and case.load(copy=True).model is copy.model  # loaded once, apart from own
    assert all(a is not b and torch.equal(a, b) for a, b in zip(own.model.parameters(), copy.model.parameters()))
    output = run_scoring(own.model, own.tokenizer, [Pair("self", own.model, SAME), Pair("twin", copy.model, SAME)],
                         gpqa, _settings("dynamic", kv_cache=True))
    assert output.item_outputs == [SAME, SAME] and output.item_values == [0.0, 0.0]
    assert case.load(dtype="bfloat16").model.dtype == torch.bfloat16


def test_a_bfloat16_copy_reads_same_and_the_sibling_different(reference, sibling, gpqa):
    bf16 = load_model(LoadSpec("embedded", "cpu", "bfloat16", "none"))
    panel = [Pair("bfloat16 copy", bf16.model, SAME), Pair("sibling", sibling.model, DIFFERENT)]
    output = run_scoring(reference.model, reference.tokenizer, panel, gpqa, _settings("dynamic", kv_cache=True, early_stop=True))
    assert output.item_outputs == [SAME, DIFFERENT]
    assert 0 < output.item_values[0] < 0.01 and output.item_values[1] > 1.5  # measured: 0.004 and 1.82


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


# --- injections the gate must catch -----------------------------------------------------------------


@pytest.fixture(scope="module")
def injected(reference, twin, sibling, gpqa):
    """All-on runs of the panel, honest and with each scoring injection: spec -> (decisions, values)."""
    panel = [Pair("self", reference.model, SAME), Pair("twin", twin.model, SAME), Pair("sibling", sibling.model, DIFFERENT)]
    runs = {}
    for spec in (None, "teacher-forcing-shift", "topk-shift=0.5"):
        with patched_pipelines(parse_injections([spec] if spec else [])):
            output = run_scoring(reference.model, reference.tokenizer, panel, gpqa,
                                 _settings("dynamic", topk=50, kv_cache=True, early_stop=True))
        runs[spec] = output.item_outputs, output.item_values
    return runs


def test_topk_shift_multiplies_the_topk_values_and_keeps_the_decisions(injected):
    (decisions, values), (shifted_decisions, shifted) = injected[None], injected["topk-shift=0.5"]
    assert shifted_decisions == decisions == [SAME, SAME, DIFFERENT]
    assert shifted == pytest.approx([1.5 * v for v in values]) and shifted[2] > values[2] + 0.5


def test_teacher_forcing_shift_moves_the_values_and_keeps_the_decisions(injected):
    (decisions, values), (shifted_decisions, shifted) = injected[None], injected["teacher-forcing-shift"]
    assert shifted_decisions == decisions
    assert shifted[:2] == [0.0, 0.0]  # both sides read the same wrong position: identical models still agree
    # measured: the sibling's 1.811 -> 1.796, beyond what the gate allows a variant against its own baseline
    assert not GatePolicy().value_tolerances["baseline"].allows(values[2], shifted[2])


def test_the_injections_are_undone(reference):
    from harness.pipelines import scoring

    honest = scoring.teacher_force, scoring.score_rows
    with patched_pipelines(parse_injections(["teacher-forcing-shift", "topk-shift=0.5"])):
        assert (scoring.teacher_force, scoring.score_rows) != honest
    assert (scoring.teacher_force, scoring.score_rows) == honest


def test_settings_read_the_variant():
    settings_ = ScoringSettings.from_variant({"topk": "50", "batching": "dynamic", "early_stop": "on", "kv_cache": "on"})
    assert (settings_.effective_method, settings_.topk, settings_.batching, settings_.early_stop) == ("topk_delta", 50, "dynamic", True)
    assert ScoringSettings.from_variant({"topk": "full"}).effective_method == "delta_target"
    with pytest.raises(ValueError, match="scoring method must be one of"):
        ScoringSettings(method="kl")
    with pytest.raises(ValueError, match="batching must be one of"):
        ScoringSettings(batching="32")
