"""Timed rounds: a first round sizes the rest under a time budget, every round goes through the same clock."""

from __future__ import annotations

import time

import pytest

from harness.measure import MeasureSettings, measure, time_pairs
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


def test_measure_times_as_many_rounds_as_the_budget_asks_through_the_given_clock() -> None:
    calls: list[tuple[int, list[float]]] = []

    def timer(target, rounds: int, earlier: list[float]) -> list[float]:
        calls.append((rounds, list(earlier)))
        for _ in range(rounds):
            target()
        return [*earlier, *[0.02] * rounds]

    def run() -> PipelineOutput:
        time.sleep(0.02)
        return output()

    _, speed = measure(run, warm_up=lambda: None, settings=MeasureSettings(rounds=3, min_time=0.2, max_rounds=6), timer=timer)
    assert len(calls) == 1 and calls[0][0] == 5 and len(calls[0][1]) == 1  # the first round, then 5 (the cap: 6)
    assert len(speed.round_seconds) == 6


def test_one_round_asked_for_is_one_round() -> None:
    _, speed = measure(output, warm_up=lambda: None, settings=MeasureSettings(rounds=1, min_time=10.0))
    assert len(speed.round_seconds) == 1



def test_time_pairs_times_the_two_calls_side_by_side_in_order() -> None:
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        time.sleep(0.02)

    def second() -> None:
        calls.append("second")

    pairs = time_pairs(first, second, 3)
    assert calls == ["first", "second"] * 3
    assert len(pairs) == 3 and all(reference > 0.015 > variant > 0 for reference, variant in pairs)
