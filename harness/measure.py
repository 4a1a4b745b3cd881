"""Timing and memory of a pipeline run: warm-up, timed rounds, CUDA synchronization, peak memory.

The round timer is passed in (the plugin hands pytest-benchmark's fixture over), so there is one
clock and pytest-benchmark's JSON holds the same rounds this module reports. Judging is not done here.
"""

from __future__ import annotations

import gc
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.progress import WARM_UP
from harness.records import PipelineOutput, Speed

# timer(target, rounds, earlier) -> seconds of every round, `earlier` (rounds already timed by the same clock)
# first; target's result is kept by the caller.
RoundTimer = Callable[[Callable[[], object], int, list[float]], list[float]]
# progress(index, total): called before the warm-up (index WARM_UP) and before timed round index of total.
RoundHook = Callable[[int, int], None]

# Seconds of timed rounds a variant gets by default (see MeasureSettings.rounds_after).
DEFAULT_MIN_TIME = 10.0


@dataclass(frozen=True)
class MeasureSettings:
    rounds: int = 3  # at least this many timed rounds ...
    min_time: float = 0.0  # ... and more, until the timed rounds add up to this many seconds ...
    max_rounds: int = 25  # ... but never more than this
    device: str = "cpu"
    # Trained weights give the same outputs every round; random ones (speed profiles) sit on near-ties that a
    # GPU's run-to-run rounding can tip, so their rounds may differ.
    same_outputs: bool = True
    # The GPUs a model spread by a device map runs on: each is synchronized and its peak memory counted. Empty:
    # the current device only, so that a one-GPU run never opens a CUDA context on the machine's other GPUs.
    cuda_devices: tuple[int, ...] = ()

    def rounds_after(self, first_seconds: float) -> int:
        """How many rounds to time after a first one that took `first_seconds`.

        A 1-second round on a shared 2-core CPU varies by 5-15% from one round to the next, a 30-second
        one by ~2%: a time budget gives a fast variant the rounds that make its median as steady as a
        slow one's, which is what lets the gate tell a 25% slowdown from noise.
        """
        wanted = math.ceil(self.min_time / first_seconds) if first_seconds > 0 else self.rounds
        return min(max(self.rounds, wanted), max(self.rounds, self.max_rounds)) - 1


def perf_counter_timer(target: Callable[[], object], rounds: int, earlier: list[float] | None = None) -> list[float]:
    """The fallback clock, for use outside pytest."""
    seconds = list(earlier or [])
    for _ in range(rounds):
        start = time.perf_counter()
        target()
        seconds.append(time.perf_counter() - start)
    return seconds


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _no_progress(index: int, total: int) -> None:
    return None


def _synchronize(devices: tuple[int, ...]) -> None:
    """Wait for the GPUs' queued work: the current device's, or each of `devices`."""
    for device in devices or (None,):
        torch.cuda.synchronize(device)


def measure(
    run: Callable[[], PipelineOutput],
    warm_up: Callable[[], object],
    settings: MeasureSettings,
    timer: RoundTimer = perf_counter_timer,
    progress: RoundHook | None = None,
) -> tuple[PipelineOutput, Speed]:
    """Warm up, then time full runs: a first round sizes the rest (`MeasureSettings.rounds_after`); the
    output is the last round's.

    `progress` (e.g. CaseProgress.start_round) is told which round starts. Timed rounds mark
    themselves, since the timer owns the round loop: the mark (one bar redraw) is inside the round.
    """
    on_cuda = settings.device == "cuda"
    mark_round = progress or _no_progress
    planned = [settings.rounds]  # known once the first round has been timed
    mark_round(WARM_UP, planned[0])
    warm_up_start = time.perf_counter()
    warm_up()
    if on_cuda:
        _synchronize(settings.cuda_devices)
    warm_up_seconds = time.perf_counter() - warm_up_start  # with compile=on: the compilation
    outputs: list[PipelineOutput] = []

    def one_round() -> PipelineOutput:
        mark_round(len(outputs) + 1, planned[0])  # one output per round so far
        output = run()
        if on_cuda:
            _synchronize(settings.cuda_devices)  # the round ends when the GPUs' work does
        outputs.append(output)
        return output

    if on_cuda:
        _synchronize(settings.cuda_devices)
        for device in settings.cuda_devices or (None,):
            torch.cuda.reset_peak_memory_stats(device)
    gc.collect()  # the garbage of earlier cases is not this case's to collect
    if settings.rounds == 1:  # one round asked for: nothing to size
        round_seconds = timer(one_round, 1, [])
    else:
        first = perf_counter_timer(one_round, 1)
        planned[0] = 1 + settings.rounds_after(first[0])
        round_seconds = timer(one_round, planned[0] - 1, first)
    if not outputs:
        raise RuntimeError("the round timer ran no round")
    if settings.same_outputs and any(o.item_outputs != outputs[-1].item_outputs for o in outputs):
        raise RuntimeError("outputs differ between rounds of the same variant: the pipeline is not deterministic")
    output = outputs[-1]
    if on_cuda:
        # Summed over the GPUs of a split model: what the case needs in all.
        peak = sum(torch.cuda.max_memory_allocated(device) for device in settings.cuda_devices or (None,))
        kind = "cuda_max_allocated"
    else:
        peak, kind = _process_peak_rss_bytes(), "cpu_process_peak_rss"
    speed = Speed(
        round_seconds=[float(s) for s in round_seconds],
        items_per_round=len(output.item_ids),
        tokens_per_round=int(output.counters.get("generated_tokens", 0)),
        peak_memory_bytes=int(peak),
        memory_kind=kind,
        warm_up_seconds=float(warm_up_seconds),
    )
    return output, speed


def time_pairs(first: Callable[[], object], second: Callable[[], object], pairs: int,
               device: str = "cpu", cuda_devices: tuple[int, ...] = ()) -> list[list[float]]:
    """[seconds of `first`, seconds of `second`] for each of `pairs` rounds taken side by side (a speed
    regression's confirmation: the reference, then the variant), each round ending when the GPUs' work does."""

    def timed(call: Callable[[], object]) -> float:
        start = time.perf_counter()
        call()
        if device == "cuda":
            _synchronize(cuda_devices)
        return time.perf_counter() - start

    if device == "cuda":
        _synchronize(cuda_devices)  # the work queued before is not the first round's
    return [[timed(first), timed(second)] for _ in range(pairs)]
