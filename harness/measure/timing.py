"""Timing and memory of pipeline runs: warm-up, timed rounds interleaved between a case's variants, CUDA
synchronization, peak memory, and the paired re-timing of a speed regression. Judging is not done here.

Every round is timed by wall clock, and on a CPU by the process's CPU time as well (`time.process_time`: every
thread's, bitsandbytes' OpenMP workers included). Speed is judged on CPU time there: on a shared 2-core VM a
neighbour's load moved one round's wall time by 42-48% (coefficient of variation) and its CPU time by 5-11%.
"""

from __future__ import annotations

import gc
import math
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.pipelines.phases import phase_clock
from harness.pipelines.progress import WARM_UP
from harness.records import CPU_TIME, WALL, PipelineOutput, Speed

# progress(index, total, label): called before the warm-up (index WARM_UP) of the side `label` and before its
# timed round `index` of `total` (CaseProgress.start_round).
RoundHook = Callable[[int, int, str], None]

# Seconds of timed rounds a variant gets by default, per device (see MeasureSettings.rounds_after). A round's CPU time
# is steady on its own (0.4-1.1% quiet, 5-11% under load); a GPU round of a few milliseconds is not.
DEFAULT_MIN_TIME = {"cpu": 0.0, "cuda": 1.0}


def default_min_time(device: str) -> float:
    return DEFAULT_MIN_TIME["cuda" if device == "cuda" else "cpu"]


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
    count_instructions: bool = False  # --bench-timer instructions: every round's instructions too (InstructionCounter)

    def rounds_after(self, first_seconds: float) -> int:
        """How many rounds to time after a first one that took `first_seconds`.

        A 1-second round on a shared 2-core CPU varies by 5-15% from one round to the next, a 30-second
        one by ~2%: a time budget gives a fast variant the rounds that make its median as steady as a
        slow one's, which is what lets the gate tell a 25% slowdown from noise.
        """
        wanted = math.ceil(self.min_time / first_seconds) if first_seconds > 0 else self.rounds
        return min(max(self.rounds, wanted), max(self.rounds, self.max_rounds)) - 1


def perf_counter_timer(target: Callable[[], object], rounds: int, earlier: list[float] | None = None) -> list[float]:
    """Seconds of `rounds` calls of `target` in a row, after `earlier` ones (a study's blocked rounds)."""
    seconds = list(earlier or [])
    for _ in range(rounds):
        start = time.perf_counter()
        target()
        seconds.append(time.perf_counter() - start)
    return seconds


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class InstructionCounter:
    """Instructions a round executes, counted by valgrind's callgrind (`--bench-timer instructions`): no neighbour's
    load moves them, at 20-100x the run time, and blind to memory bandwidth, threads and the GPU.

    The process must run under callgrind with collection off at start (COMMAND says how); each round switches it on
    and dumps a part file, whose `summary:` line is the round's count."""

    OUT_DIR = ".bench-callgrind"  # callgrind opens its output file at start: this folder must exist before it runs
    COMMAND = ("mkdir -p .bench-callgrind && valgrind --tool=callgrind --collect-atstart=no "
               "--callgrind-out-file=.bench-callgrind/callgrind.out.%p python -m pytest --benchmark --bench-timer "
               "instructions -k CASE")

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why instructions cannot be counted in this process (None: they can)."""
        import shutil

        if shutil.which("valgrind") is None:
            return "--bench-timer instructions needs valgrind (Debian/Ubuntu: apt-get install valgrind)"
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                under_valgrind = "vgpreload" in maps.read()
        except OSError:
            under_valgrind = False
        if not under_valgrind or not torch._C._valgrind_supported_platform():
            return f"--bench-timer instructions counts under callgrind: run {InstructionCounter.COMMAND}"
        return None

    def start(self) -> None:
        torch._C._valgrind_toggle()

    def stop(self) -> int:
        torch._C._valgrind_toggle_and_dump_stats()
        parts = list(Path(self.OUT_DIR).glob(f"callgrind.out.{os.getpid()}.*")) or list(Path().glob(f"callgrind.out.{os.getpid()}.*"))
        if not parts:
            raise RuntimeError(f"callgrind wrote no part file for this round: run {self.COMMAND}")
        newest = max(parts, key=lambda p: int(p.suffix.lstrip(".") or 0))
        match = re.search(r"^summary:\s+(\d+)", newest.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction count in {newest}")
        return int(match.group(1))


def _no_progress(index: int, total: int, label: str = "") -> None:
    return None


def _synchronize(devices: tuple[int, ...]) -> None:
    """Wait for the GPUs' queued work: the current device's, or each of `devices`."""
    for device in devices or (None,):
        torch.cuda.synchronize(device)


def _round_share(planned: int, cycles: int, cycle: int) -> int:
    """How many of a side's `planned` rounds cycle `cycle` of `cycles` times: as even as can be, earlier first."""
    return planned // cycles + (1 if cycle < planned % cycles else 0)


@dataclass
class Side:
    """One variant of a case in an interleaved measurement: a run of its pipeline, and its warm-up."""

    label: str
    run: Callable[[], PipelineOutput]
    warm_up: Callable[[], object]
    resident_bytes: int = 0  # what the variant keeps resident between rounds (its weights): part of its CPU peak


def _rss_kib(field_name: str) -> int | None:
    """VmRSS or VmHWM of this process, in KiB, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset the process's resident high-water mark (Linux >= 4.0: writing 5 to clear_refs); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class _CpuPeak:
    """How far resident memory rises above its level at `start` during the rounds that follow: a case's own peak,
    where the process's high-water mark holds every model and case the session ran before."""

    def start(self) -> None:
        self.before = _rss_kib("VmRSS") if _reset_peak_rss() else None

    def growth_bytes(self) -> int | None:
        peak = _rss_kib("VmHWM")
        return None if self.before is None or peak is None else max(0, peak - self.before) * 1024


@dataclass
class _SideRounds:
    """What the measurement has of one side so far."""

    side: Side
    planned: int = 0  # rounds in all, known once its first round has been timed
    round_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    instructions: list[int] = field(default_factory=list)
    warm_up_seconds: float = 0.0
    first_output: PipelineOutput | None = None
    last_output: PipelineOutput | None = None
    cuda_peak: int = 0
    round_peak_growth: int | None = None  # CPU: the most resident memory grew above its start during a cycle's rounds
    error: Exception | None = None
    phase_seconds: dict[str, list[float]] = field(default_factory=dict)  # per phase, its time in each round
    phase_counters: dict[str, dict[str, int]] = field(default_factory=dict)  # the last round's


def measure_interleaved(sides: list[Side], settings: MeasureSettings,
                        progress: RoundHook | None = None) -> list[tuple[PipelineOutput, Speed] | Exception]:
    """Warm every side up, then time their rounds in `settings.rounds` cycles, each side's rounds spread over them.

    A shared 2-core VM changes speed over minutes. Timed in blocks (all the reference's rounds, then all of a
    variant's), a case's speedup takes such a change as its own: 11.9% run-to-run spread on the search case,
    against 3.1% for rounds taken side by side (`research.studies.pairing_study`). In cycles, every side's
    rounds sample the same minutes, at the cost of no extra round. The order reverses each cycle (A B C, C B A,
    ...), so a steady drift favours no side. A side's first round sizes its rounds (`rounds_after`).

    The result per side: its last round's output and its speed, or the error it raised; a failed side takes
    no further round and the others go on, unless it is the first (the others are compared with it).
    """
    mark_round = progress or _no_progress
    states = [_SideRounds(side) for side in sides]
    for state in states:  # first-call costs, and with compile=on the compilation, land in no round
        mark_round(WARM_UP, settings.rounds, state.side.label)
        _attempt(state, lambda: _warm_up(state, settings))
        if states[0].error is not None:
            break
    gc.collect()  # the garbage of earlier cases is not this case's to collect
    cycles = max(1, settings.rounds)
    for cycle in range(cycles):
        for state in states if cycle % 2 == 0 else reversed(states):
            if state.error is None and states[0].error is None:
                _attempt(state, lambda: _time_cycle(state, cycle, cycles, settings, mark_round))
    if states[0].error is not None:  # the sides not measured yet fail as the first did
        return [state.error or states[0].error for state in states]
    return [state.error if state.error is not None else _result(state, settings) for state in states]


def _attempt(state: _SideRounds, step: Callable[[], None]) -> None:
    try:
        step()
    except Exception as error:  # this side's failure (out of memory, a time limit, a bug) is kept for its case
        state.error = error


def _warm_up(state: _SideRounds, settings: MeasureSettings) -> None:
    start = time.perf_counter()
    state.side.warm_up()
    if settings.device == "cuda":
        _synchronize(settings.cuda_devices)
    state.warm_up_seconds = time.perf_counter() - start


def _time_cycle(state: _SideRounds, cycle: int, cycles: int, settings: MeasureSettings, mark_round) -> None:
    """This side's rounds of one cycle; in the first, its first round sizes the rest."""
    on_cuda = settings.device == "cuda"
    cpu_peak = _CpuPeak()
    if on_cuda:
        _synchronize(settings.cuda_devices)
        for device in settings.cuda_devices or (None,):
            torch.cuda.reset_peak_memory_stats(device)
    else:
        cpu_peak.start()
    if cycle == 0:
        _time_round(state, settings, mark_round)
        state.planned = 1 if settings.rounds == 1 else 1 + settings.rounds_after(state.round_seconds[0])
    while len(state.round_seconds) < sum(_round_share(state.planned, cycles, c) for c in range(cycle + 1)):
        _time_round(state, settings, mark_round)
    if on_cuda:  # summed over the GPUs of a split model: what the case needs in all
        peak = sum(torch.cuda.max_memory_allocated(device) for device in settings.cuda_devices or (None,))
        state.cuda_peak = max(state.cuda_peak, peak)
    elif (growth := cpu_peak.growth_bytes()) is not None:
        state.round_peak_growth = max(state.round_peak_growth or 0, growth)


def _time_round(state: _SideRounds, settings: MeasureSettings, mark_round) -> None:
    mark_round(len(state.round_seconds) + 1, max(state.planned, settings.rounds), state.side.label)
    counter = InstructionCounter() if settings.count_instructions else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if counter:
        counter.start()
    with phase_clock() as clock:
        output = state.side.run()
    if settings.device == "cuda":
        _synchronize(settings.cuda_devices)  # the round ends when the GPUs' work does
    if counter:
        state.instructions.append(counter.stop())
    state.round_seconds.append(time.perf_counter() - start)
    state.cpu_seconds.append(time.process_time() - cpu_start)
    phases = clock.totals()  # after the synchronization: every event has run
    for name, seconds in phases.seconds.items():
        state.phase_seconds.setdefault(name, []).append(seconds)
    state.phase_counters = phases.counters
    if state.first_output is None:
        state.first_output = output
    elif settings.same_outputs and output.item_outputs != state.first_output.item_outputs:
        raise RuntimeError("outputs differ between rounds of the same variant: the pipeline is not deterministic")
    state.last_output = output


def _result(state: _SideRounds, settings: MeasureSettings) -> tuple[PipelineOutput, Speed]:
    output = state.last_output
    if output is None:
        raise RuntimeError("the measurement ran no round")
    on_cpu = settings.device != "cuda"
    if not on_cpu:
        peak, kind = state.cuda_peak, "cuda_max_allocated"
    elif state.round_peak_growth is not None:
        peak, kind = state.side.resident_bytes + state.round_peak_growth, "cpu_case_peak"
    else:
        peak, kind = _process_peak_rss_bytes(), "cpu_process_peak_rss"
    speed = Speed(
        round_seconds=[float(s) for s in state.round_seconds],
        items_per_round=len(output.item_ids),
        tokens_per_round=int(output.counters.get("generated_tokens", 0)),
        peak_memory_bytes=int(peak),
        memory_kind=kind,
        warm_up_seconds=float(state.warm_up_seconds),
        cpu_seconds=[float(s) for s in state.cpu_seconds],
        instructions=list(state.instructions),
        timer=judged_timer(settings.device),
        phase_seconds={name: [float(s) for s in seconds] for name, seconds in state.phase_seconds.items()},
        phase_counters=state.phase_counters,
    )
    return output, speed


def judged_timer(device: str) -> str:
    """The timer speed is judged on: CPU time on a CPU, wall time (rounds ending at a synchronize) on a GPU."""
    return WALL if device == "cuda" else CPU_TIME


def measure(run: Callable[[], PipelineOutput], warm_up: Callable[[], object], settings: MeasureSettings,
            progress: RoundHook | None = None) -> tuple[PipelineOutput, Speed]:
    """One side alone: warm up, then its timed rounds (`measure_interleaved`); its error is raised."""
    (result,) = measure_interleaved([Side("", run, warm_up)], settings, progress)
    if isinstance(result, Exception):
        raise result
    return result


def time_pairs(first: Callable[[], object], second: Callable[[], object], pairs: int,
               device: str = "cpu", cuda_devices: tuple[int, ...] = ()) -> list[list[float]]:
    """[seconds of `first`, seconds of `second`] for each of `pairs` rounds taken side by side (a speed
    regression's confirmation: the reference, then the variant), by the device's judged timer, each round ending
    when the GPUs' work does."""
    clock = time.perf_counter if judged_timer(device) == WALL else time.process_time

    def timed(call: Callable[[], object]) -> float:
        start = clock()
        call()
        if device == "cuda":
            _synchronize(cuda_devices)
        return clock() - start

    if device == "cuda":
        _synchronize(cuda_devices)  # the work queued before is not the first round's
    return [[timed(first), timed(second)] for _ in range(pairs)]
