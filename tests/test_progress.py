"""Progress bars: silent unless asked for or on a terminal outside CI, rounds and item counts shown,
pytest's capture suspended for each write, measure's results unchanged by a bar."""

from __future__ import annotations

import io
from contextlib import contextmanager

import pytest

from harness.measure.timing import MeasureSettings, measure
from harness.pipelines.progress import (
    WARM_UP,
    CaseProgress,
    ProgressWriter,
    advance,
    bar_enabled,
    case_progress,
)
from harness.records import PipelineOutput

ITEMS = 5


class TerminalLike(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeCaptureManager:
    """Counts how often capture is suspended, and whether a write happens while it is."""

    def __init__(self) -> None:
        self.suspensions = 0
        self.suspended = False

    @contextmanager
    def global_and_fixture_disabled(self):
        self.suspensions += 1
        self.suspended = True
        try:
            yield
        finally:
            self.suspended = False


class RecordingTarget(io.StringIO):
    def __init__(self, capture_manager: FakeCaptureManager) -> None:
        super().__init__()
        self.capture_manager = capture_manager
        self.writes_while_suspended: list[bool] = []

    def write(self, text: str) -> int:
        self.writes_while_suspended.append(self.capture_manager.suspended)
        return super().write(text)


def fake_run(items: int = ITEMS) -> PipelineOutput:
    """A pipeline run over `items` items that reports each one, as the real pipelines do per item or batch."""
    for _ in range(items):
        advance()
    return PipelineOutput(quality={"accuracy": 1.0}, counters={"generated_tokens": 2 * items},
                          item_ids=[f"q{i}" for i in range(items)], item_scores=[1.0] * items,
                          item_outputs=["x"] * items)


def three_rounds(progress: CaseProgress) -> None:
    progress.start_round(WARM_UP, 3)
    fake_run(2)  # the warm-up runs fewer items: never the total
    for index in (1, 2, 3):
        progress.start_round(index, 3)
        fake_run()


@pytest.fixture(autouse=True)
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)  # the tests set CI themselves where it matters


def test_advance_without_a_bar_does_nothing() -> None:
    advance()
    advance(8)
    assert fake_run().item_ids == [f"q{i}" for i in range(ITEMS)]


def test_mode_on_shows_rounds_and_item_counts() -> None:
    file = io.StringIO()
    with case_progress("eval[math|reference]", mode="on", file=file, mininterval=0) as progress:
        three_rounds(progress)
    text = file.getvalue()
    assert "eval[math|reference]" in text
    assert "warm-up" in text
    for index in (1, 2, 3):
        assert f"round {index}/3" in text
    assert f"{ITEMS}/{ITEMS}" in text  # later rounds know the total from the first
    assert "2/" not in text.split("round 1/3")[0]  # the warm-up counted without a total


def test_off_and_auto_on_a_file_write_nothing() -> None:
    for mode, file in (("off", TerminalLike()), ("auto", io.StringIO())):
        with case_progress("case", mode=mode, file=file, mininterval=0) as progress:
            three_rounds(progress)
        assert file.getvalue() == "", mode


def test_auto_on_a_terminal_draws_outside_ci_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bar_enabled("auto", TerminalLike())
    monkeypatch.setenv("CI", "true")
    assert not bar_enabled("auto", TerminalLike())
    file = TerminalLike()
    with case_progress("case", mode="auto", file=file, mininterval=0) as progress:
        three_rounds(progress)
    assert file.getvalue() == ""
    assert bar_enabled("on", io.StringIO())  # "on" is for log files, CI or not


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="progress mode"):
        bar_enabled("sometimes", io.StringIO())


def test_the_bar_is_current_only_inside_its_case() -> None:
    file = io.StringIO()
    with case_progress("case", mode="on", file=file, mininterval=0) as progress:
        progress.start_round(1, 1)
        advance(3)
    written = file.getvalue()
    advance(4)  # no bar any more: nothing drawn
    assert "3 items" in written
    assert file.getvalue() == written


def test_writer_suspends_capture_for_each_write() -> None:
    manager = FakeCaptureManager()
    target = RecordingTarget(manager)
    lines_ended = []
    writer = ProgressWriter(manager, target, before_write=lambda: lines_ended.append(manager.suspended))
    assert writer.write("bar") == 3
    writer.flush()
    assert target.getvalue() == "bar"
    assert target.writes_while_suspended == [True]
    assert lines_ended == [True]
    assert not writer.isatty()  # asked of the real stream, with capture suspended
    assert manager.suspensions == 2


def test_writer_decides_auto_from_the_real_stream() -> None:
    manager = FakeCaptureManager()
    assert bar_enabled("auto", ProgressWriter(manager, TerminalLike()))
    target = TerminalLike()
    with case_progress("case", mode="auto", file=ProgressWriter(manager, target), mininterval=0) as progress:
        three_rounds(progress)
    assert "round 3/3" in target.getvalue()
    assert not manager.suspended


def test_measure_with_progress_keeps_output_and_speed() -> None:
    settings = MeasureSettings(rounds=3)
    plain_output, plain_speed = measure(run=fake_run, warm_up=lambda: fake_run(2), settings=settings)
    marks: list[tuple[int, int]] = []
    file = io.StringIO()
    with case_progress("case", mode="on", file=file, mininterval=0) as progress:
        def hook(index: int, total: int, label: str) -> None:
            marks.append((index, total))
            progress.start_round(index, total, "kv_cache=on")

        output, speed = measure(run=fake_run, warm_up=lambda: fake_run(2), settings=settings, progress=hook)
    assert marks == [(WARM_UP, 3), (1, 3), (2, 3), (3, 3)]
    assert "kv_cache=on round 3/3" in file.getvalue()
    assert output == plain_output
    assert len(speed.round_seconds) == len(plain_speed.round_seconds) == 3
    assert (speed.items_per_round, speed.tokens_per_round) == (plain_speed.items_per_round, plain_speed.tokens_per_round)
    assert "round 3/3" in file.getvalue() and f"{ITEMS}/{ITEMS}" in file.getvalue()
