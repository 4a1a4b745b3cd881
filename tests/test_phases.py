"""Phases within a round: timed only under a clock, summed per name, with the pipelines' own work counters."""

from __future__ import annotations

import time

import pytest
import torch

from harness.models.loading import LoadSpec, load_model
from harness.pipelines.phases import phase_clock, timed_phase
from harness.pipelines.scoring import (
    CONTINUATIONS,
    SCORES,
    TEACHER_FORCING,
    Pair,
    ScoringSettings,
    run_scoring,
)
from harness.pipelines.static_greedy import cache_length, greedy_static
from harness.records import DECODE_STEPS
from harness.tasks import generate_suite

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded():
    return load_model(LoadSpec("embedded", "cpu", "float32", "none"))


def test_without_a_clock_a_phase_times_nothing():
    with timed_phase("idle", CPU) as work:
        work["forward_passes"] = 1  # a pipeline fills its counters whether or not anyone reads them


def test_phases_add_up_per_name_and_may_nest():
    with phase_clock() as clock:
        for _ in range(2):
            with timed_phase("outer", CPU) as outer:
                with timed_phase("inner", CPU) as inner:
                    time.sleep(0.01)
                    inner["steps"] = 3
                outer["rows"] = 1
    totals = clock.totals()
    assert totals.counters == {"inner": {"steps": 6}, "outer": {"rows": 2}}
    assert totals.seconds["outer"] >= totals.seconds["inner"] >= 0.02


def test_the_decode_steps_count_the_steps_alone(loaded):
    encoded = loaded.tokenizer(["Compute 7 * 6.", "What is 12 - 5?"], return_tensors="pt", padding=True)
    with phase_clock() as clock:
        greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 10, compiled=False)
    counters = clock.totals().counters[DECODE_STEPS]
    length = cache_length(encoded["input_ids"].shape[1] + 10)
    # the prefill wrote the first token: 9 one-token steps of 2 rows, each reading the whole cache through the mask
    assert counters == {"forward_passes": 9, "generated_tokens": 18, "kv_positions_read": 9 * 2 * length}


def test_a_scoring_round_names_its_phases_and_the_tokens_teacher_forcing_processed(loaded):
    prompts = [item.prompt for item in generate_suite("gpqa", n=4, seed=0)]
    settings = ScoringSettings(batching="static8", kv_cache=True)
    with phase_clock() as clock:
        run_scoring(loaded.model, loaded.tokenizer, [Pair("self", loaded.model, "SAME")], prompts, settings)
    totals = clock.totals()
    assert set(totals.seconds) == {CONTINUATIONS, TEACHER_FORCING, SCORES}
    widest = max(len(loaded.tokenizer(p)["input_ids"]) for p in prompts) + settings.positions
    assert totals.counters[TEACHER_FORCING] == {"processed_tokens": len(prompts) * widest,
                                                "head_tokens": len(prompts) * (settings.positions + 1)}
