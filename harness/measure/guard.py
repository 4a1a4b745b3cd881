"""Failing one case cleanly so that the others go on: a time limit per case, and out-of-memory errors,
each turned into a message that names the fix; and a run stopped from outside (SIGTERM) ending as Ctrl-C
does, so that what it measured is still reported."""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")


class CaseFailure(Exception):
    """A case that cannot finish; the message says why and what to change."""


@contextmanager
def time_limit(seconds: float, case_id: str, limit: float | None = None) -> Iterator[None]:
    """Raise CaseFailure in the case if it runs past `seconds` (0: no limit); the message names `limit`, the
    case's whole limit, when this is what is left of it.

    SIGALRM interrupts Python code between bytecodes, and a long native call when it returns, so a loop
    that never ends is stopped; it needs the main thread of a POSIX process (elsewhere, no limit applies).
    """
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame) -> None:
        raise CaseFailure(f"{case_id} ran past its time limit of {limit or seconds:g} s and was stopped; if it is merely slow, "
                          "raise --bench-timeout (0: no limit) or give it fewer items, else look for a loop that "
                          "never ends (a stopping criterion that never fires, a generate without max_new_tokens)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class TimeBudget:
    """One case's time limit, spent over separate stretches: its variant's warm-up and rounds are timed in turn
    with the other variants' (`measure.measure_interleaved`), whose time is not its own."""

    def __init__(self, seconds: float, case_id: str) -> None:
        self.seconds = seconds  # 0: no limit
        self.left = seconds
        self.case_id = case_id

    def limited(self, call: Callable[[], T]) -> Callable[[], T]:
        """`call`, run under what is left of the limit, and charged for the time it takes."""

        def within_budget() -> T:
            if not self.seconds:
                return call()
            start = time.perf_counter()
            try:
                with time_limit(max(self.left, 1e-3), self.case_id, self.seconds):
                    return call()
            finally:
                self.left -= time.perf_counter() - start

        return within_budget


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def stop_on_sigterm() -> None:
    """`timeout`, CI runners and job schedulers stop a run with SIGTERM, whose default ends the process at once:
    the cases measured so far would be lost with it. As the KeyboardInterrupt of Ctrl-C, pytest ends the session
    instead, and the plugin reports (and with --bench-save-baseline saves) the cases that finished. A handler
    someone else installed is left alone."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def restore_sigterm() -> None:
    """SIGTERM's default again, for a process that goes on after the run (pytest.main called from a program)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a plain RuntimeError)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in ("out of memory", "can't allocate memory"))


def release_memory(device: str) -> None:
    """Free what a failed case held, once its frames are gone."""
    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def failing_cleanly_on_oom(call: Callable[[], T], case_id: str, device: str) -> Callable[[], T]:
    """`call`, whose out-of-memory error becomes the case's CaseFailure with the fix, the memory released."""

    def guarded() -> T:
        try:
            return call()
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            failure = out_of_memory_failure(case_id, device, error)
        release_memory(device)  # out of the except block, the failed round's frames and tensors are gone
        raise failure

    return guarded


def out_of_memory_failure(case_id: str, device: str, error: BaseException) -> CaseFailure:
    """Say how to make the case fit."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CaseFailure(f"{case_id} ran out of memory on {device} ({first_line}); the other cases go on. To make it "
                       "fit: fewer items per batch (batching=static8 instead of dynamic, or a smaller token budget), "
                       "a quantization variant, a smaller model, or a device with more memory")
