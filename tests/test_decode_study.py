"""The decode study's table: one row for each step attention named, each turn, in the order timed."""

from __future__ import annotations

from harness.pipelines import static_greedy
from research.studies import decode_study


def test_each_named_step_attention_is_timed_in_turn_each_turn(capsys, monkeypatch) -> None:
    # The study sets compile=on's step attention for its process; the copy keeps it from the other tests.
    monkeypatch.setattr(static_greedy, "BATCHED_STEP_ATTENTION", dict(static_greedy.BATCHED_STEP_ATTENTION))
    in_effect = []
    time_steps = decode_study.time_steps

    def recording_time_steps(*args, **kwargs):
        in_effect.append(static_greedy.BATCHED_STEP_ATTENTION["sdpa"])
        return time_steps(*args, **kwargs)

    monkeypatch.setattr(decode_study, "time_steps", recording_time_steps)
    decode_study.main(["--model", "random:tiny-llama", "--steps", "3", "--batch", "2", "--turns", "2",
                       "--batched-step-attention", "grouped_sdpa", "--batched-step-attention", "eager"])
    assert in_effect == ["grouped_sdpa", "eager", "grouped_sdpa", "eager"]
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| random:tiny-llama")]
    assert len(rows) == 4
    cells = [row.strip("|").split("|") for row in rows]
    assert all(cell[1].strip() == "2" and float(cell[4]) > 0 and cell[6].strip() == "0" for cell in cells)
    # the last one named, timed last, and not the default (grouped_sdpa), so the study did set it
    assert static_greedy.BATCHED_STEP_ATTENTION["sdpa"] == "eager"
