"""How fast this CPU runs right now: a fixed workload timed once per process, kept in the fingerprint.

CI runners that report the same CPU model are not the same machine: one CI run of the gate timed every case
1.5-2.5x slower than the machine that saved the CPU baseline, and its bitsandbytes nf4 variants lost 20-30% of
their speedup there. The workload's time on each side gives the factor by which absolute times are scaled
before they are compared, and says when the A/A noise learned on one machine does not describe another.
"""

from __future__ import annotations

import functools
import math
import statistics
import time

import torch

FINGERPRINT_KEY = "calibration_seconds"
# Beyond this factor between the two machines' calibrations, A/A noise learned on one does not hold on the other.
SAME_SPEED_FACTOR = 1.25

_WIDTH, _ROWS, _STEPS, _REPEATS = 256, 8, 400, 25


def _workload(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # Small matmuls between pointwise ops, one thread: what the embedded model's forward is made of, where
    # per-op overhead weighs as much as the arithmetic.
    for _ in range(_STEPS):
        x = torch.nn.functional.layer_norm(torch.nn.functional.gelu(x @ weight), (_WIDTH,))
    return x


@functools.cache  # once per process: the fingerprint is taken again for every case
def calibration_seconds() -> float:
    """The median time of the fixed workload over a few repeats, on one torch thread."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_ROWS, _WIDTH, generator=generator)
    weight = torch.randn(_WIDTH, _WIDTH, generator=generator) / math.sqrt(_WIDTH)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            _workload(x, weight)  # warm-up: first-call allocations and dispatch caches
            times = []
            for _ in range(_REPEATS):
                start = time.process_time()  # CPU time, as the CPU gate's rounds are judged by
                _workload(x, weight)
                times.append(time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    return round(statistics.median(times), 6)


def machine_scale(run: dict, saved: dict) -> float | None:
    """How many times slower this run's machine ran the calibration than the saved measurement's machine;
    None when either fingerprint lacks it (saved before it was kept, or not a CPU run)."""
    now, then = run.get(FINGERPRINT_KEY), saved.get(FINGERPRINT_KEY)
    if not _positive(now) or not _positive(then):
        return None
    return now / then


def slower_by(scale: float | None) -> float | None:
    """The factor to divide this run's times by: a slower calibration only. One series of runs' calibrations spread 1.7x
    (10.8-18.2 ms), so a fast one must not make the rounds that follow look slow; a slow one can only forgive."""
    return scale if scale is not None and scale > 1.0 else None


def same_speed(scale: float | None) -> bool:
    """Whether two machines ran the calibration within SAME_SPEED_FACTOR of each other (unknown counts as same:
    there is nothing to tell them apart by)."""
    return scale is None or 1 / SAME_SPEED_FACTOR <= scale <= SAME_SPEED_FACTOR


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
