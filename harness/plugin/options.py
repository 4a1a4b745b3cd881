"""The --bench-* options: declared once, read once into a frozen `BenchOptions`, and checked before any work.

Every default lives on `BenchOptions`; `add_options` shows those same values to pytest, so the help, the parsed
options and a `BenchOptions()` built by hand agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from harness import toggles as toggle_registry
from harness.gate.policy import (
    CROSS_MACHINE_FACTOR,
    DEFAULT_SPEED_FACTOR,
    DEFAULT_TIME_FACTOR,
    GPU_SPEED_FACTOR,
    GPU_TIME_FACTOR,
    GatePolicy,
)
from harness.measure.inject import InjectionError, Injections, parse_injections
from harness.measure.timing import (
    DEFAULT_MIN_TIME,
    InstructionCounter,
    default_min_time,
)
from harness.pipelines.progress import MODES as PROGRESS_MODES
from harness.report import report_problem
from harness.store.baseline import unwritable

GATE_MATRIX = "all-on"  # the default --bench-matrix: what `pytest --benchmark` gates with no options
INSTRUCTIONS = "instructions"  # --bench-timer: count instructions under callgrind as well


@dataclass(frozen=True)
class BenchOptions:
    """The run's --bench-* options; each field is the option with `--bench-` dropped and dashes as underscores."""

    benchmark: bool = False
    model: str = "embedded"
    device: str = "auto"
    matrix: str = GATE_MATRIX
    rounds: int = 3
    min_time: float | None = None  # None: the device's default (DEFAULT_MIN_TIME)
    max_rounds: int = 25
    threads: str = "auto"
    speed_factor: float | None = None  # None: the policy's factor for the device
    timer: str = "auto"
    strict_env: bool = False
    confirm_pairs: int = 3
    confirm_all: bool = False
    save_baseline: bool = False
    reason: str = ""
    baseline_dir: str = "baselines"
    report: tuple[str, ...] = ()
    progress: str = "auto"
    timeout: float = 3600.0
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    inject: tuple[str, ...] = ()
    ratchet: bool = False
    device_map: str | None = None
    max_memory: str | None = None
    gpus_per_worker: int = 1

    @classmethod
    def from_config(cls, config: pytest.Config) -> BenchOptions:
        values = {}
        for option in fields(cls):
            value = config.getoption(_flag(option.name))
            values[option.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    @property
    def whole_matrix(self) -> bool:
        """A matrix other than the gate's: cases marked bench(..., gate=False) run too."""
        return self.matrix != GATE_MATRIX

    @property
    def count_instructions(self) -> bool:
        return self.timer == INSTRUCTIONS

    def min_time_on(self, device: str) -> float:
        """Seconds of timed rounds a variant gets at least on `device`."""
        return default_min_time(device) if self.min_time is None else self.min_time

    def baseline_directory(self, rootpath: Path) -> Path:
        directory = Path(self.baseline_dir)
        return directory if directory.is_absolute() else Path(rootpath) / directory


def _flag(name: str) -> str:
    return "--benchmark" if name == "benchmark" else "--bench-" + name.replace("_", "-")


def add_options(parser: pytest.Parser) -> None:
    default = BenchOptions()
    group = parser.getgroup("harness", "LLM inference benchmarks: speed and quality together")
    group.addoption("--benchmark", action="store_true", help="run the bench cases (and only them), gated against baselines")
    group.addoption("--bench-model", default=default.model,
                    help=f"'{default.model}' (default) or a local Hugging Face model directory")
    group.addoption("--bench-device", default=default.device, choices=("auto", "cpu", "cuda"))
    group.addoption("--bench-matrix", default=default.matrix, choices=toggle_registry.MATRICES,
                    help="variants per case, each with the reference and every exact toggle alone: all-on (all on; "
                         "default, the gate), leave-one-out (all on, and all on but one), ablation (each toggle alone, "
                         "all on), full (the cross product)")
    group.addoption("--bench-rounds", type=int, default=default.rounds,
                    help=f"timed rounds per variant, at least (default {default.rounds}; 1: a single round, no time budget)")
    group.addoption("--bench-min-time", type=float, default=default.min_time, metavar="SECONDS",
                    help=f"more rounds until a variant's timed rounds add up to this (default "
                         f"{DEFAULT_MIN_TIME['cpu']:g} on a CPU, {DEFAULT_MIN_TIME['cuda']:g} on a GPU)")
    group.addoption("--bench-max-rounds", type=int, default=default.max_rounds,
                    help=f"the time budget's cap on rounds (default {default.max_rounds})")
    group.addoption("--bench-threads", default=default.threads, metavar="N",
                    help="torch threads on CPU: auto (default: half the cores, at least 1, so that other work on "
                         "the machine cannot stall every step), or a number")
    group.addoption("--bench-speed-factor", type=float, default=default.speed_factor, metavar="FACTOR",
                    help=f"a variant's speedup, and the reference's own time, may move by at most this factor (default: "
                         f"{DEFAULT_SPEED_FACTOR:g} for a speedup and {DEFAULT_TIME_FACTOR:g} for a time on a CPU, "
                         f"{GPU_SPEED_FACTOR:g} and {GPU_TIME_FACTOR:g} on a GPU, {CROSS_MACHINE_FACTOR:g} on another "
                         "machine than the baseline's; docs/verdict.md gives their measured power)")
    group.addoption("--bench-timer", default=default.timer, choices=("auto", INSTRUCTIONS),
                    help="auto (default): speed judged by CPU time on a CPU and synchronized wall time on a GPU, wall "
                         "time recorded beside; instructions: count each round's instructions under valgrind's callgrind "
                         "as well and judge them too (CPU, 20-100x slower: for a few cases, -k)")
    group.addoption("--bench-strict-env", action="store_true",
                    help="fail a case whose environment (torch, transformers, bitsandbytes, CUDA, GPU driver, CPU, "
                         "checkpoint) differs from its baseline's; without it the difference is named, not failed")
    group.addoption("--bench-confirm-pairs", type=int, default=default.confirm_pairs, metavar="N",
                    help="time a speed regression again in N pairs (a reference round, then the variant's) before it "
                         f"fails; it fails only if the paired speedup is beyond the limit too (default "
                         f"{default.confirm_pairs}; 0: no pairs)")
    group.addoption("--bench-confirm-all", action="store_true",
                    help="time every variant again in pairs, not only a speed regression: for studies of how the "
                         "paired speedup spreads")
    group.addoption("--bench-save-baseline", action="store_true", help="write this run's results as the new baselines")
    group.addoption("--bench-reason", default=default.reason,
                    help="why the baselines change (required with --bench-save-baseline)")
    group.addoption("--bench-baseline-dir", default=default.baseline_dir,
                    help=f"directory of baselines (default: {default.baseline_dir}/)")
    group.addoption("--bench-report", action="append", default=[], metavar="PATH",
                    help="write a report: .md (pull request / CI step summary), .html (plots) or .json "
                         "(harness diff/accept read it); repeatable")
    group.addoption("--bench-progress", default=default.progress, choices=PROGRESS_MODES,
                    help="a progress bar per case (items, round): auto (default: on a terminal, outside CI), on, off")
    group.addoption("--bench-timeout", type=float, default=default.timeout, metavar="SECONDS",
                    help=f"time limit of one case, its reference included (default {default.timeout:g}; 0: none): a hung "
                         "case fails with a message and the others go on")
    group.addoption("--bench-trust-remote-code", action="store_true",
                    help="let a model directory's own Python code run (transformers' trust_remote_code); off by default")
    group.addoption("--bench-allow-pickle-weights", action="store_true",
                    help="load weights that are not safetensors (pickles run code when loaded); off by default")
    group.addoption("--bench-inject", action="append", default=[], metavar="SPEC",
                    help="put a regression in on purpose, to check that the gate catches it; the specs are listed in "
                         "harness.measure.inject (slowdown=F[@CASE], early-stop-cut=S, stale-cache, "
                         "teacher-forcing-shift, ...); repeatable")
    group.addoption("--bench-ratchet", action="store_true",
                    help="fail a case that improved beyond its baseline, so baselines do not go stale")
    group.addoption("--bench-device-map", default=default.device_map, choices=("auto", "balanced", "balanced_low_0", "sequential"),
                    help="spread the model over the visible GPUs with accelerate's device map (for a model larger "
                         "than one GPU); its baselines are those of cuda-<gpu>x<N>")
    group.addoption("--bench-max-memory", default=default.max_memory, metavar="GPU=SIZE,...",
                    help="with --bench-device-map: the most each GPU may hold, e.g. 0=70GiB,1=70GiB; only the GPUs "
                         "named are used")
    group.addoption("--bench-gpus-per-worker", type=int, default=default.gpus_per_worker, metavar="N",
                    help=f"under pytest-xdist (-n): GPUs pinned to each worker (default {default.gpus_per_worker}; more "
                         "with --bench-device-map)")


def check_options(options: BenchOptions, rootpath: Path | str = ".") -> Injections:
    """Every --bench-* option that can be wrong on its own, checked before the run touches anything: a bad one is
    a usage error that says what to give. Returns the injections the options ask for."""
    if options.save_baseline and not options.reason.strip():
        raise pytest.UsageError("--bench-save-baseline needs --bench-reason \"why the baseline changes\"; it is stored in the file")
    if options.rounds < 1:
        raise pytest.UsageError("--bench-rounds must be at least 1")
    needed = GatePolicy().min_rounds
    if options.save_baseline and options.rounds < needed:
        raise pytest.UsageError(f"--bench-save-baseline with --bench-rounds {options.rounds}: a baseline with fewer "
                                f"than {needed} timed rounds a variant cannot judge speed; give --bench-rounds "
                                f"{needed} or more")
    if options.max_rounds < options.rounds:
        raise pytest.UsageError("--bench-max-rounds must be at least --bench-rounds")
    if (options.min_time or 0) < 0:
        raise pytest.UsageError("--bench-min-time must not be negative")
    if options.confirm_pairs < 0:
        raise pytest.UsageError("--bench-confirm-pairs must not be negative (0 turns the paired confirmation off)")
    for path in options.report:
        _check_report(Path(path))
    _check_baseline_dir(options, Path(rootpath))
    cpu_threads(options.threads)
    if options.count_instructions:
        reason = InstructionCounter.unavailable_reason()
        if reason is not None:
            raise pytest.UsageError(reason)
        Path(InstructionCounter.OUT_DIR).mkdir(exist_ok=True)
    try:
        injections = parse_injections(list(options.inject))
    except InjectionError as error:
        raise pytest.UsageError(str(error)) from None
    if injections.active and options.save_baseline:
        raise pytest.UsageError("--bench-inject puts regressions in on purpose: its results must not become baselines; "
                                "drop --bench-save-baseline")
    return injections


def _check_report(path: Path) -> None:
    """A report the run could not write would be found out only after every case ran."""
    problem = report_problem(path)
    if problem:
        raise pytest.UsageError(f"--bench-report {path}: {problem}")


def _check_baseline_dir(options: BenchOptions, rootpath: Path) -> None:
    directory = options.baseline_directory(rootpath)
    if directory.exists() and not directory.is_dir():
        raise pytest.UsageError(f"--bench-baseline-dir {options.baseline_dir}: {directory} is a file, not a directory")
    if options.save_baseline:
        problem = unwritable(directory)
        if problem:
            raise pytest.UsageError(f"--bench-baseline-dir {options.baseline_dir}: {problem}, so the baselines could "
                                    "not be saved; give a directory you can write")
    elif options.baseline_dir != BenchOptions.baseline_dir and not directory.is_dir():
        # A mistyped directory would read every case as new, and pass them all unjudged.
        raise pytest.UsageError(f"--bench-baseline-dir {options.baseline_dir}: no such directory ({directory}); give the "
                                "directory that holds the baselines, or create it with --bench-save-baseline")


def cpu_threads(option: str, processes: int = 1) -> int:
    """torch's intra-op threads on CPU. Half the cores by default: with every core busy, whatever else runs
    (pytest, the OS, a neighbour) stalls each step at the threads' barrier; measured on a 2-core CPU, a busy
    second core made 2-thread rounds 3.7x slower, while 1-thread rounds did not move and were as fast.
    Under xdist that half is shared by the `processes` workers."""
    if option == "auto":
        return max(1, (os.cpu_count() or 2) // 2 // processes)
    try:
        threads = int(option)
    except ValueError:
        threads = 0
    if threads < 1:
        raise pytest.UsageError(f"--bench-threads {option}: give auto or a whole number of threads, at least 1")
    return threads
