"""Where a round's time goes: named phases of a pipeline (the continuations, the decode steps, teacher forcing),
timed inside the round, for a breakdown beside the round's own time.

Pipelines wrap a phase in `timed_phase(name, device)`; it does nothing unless a clock is current, so the pipelines
run unchanged outside a measurement. `measure` makes a `PhaseClock` current for each timed round. On a GPU a phase is
timed by CUDA events recorded on the stream, which add no synchronization: the host queues on, and the clock reads
the events once the round has ended. On a CPU it is wall time. A phase met several times in a round (one per batch)
adds up, and a phase may hold another (the decode steps within the continuations).

A phase can carry its own work counters (forward passes, KV positions read, processed tokens), filled in through
the dict `timed_phase` yields, so that its bandwidth or compute share can be computed as the round's is
(`measure.roofline`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

_current: ContextVar[PhaseClock | None] = ContextVar("harness_phase_clock", default=None)


@dataclass
class _Span:
    name: str
    start: torch.cuda.Event | float
    end: torch.cuda.Event | float
    counters: dict[str, int]


@dataclass
class PhaseTotals:
    """One round's phases: seconds and work counters, summed per name."""

    seconds: dict[str, float] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)


class PhaseClock:
    def __init__(self) -> None:
        self._spans: list[_Span] = []

    def add(self, span: _Span) -> None:
        self._spans.append(span)

    def totals(self) -> PhaseTotals:
        """The phases of the round, read once the GPU has run it (the caller synchronizes first)."""
        totals = PhaseTotals()
        for span in self._spans:
            if isinstance(span.start, float):
                seconds = span.end - span.start
            else:
                seconds = span.start.elapsed_time(span.end) / 1e3
            totals.seconds[span.name] = totals.seconds.get(span.name, 0.0) + seconds
            counted = totals.counters.setdefault(span.name, {})
            for key, value in span.counters.items():
                counted[key] = counted.get(key, 0) + value
        return totals


@contextmanager
def phase_clock() -> Iterator[PhaseClock]:
    """Make a fresh clock current for one round."""
    clock = PhaseClock()
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)


def _mark(device: torch.device) -> torch.cuda.Event | float:
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


@contextmanager
def timed_phase(name: str, device: torch.device) -> Iterator[dict[str, int]]:
    """Time the block as phase `name` of the current round; the dict it yields takes the phase's work counters."""
    counters: dict[str, int] = {}
    clock = _current.get()
    if clock is None:
        yield counters
        return
    start = _mark(device)
    yield counters
    clock.add(_Span(name, start, _mark(device), counters))


__all__ = ["PhaseClock", "PhaseTotals", "phase_clock", "timed_phase"]
