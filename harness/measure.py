"""Timing and memory of a pipeline run: warm-up, timed rounds, CUDA synchronization, peak memory.

The round timer is passed in (the plugin hands pytest-benchmark's fixture over), so there is one
clock and pytest-benchmark's JSON holds the same rounds this module reports. Judging is not done here.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.progress import WARM_UP
from harness.records import PipelineOutput, Speed

# timer(target, rounds) -> seconds of each round; target's result is kept by the caller.
RoundTimer = Callable[[Callable[[], object], int], list[float]]
# progress(index, total): called before the warm-up (index WARM_UP) and before timed round index of total.
RoundHook = Callable[[int, int], None]


@dataclass(frozen=True)
class MeasureSettings:
    rounds: int = 3
    device: str = "cpu"


def perf_counter_timer(target: Callable[[], object], rounds: int) -> list[float]:
    """The fallback clock, for use outside pytest."""
    seconds = []
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


def measure(
    run: Callable[[], PipelineOutput],
    warm_up: Callable[[], object],
    settings: MeasureSettings,
    timer: RoundTimer = perf_counter_timer,
    progress: RoundHook | None = None,
) -> tuple[PipelineOutput, Speed]:
    """Warm up, then time `settings.rounds` full runs; the output is the last round's.

    `progress` (e.g. CaseProgress.start_round) is told which round starts. Timed rounds mark
    themselves, since the timer owns the round loop: the mark (one bar redraw) is inside the round.
    """
    on_cuda = settings.device == "cuda"
    mark_round = progress or _no_progress
    mark_round(WARM_UP, settings.rounds)
    warm_up()
    outputs: list[PipelineOutput] = []

    def one_round() -> PipelineOutput:
        mark_round(len(outputs) + 1, settings.rounds)  # one output per round so far
        output = run()
        if on_cuda:
            torch.cuda.synchronize()  # the round ends when the GPU's work does
        outputs.append(output)
        return output

    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    round_seconds = timer(one_round, settings.rounds)
    if not outputs:
        raise RuntimeError("the round timer ran no round")
    if any(o.item_outputs != outputs[-1].item_outputs for o in outputs):
        raise RuntimeError("outputs differ between rounds of the same variant: the pipeline is not deterministic")
    output = outputs[-1]
    if on_cuda:
        peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    else:
        peak, kind = _process_peak_rss_bytes(), "cpu_process_peak_rss"
    speed = Speed(
        round_seconds=[float(s) for s in round_seconds],
        items_per_round=len(output.item_ids),
        tokens_per_round=int(output.counters.get("generated_tokens", 0)),
        peak_memory_bytes=int(peak),
        memory_kind=kind,
    )
    return output, speed
