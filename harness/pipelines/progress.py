"""Progress of long bench cases: one tqdm bar per case, counting items per round, silent in CI logs.

Pipelines call `advance(n)` after each item or batch. It does nothing unless a bar is current, so the
pipelines run unchanged outside pytest. `case_progress` opens a case's bar and makes it current;
`measure` marks each variant's warm-up and timed rounds through `CaseProgress.start_round`.

Inside pytest the bar's stream is a `ProgressWriter`: pytest captures stdout/stderr during a test, so
the writer suspends the capture for each write, as pytest's own live logging does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TextIO

from tqdm import tqdm

ProgressMode = Literal["auto", "on", "off"]
MODES: tuple[str, ...] = ("auto", "on", "off")
WARM_UP = 0  # start_round's index for the warm-up; timed rounds count from 1

_current: ContextVar[CaseProgress | None] = ContextVar("harness_case_progress", default=None)


def in_ci() -> bool:
    """Whether the CI environment variable is set (GitHub, GitLab and most runners set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def bar_enabled(mode: ProgressMode, file: TextIO) -> bool:
    """"on" always, "off" never, "auto" only on a terminal outside CI: a log file gets no bar lines."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty()) and not in_ci()


class CaseProgress:
    """A case's bar: the item count of the round running now, with `round i/n` or `warm-up` beside it.

    Items per round are unknown until a timed round has run; the first timed round counts without a
    total, later rounds take its count (rounds of one variant run the same items). The warm-up runs
    other items (usually fewer), so its count is never taken as the total.
    """

    def __init__(self, bar: tqdm | None) -> None:
        self._bar = bar  # None: progress is off and every method does nothing
        self._round = WARM_UP
        self._item_total: int | None = None

    def start_round(self, index: int, total: int, label: str = "") -> None:
        """Mark the warm-up (index WARM_UP) or timed round `index` of `total` of the variant `label` (the case's
        variants take turns, `measure.measure_interleaved`); the count starts at 0."""
        if self._bar is None:
            return
        if self._round != WARM_UP:  # a timed round just ended: its count is every round's total
            self._item_total = self._bar.n
        self._round = index
        stage = "warm-up" if index == WARM_UP else f"round {index}/{total}"
        self._bar.set_postfix_str(f"{label} {stage}" if label else stage, refresh=False)
        self._bar.reset(total=self._item_total)  # one refresh, with the new postfix

    def advance(self, items: int) -> None:
        if self._bar is not None:
            self._bar.update(items)


@contextmanager
def case_progress(description: str, mode: ProgressMode = "auto", file: TextIO | None = None,
                  mininterval: float = 0.5) -> Iterator[CaseProgress]:
    """One bar for one case, current (for `advance`) while the block runs; removed from the screen after.

    `file` defaults to sys.stderr; in pytest pass a ProgressWriter. `mininterval` (seconds between
    redraws) keeps the bar cheap and the terminal calm; tests set it to 0 to see every update.
    """
    stream = file if file is not None else sys.stderr
    if not bar_enabled(mode, stream):
        yield CaseProgress(None)
        return
    bar = tqdm(desc=description, total=None, unit=" items", file=stream, leave=False, mininterval=mininterval,
               miniters=1,  # fixed: no dynamic miniters, so tqdm's monitor thread never redraws the bar
               **_width(stream))
    progress = CaseProgress(bar)
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)
        bar.close()


def advance(items: int = 1) -> None:
    """Count `items` finished items (or a finished batch of that many) on the current case's bar, if any."""
    progress = _current.get()
    if progress is not None:
        progress.advance(items)


def _width(stream: TextIO) -> dict:
    """tqdm's width arguments: follow the terminal, or, through pytest's capture, its width at the start."""
    if isinstance(stream, ProgressWriter):
        # tqdm sizes the bar from the stream's file descriptor, which pytest redirects during a test.
        return {"ncols": stream.columns()}
    return {"dynamic_ncols": True}


def _columns_of(stream: TextIO) -> int | None:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return columns - 1 if columns > 1 else None  # one spare column, as tqdm keeps, so no wrap; 0: size unknown


class ProgressWriter:
    """A stream for the bar that writes to `target` (the real terminal) with pytest's capture suspended.

    `capture_manager` is pytest's "capturemanager" plugin (duck-typed: only its
    `global_and_fixture_disabled()` context manager is used). `before_write`, if given, runs before
    each write inside the suspension: pass the terminal reporter's `ensure_newline`, so the bar starts
    below the line pytest leaves open for the test's outcome and pytest reprints that line after.
    """

    def __init__(self, capture_manager, target: TextIO, before_write: Callable[[], None] | None = None) -> None:
        self._capture_manager = capture_manager
        self._target = target
        self._before_write = before_write
        self.encoding = getattr(target, "encoding", None)  # tqdm draws a unicode bar only if this says UTF

    def write(self, text: str) -> int:
        with self._capture_manager.global_and_fixture_disabled():
            if self._before_write is not None:
                self._before_write()
            written = self._target.write(text)
            self._target.flush()  # flushed inside the suspension, or the bytes land in the capture
        return written

    def flush(self) -> None:
        """Nothing left to flush: each write flushes before the capture resumes."""

    def isatty(self) -> bool:
        """Whether the real stream is a terminal (asked with capture suspended: captured, it is a file)."""
        with self._capture_manager.global_and_fixture_disabled():
            isatty = getattr(self._target, "isatty", None)
            return bool(isatty and isatty())

    def columns(self) -> int | None:
        """The real terminal's width for the bar, or None where it cannot be told."""
        with self._capture_manager.global_and_fixture_disabled():
            return _columns_of(self._target)
