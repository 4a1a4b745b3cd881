"""Timed rounds: a first round sizes the rest under a time budget, and a case's variants take turns in cycles."""

from __future__ import annotations

import time

import pytest
import torch

from harness.measure.timing import (
    MeasureSettings,
    Side,
    measure,
    measure_interleaved,
    time_pairs,
)
from harness.pipelines.phases import timed_phase
from harness.records import PipelineOutput


@pytest.mark.parametrize("first, expected", [
    (0.5, 19),   # 10 s of 0.5-second rounds: 20 in all, the first included
    (2.0, 4),    # 5 in all
    (4.0, 2),    # at least 3 in all
    (30.0, 2),
    (0.01, 24),  # the cap: 25 in all
])
def test_rounds_after_the_first_fill_the_time_budget(first: float, expected: int) -> None:
    assert MeasureSettings(rounds=3, min_time=10.0, max_rounds=25).rounds_after(first) == expected


def test_without_a_budget_the_minimum_holds() -> None:
    assert MeasureSettings(rounds=3, min_time=0.0).rounds_after(0.001) == 2


def output() -> PipelineOutput:
    return PipelineOutput(quality={"accuracy": 1.0}, counters={"generated_tokens": 4}, item_ids=["a"],
                          item_scores=[1.0], item_outputs=["x"])


def test_measure_times_as_many_rounds_as_the_budget_asks() -> None:
    def run() -> PipelineOutput:
        time.sleep(0.02)
        return output()

    _, speed = measure(run, warm_up=lambda: None, settings=MeasureSettings(rounds=3, min_time=0.2, max_rounds=6))
    assert len(speed.round_seconds) == 6  # the first round asks for 10 in all; the cap is 6
    assert all(0.015 < s < 1.0 for s in speed.round_seconds)


def test_the_phases_a_run_marks_are_timed_in_every_round_and_not_in_the_warm_up() -> None:
    def run() -> PipelineOutput:
        with timed_phase("steps", torch.device("cpu")) as work:
            time.sleep(0.02)
            work["forward_passes"] = 5
        return output()

    _, speed = measure(run, warm_up=run, settings=MeasureSettings(rounds=3, min_time=0.0))
    assert len(speed.phase_seconds["steps"]) == len(speed.round_seconds) == 3
    assert all(0.015 < phase <= whole for phase, whole in zip(speed.phase_seconds["steps"], speed.round_seconds))
    assert speed.phase_counters == {"steps": {"forward_passes": 5}}  # one round's, the warm-up's not added


def logging_side(label: str, calls: list[str], seconds: float, fail_on: int | None = None) -> Side:
    def run() -> PipelineOutput:
        calls.append(label)
        if fail_on is not None and calls.count(label) == fail_on:
            raise RuntimeError(f"{label} broke")
        time.sleep(seconds)
        return output()

    return Side(label, run, warm_up=lambda: calls.append(f"{label} warm-up"))


def test_the_sides_warm_up_first_then_take_turns_in_cycles_that_reverse() -> None:
    calls: list[str] = []
    sides = [logging_side("ref", calls, 0.2), logging_side("fast", calls, 0.01)]
    results = measure_interleaved(sides, MeasureSettings(rounds=3, min_time=0.5, max_rounds=12))
    assert calls[:2] == ["ref warm-up", "fast warm-up"]
    rounds = calls[2:]
    # ref: 3 rounds (half a second of 0.2 s); fast: 12 (the cap), 4 a cycle; cycle 2 runs backwards
    assert rounds == ["ref", *["fast"] * 4, *["fast"] * 4, "ref", "ref", *["fast"] * 4]
    (_, ref_speed), (_, fast_speed) = results
    assert len(ref_speed.round_seconds) == 3 and len(fast_speed.round_seconds) == 12
    assert min(ref_speed.round_seconds) > max(fast_speed.round_seconds)


def test_a_side_that_fails_keeps_its_error_and_the_others_go_on() -> None:
    calls: list[str] = []
    sides = [logging_side("ref", calls, 0.0), logging_side("broken", calls, 0.0, fail_on=2), logging_side("fine", calls, 0.0)]
    ref, broken, fine = measure_interleaved(sides, MeasureSettings(rounds=3))
    assert isinstance(broken, RuntimeError) and str(broken) == "broken broke"
    assert calls.count("broken") == 2  # no round after the one that failed
    assert len(ref[1].round_seconds) == 3 and len(fine[1].round_seconds) == 3


def test_when_the_first_side_fails_every_side_fails_with_its_error() -> None:
    calls: list[str] = []
    sides = [logging_side("ref", calls, 0.0, fail_on=2), logging_side("variant", calls, 0.0)]
    results = measure_interleaved(sides, MeasureSettings(rounds=3))
    assert [str(r) for r in results] == ["ref broke", "ref broke"]
    assert "variant" not in calls[calls.index("ref", calls.index("ref") + 1):]  # nothing is timed after it


def test_outputs_that_change_between_rounds_fail_that_side() -> None:
    answers = iter(["x", "y", "z"])

    def drifting() -> PipelineOutput:
        return PipelineOutput(quality={}, counters={}, item_ids=["a"], item_scores=[1.0], item_outputs=[next(answers)])

    (result,) = measure_interleaved([Side("drift", drifting, lambda: None)], MeasureSettings(rounds=3))
    assert isinstance(result, RuntimeError) and "not deterministic" in str(result)


def test_one_round_asked_for_is_one_round() -> None:
    _, speed = measure(output, warm_up=lambda: None, settings=MeasureSettings(rounds=1, min_time=10.0))
    assert len(speed.round_seconds) == 1



def test_time_pairs_times_the_two_calls_side_by_side_in_order() -> None:
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        until = time.process_time() + 0.02  # busy: on a CPU the pairs are timed by CPU time, which a sleep does not use
        while time.process_time() < until:
            pass

    def second() -> None:
        calls.append("second")

    pairs = time_pairs(first, second, 3)
    assert calls == ["first", "second"] * 3
    assert len(pairs) == 3 and all(reference > 0.015 > variant > 0 for reference, variant in pairs)
