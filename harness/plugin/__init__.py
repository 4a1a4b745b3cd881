"""The pytest glue: options, markers, variant parametrization, the `bench` fixture, save and summary.

No pipeline or statistics logic lives here: it wires toggles -> models -> pipeline -> measure ->
verdict -> baseline/report together.

One piece past 400 lines for now because pytest's hooks share the session object; splitting it into a plugin/
package (options, session, case, xdist) is planned.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import pytest
import torch

from harness import toggles as toggle_registry
from harness.plugin import workers
from harness.store.baseline import (BaselineError, BaselineFile, MachineMatch, baseline_path, current_commit, load_baseline,
                              match_machine, record_of, save_baseline, saved_fingerprint, scrub_paths, speed_noise_of)
from harness.gate.diff import Diff, compare
from harness.measure.inject import InjectionError, Injections, parse_injections, patched_pipelines, slowed
from harness.measure.guard import (CaseFailure, TimeBudget, failing_cleanly_on_oom, is_out_of_memory, out_of_memory_failure,
                           restore_sigterm, stop_on_sigterm)
from harness.measure.timing import DEFAULT_MIN_TIME, InstructionCounter, MeasureSettings, default_min_time, Side, measure_interleaved, time_pairs
from harness.plugin.merge import USER_PROPERTY, MergedRun, WorkerResults, results_of
from harness.pipelines.progress import MODES as PROGRESS_MODES, ProgressWriter, case_progress
from harness.measure.machine_speed import slower_by
from harness.models.loading import (checkpoint_hash, LoadedModel, LoadSpec, ModelCache, ModelLoadError, default_dtype, fingerprint, model_id,
                            resolve_device, weights_summary)
from harness.models.placement import Placement, PlacementError, check_placement, layout_of, placement_from_options
from harness.models.profiles import is_profile
from harness.records import CaseRecord, Confirmation, PipelineOutput, Speed, differing_items
from harness.measure.roofline import decode_efficiency, measured_read_bandwidth
from harness.report import SUPPORTED_SUFFIXES, terminal_table, write_report
from harness.report.tables import ACCEPT_HINT
from harness.store.results import MACHINE_KEY, RECORD_KEY, RUN, VERDICT_KEY, ResultSet, baseline_results, verdict_to_dict
from harness.measure.environment import environment_findings
from harness.gate.policy import CROSS_MACHINE_FACTOR, DEFAULT_TIME_FACTOR, GPU_SPEED_FACTOR, GPU_TIME_FACTOR
from harness.gate.verdict import (DEFAULT_SPEED_FACTOR, IMPROVED, REGRESSED, GatePolicy, Verdict, bootstrap_speedup,
                             cleared_by_pairs, judge, needs_confirmation, one_toggle_neighbours)

_SESSION_KEY = pytest.StashKey["BenchSession"]()
_UNPINNED_KEY = pytest.StashKey["str | None"]()  # CUDA_VISIBLE_DEVICES before an xdist worker's pin (None: unset)
_WARM_UP_ITEMS = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "LLM inference benchmarks: speed and quality together")
    group.addoption("--benchmark", action="store_true", help="run the bench cases (and only them), gated against baselines")
    group.addoption("--bench-model", default="embedded", help="'embedded' (default) or a local Hugging Face model directory")
    group.addoption("--bench-device", default="auto", choices=("auto", "cpu", "cuda"))
    group.addoption("--bench-matrix", default=GATE_MATRIX, choices=toggle_registry.MATRICES,
                    help="variants per case, each with the reference and every exact toggle alone: all-on (all on; "
                         "default, the gate), leave-one-out (all on, and all on but one), ablation (each toggle alone, "
                         "all on), full (the cross product)")
    group.addoption("--bench-rounds", type=int, default=3,
                    help="timed rounds per variant, at least (default 3; 1: a single round, no time budget)")
    group.addoption("--bench-min-time", type=float, default=None, metavar="SECONDS",
                    help=f"more rounds until a variant's timed rounds add up to this (default "
                         f"{DEFAULT_MIN_TIME['cpu']:g} on a CPU, {DEFAULT_MIN_TIME['cuda']:g} on a GPU)")
    group.addoption("--bench-max-rounds", type=int, default=25, help="the time budget's cap on rounds (default 25)")
    group.addoption("--bench-threads", default="auto", metavar="N",
                    help="torch threads on CPU: auto (default: half the cores, at least 1, so that other work on "
                         "the machine cannot stall every step), or a number")
    group.addoption("--bench-speed-factor", type=float, default=None, metavar="FACTOR",
                    help=f"a variant's speedup, and the reference's own time, may move by at most this factor (default: "
                         f"{DEFAULT_SPEED_FACTOR:g} for a speedup and {DEFAULT_TIME_FACTOR:g} for a time on a CPU, "
                         f"{GPU_SPEED_FACTOR:g} and {GPU_TIME_FACTOR:g} on a GPU, {CROSS_MACHINE_FACTOR:g} on another "
                         "machine than the baseline's; docs/verdict.md gives their measured power)")
    group.addoption("--bench-timer", default="auto", choices=("auto", "instructions"),
                    help="auto (default): speed judged by CPU time on a CPU and synchronized wall time on a GPU, wall "
                         "time recorded beside; instructions: count each round's instructions under valgrind's callgrind "
                         "as well and judge them too (CPU, 20-100x slower: for a few cases, -k)")
    group.addoption("--bench-strict-env", action="store_true",
                    help="fail a case whose environment (torch, transformers, bitsandbytes, CUDA, GPU driver, CPU, "
                         "checkpoint) differs from its baseline's; without it the difference is named, not failed")
    group.addoption("--bench-confirm-pairs", type=int, default=3, metavar="N",
                    help="time a speed regression again in N pairs (a reference round, then the variant's) before it "
                         "fails; it fails only if the paired speedup is beyond the limit too (default 3; 0: no pairs)")
    group.addoption("--bench-confirm-all", action="store_true",
                    help="time every variant again in pairs, not only a speed regression: for studies of how the "
                         "paired speedup spreads (python -m research.studies.gate_study aa -- --bench-confirm-all)")
    group.addoption("--bench-save-baseline", action="store_true", help="write this run's results as the new baselines")
    group.addoption("--bench-reason", default="", help="why the baselines change (required with --bench-save-baseline)")
    group.addoption("--bench-baseline-dir", default="baselines", help="directory of baselines (default: baselines/)")
    group.addoption("--bench-report", action="append", default=[], metavar="PATH",
                    help="write a report: .md (pull request / CI step summary), .html (plots) or .json "
                         "(harness diff/accept read it); repeatable")
    group.addoption("--bench-progress", default="auto", choices=PROGRESS_MODES,
                    help="a progress bar per case (items, round): auto (default: on a terminal, outside CI), on, off")
    group.addoption("--bench-timeout", type=float, default=3600.0, metavar="SECONDS",
                    help="time limit of one case, its reference included (default 3600; 0: none): a hung case "
                         "fails with a message and the others go on")
    group.addoption("--bench-trust-remote-code", action="store_true",
                    help="let a model directory's own Python code run (transformers' trust_remote_code); off by default")
    group.addoption("--bench-allow-pickle-weights", action="store_true",
                    help="load weights that are not safetensors (pickles run code when loaded); off by default")
    group.addoption("--bench-inject", action="append", default=[], metavar="SPEC",
                    help="put a regression in on purpose, to check that the gate catches it; the specs are listed in "
                         "harness.measure.inject (slowdown=F[@CASE], early-stop-cut=S, stale-cache, teacher-forcing-shift, ...); "
                         "repeatable")
    group.addoption("--bench-ratchet", action="store_true",
                    help="fail a case that improved beyond its baseline, so baselines do not go stale")
    group.addoption("--bench-device-map", default=None, choices=("auto", "balanced", "balanced_low_0", "sequential"),
                    help="spread the model over the visible GPUs with accelerate's device map (for a model larger "
                         "than one GPU); its baselines are those of cuda-<gpu>x<N>")
    group.addoption("--bench-max-memory", default=None, metavar="GPU=SIZE,...",
                    help="with --bench-device-map: the most each GPU may hold, e.g. 0=70GiB,1=70GiB; only the GPUs "
                         "named are used")
    group.addoption("--bench-gpus-per-worker", type=int, default=1, metavar="N",
                    help="under pytest-xdist (-n): GPUs pinned to each worker (default 1; more with --bench-device-map)")


def check_options(config: pytest.Config) -> Injections:
    """Every --bench-* option that can be wrong on its own, checked before the run touches anything: a bad one is
    a usage error that says what to give. Returns the injections the options ask for."""
    if config.getoption("--bench-save-baseline") and not config.getoption("--bench-reason").strip():
        raise pytest.UsageError("--bench-save-baseline needs --bench-reason \"why the baseline changes\"; it is stored in the file")
    if config.getoption("--bench-rounds") < 1:
        raise pytest.UsageError("--bench-rounds must be at least 1")
    needed = GatePolicy().min_rounds
    if config.getoption("--bench-save-baseline") and config.getoption("--bench-rounds") < needed:
        raise pytest.UsageError(f"--bench-save-baseline with --bench-rounds {config.getoption('--bench-rounds')}: a baseline "
                                f"with fewer than {needed} timed rounds a variant cannot judge speed; give --bench-rounds "
                                f"{needed} or more")
    if config.getoption("--bench-max-rounds") < config.getoption("--bench-rounds"):
        raise pytest.UsageError("--bench-max-rounds must be at least --bench-rounds")
    if (config.getoption("--bench-min-time") or 0) < 0:
        raise pytest.UsageError("--bench-min-time must not be negative")
    if config.getoption("--bench-confirm-pairs") < 0:
        raise pytest.UsageError("--bench-confirm-pairs must not be negative (0 turns the paired confirmation off)")
    for path in config.getoption("--bench-report"):
        if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise pytest.UsageError(f"--bench-report {path}: the suffix picks the format, one of "
                                    f"{', '.join(SUPPORTED_SUFFIXES)}")
    _cpu_threads(config.getoption("--bench-threads"))
    if config.getoption("--bench-timer") == "instructions":
        reason = InstructionCounter.unavailable_reason()
        if reason is not None:
            raise pytest.UsageError(reason)
        Path(InstructionCounter.OUT_DIR).mkdir(exist_ok=True)
    try:
        injections = parse_injections(config.getoption("--bench-inject"))
    except InjectionError as error:
        raise pytest.UsageError(str(error)) from None
    if injections.active and config.getoption("--bench-save-baseline"):
        raise pytest.UsageError("--bench-inject puts regressions in on purpose: its results must not become baselines; "
                                "drop --bench-save-baseline")
    return injections


GATE_MATRIX = "all-on"  # the default --bench-matrix: what `pytest --benchmark` gates with no options


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench(pipeline, toggles, gpu_toggles, gate=True): a bench case, parametrized "
                                       "over toggle variants (gpu_toggles: swept as well on CUDA; gate=False: only with "
                                       "a whole --bench-matrix, not in the default gate)")
    config.addinivalue_line("markers", "gpu: a bench case that needs a CUDA device")
    if not config.getoption("--benchmark"):
        return
    injections = check_options(config)
    _unpin_unless_a_worker(config)
    if not workers.is_worker(config):  # a worker is stopped by its controller, which reports for it
        stop_on_sigterm()
    try:
        device = resolve_device(config.getoption("--bench-device"))
    except ModelLoadError as error:
        raise pytest.UsageError(str(error)) from None
    if device == "cpu":
        torch.set_num_threads(_cpu_threads(config.getoption("--bench-threads"), workers.worker_total(config)))
    placement = _placement(config, device)
    _check_distribution(config, device)
    if workers.is_worker(config):
        # pytest-benchmark turns itself off under xdist (its own warning says so, once); the rounds are timed here
        # instead, so its note on each case that its fixture went unused says nothing.
        config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used at all")
    bench_session = BenchSession(config, device, injections, placement=placement)
    if workers.is_controller(config):
        bench_session.merged = MergedRun()
        config.pluginmanager.register(WorkerResultsCollector(bench_session.merged, config.getoption("dist")),
                                     "harness-worker-results")
    config.stash[_SESSION_KEY] = bench_session


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Pin an xdist worker's GPUs before anything (a conftest, another plugin) can initialize CUDA: after
    that, the process sees every GPU whatever CUDA_VISIBLE_DEVICES says."""
    options = early_config.known_args_namespace
    worker = os.environ.get(workers.WORKER_ENV)
    if worker is None or not getattr(options, "benchmark", False) or getattr(options, "bench_device", "auto") == "cpu":
        return
    try:
        gpus = _worker_share(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), workers.worker_index(worker),
                             getattr(options, "bench_gpus_per_worker", 1), getattr(options, "bench_device", "auto"))
    except workers.WorkerGpuError as error:
        raise pytest.UsageError(str(error)) from None
    if gpus is not None:
        early_config.stash[_UNPINNED_KEY] = os.environ.get(workers.VISIBLE_DEVICES)
        workers.pin(os.environ, gpus)


def _unpin_unless_a_worker(config: pytest.Config) -> None:
    """Undo the pin where the variable only looked like a worker's: a plain run started from inside an xdist
    worker inherits PYTEST_XDIST_WORKER, but is no worker itself (no `workerinput`)."""
    if _UNPINNED_KEY not in config.stash or workers.is_worker(config):
        return
    previous = config.stash[_UNPINNED_KEY]
    if previous is None:
        os.environ.pop(workers.VISIBLE_DEVICES, None)
    else:
        os.environ[workers.VISIBLE_DEVICES] = previous


def _worker_share(count: int, index: int, per_worker: int, requested_device: str) -> list[str] | None:
    """The GPUs of worker `index` of `count`; None when there is no GPU to pin (a CPU run under auto)."""
    visible = workers.visible_gpus(os.environ, workers.nvml_gpu_count)
    if visible is None:
        if torch.version.cuda is None:  # a CPU build of torch: nothing to pin
            return None
        raise workers.WorkerGpuError("cannot count the GPUs without initializing CUDA (NVML does not answer), and "
                                     "each xdist worker must be pinned before that: set CUDA_VISIBLE_DEVICES=0,1,... "
                                     "to the GPUs the workers share")
    if not visible and requested_device == "auto":
        return None  # no GPU: the run goes on CPU
    return workers.worker_gpus(visible, index, count, per_worker)


def _placement(config: pytest.Config, device: str) -> Placement | None:
    """The session's device map setting, checked against this machine (or worker): None without one."""
    try:
        placement = placement_from_options(config.getoption("--bench-device-map"), config.getoption("--bench-max-memory"))
        if placement is not None:
            # The controller checks against a worker's share, before any worker starts; a worker, what it sees.
            visible = config.getoption("--bench-gpus-per-worker") if workers.is_controller(config) else (
                torch.cuda.device_count() if device == "cuda" else 0)
            check_placement(placement, device, visible)
    except PlacementError as error:
        raise pytest.UsageError(str(error)) from None
    return placement


def _check_distribution(config: pytest.Config, device: str) -> None:
    """Under xdist, on the controller before any worker starts: the distribution mode and the GPU count."""
    if not workers.is_controller(config):
        return
    dist = config.getoption("dist", "no")
    if dist not in workers.GROUPING_MODES:
        raise pytest.UsageError(f"bench cases under pytest-xdist need --dist {' or '.join(workers.GROUPING_MODES)} "
                                f"(this run: --dist {dist}): every variant of a case must run on the worker that "
                                "measures its reference")
    if config.getoption("--bench-gpus-per-worker") < 1:
        raise pytest.UsageError("--bench-gpus-per-worker must be at least 1")
    if device == "cuda":  # too many workers for the GPUs fails here, before any worker starts
        try:
            _worker_share(workers.worker_total(config), 0, config.getoption("--bench-gpus-per-worker"), "cuda")
        except workers.WorkerGpuError as error:
            raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own answer, one worker per CPU
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` with --benchmark: one worker per GPU (per --bench-gpus-per-worker GPUs); one on CPU."""
    if not config.getoption("--benchmark"):
        return None  # the project's own tests: xdist's default, one per CPU
    if config.getoption("--bench-device") == "cpu":
        return 1
    visible = workers.visible_gpus(os.environ, workers.nvml_gpu_count)
    return workers.auto_worker_count(visible, max(1, config.getoption("--bench-gpus-per-worker")))


def _cpu_threads(option: str, processes: int = 1) -> int:
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


def _session(config: pytest.Config) -> BenchSession | None:
    return config.stash.get(_SESSION_KEY, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--benchmark"):
        skip = pytest.mark.skip(reason="bench case: runs with pytest --benchmark")
        for item in items:
            if item.get_closest_marker("bench"):
                item.add_marker(skip)
        return
    # The default matrix is the gate: a case marked bench(..., gate=False) is too slow for it, and runs with a whole
    # matrix (--bench-matrix leave-one-out, ablation or full).
    whole_matrix = config.getoption("--bench-matrix") != GATE_MATRIX
    kept = [item for item in items
            if (marker := item.get_closest_marker("bench")) and (whole_matrix or marker.kwargs.get("gate", True))]
    deselected = [item for item in items if item not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    session = _session(config)
    for item in kept:
        if item.get_closest_marker("gpu") and session.device != "cuda":
            item.add_marker(pytest.mark.skip(reason="GPU case: needs --bench-device cuda on a machine with CUDA"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which variants of each case will run, so that the first to run measures them all, interleaved."""
    bench_session = _session(session.config)
    if bench_session is None:
        return
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "variant" not in callspec.params or item.get_closest_marker("skip"):
            continue
        bench_session.case_variants.setdefault(_case_key(item), []).append(callspec.params["variant"])


def pytest_itemcollected(item: pytest.Item) -> None:
    """On an xdist worker, put each bench item in the group of its case function (see workers.group_name), so
    that --dist loadgroup keeps a case's variants, its reference and its loaded models on one worker."""
    if not workers.is_worker(item.config) or item.get_closest_marker("bench") is None:
        return
    callspec = getattr(item, "callspec", None)
    function = item.nodeid.split("[", 1)[0]  # path::function, without the parameters
    item.add_marker(pytest.mark.xdist_group(workers.group_name(function, callspec.params if callspec else {})))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("bench")
    if marker is None or "variant" not in metafunc.fixturenames:
        return
    session = _session(metafunc.config)
    device = session.device if session else "cpu"
    swept = swept_toggles(marker, device)
    matrix = metafunc.config.getoption("--bench-matrix")
    try:
        # gpu_toggles are checked on any device, so that a CPU run catches what a GPU run would refuse
        for field in ("toggles", "gpu_toggles"):
            toggle_registry.check_applicable(metafunc.definition.name, marker.kwargs.get("pipeline"),
                                             marker.kwargs.get(field, {}), field)
        chosen = toggle_registry.variants(swept, matrix)
    except toggle_registry.ToggleError as error:
        # a collection error that names the case and the fix, without a traceback
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    reference = chosen[0]
    params = []
    for variant in chosen:
        reason = toggle_registry.unavailable_reason(variant, device)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        label = toggle_registry.variant_label(variant, reference)
        params.append(pytest.param(variant, id=label, marks=marks))
        if session is not None:
            session.matrix_labels.setdefault(marker.kwargs["pipeline"], set()).add(label)
    metafunc.parametrize("variant", params)


def swept_toggles(marker: pytest.Mark, device: str) -> dict[str, tuple[str, ...]]:
    """The toggles a case sweeps here: `toggles`, and on a GPU also `gpu_toggles` (what only pays off, or only
    runs, there: 4-bit weights, compile)."""
    toggles = dict(marker.kwargs.get("toggles", {}))
    if device == "cuda":
        for name, values in marker.kwargs.get("gpu_toggles", {}).items():
            toggles[name] = (*toggles.get(name, ()), *(v for v in values if v not in toggles.get(name, ())))
    return {name: tuple(values) for name, values in toggles.items()}


@dataclass
class BenchSession:
    """State shared by every case of a run: models, records, verdicts, the baseline file."""

    config: pytest.Config
    device: str
    injections: Injections = field(default_factory=Injections)
    placement: Placement | None = None  # a model spread over GPUs (--bench-device-map); None: on one device
    models: ModelCache = field(default_factory=ModelCache)
    records: dict[str, CaseRecord] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    # What made a case's measurement fail, for its own item to raise (its variants are measured together).
    failures: dict[str, Exception] = field(default_factory=dict)
    # Per case (function and parameters, workers.group_name): the variants collected to run, in order.
    case_variants: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # Per pipeline: the variant labels --bench-matrix parametrized (before -k), so that baseline cases of
    # another matrix are not listed as missing. On an xdist controller, which collects nothing: the workers'.
    matrix_labels: dict[str, set[str]] = field(default_factory=dict)
    saved_to: Path | None = None
    diff: Diff | None = None  # this run against its baseline, built at session end
    # On an xdist worker: the case ids whose records, and whose verdicts, went to the controller already.
    sent_records: set[str] = field(default_factory=set)
    sent_verdicts: set[str] = field(default_factory=set)
    merged: MergedRun | None = None  # on the xdist controller: the workers' results

    @property
    def model_source(self) -> str:
        return self.config.getoption("--bench-model")

    @property
    def min_time(self) -> float:
        """Seconds of timed rounds a variant gets at least: --bench-min-time, or the device's default."""
        given = self.config.getoption("--bench-min-time")
        return default_min_time(self.device) if given is None else given

    @cached_property
    def fingerprint(self) -> dict:
        if self.merged is not None:  # the controller runs no case: the environment is the workers'
            return dict(self.merged.fingerprint or self._own_fingerprint())
        return self._own_fingerprint()

    def _own_fingerprint(self) -> dict:
        """This process's environment, with the hash of the checkpoint the session measures (models.checkpoint_hash)."""
        facts = fingerprint(self.device, self.placement)
        checkpoint = checkpoint_hash(self.model_source)
        return {**facts, "checkpoint": checkpoint[:16]} if checkpoint else facts

    def unsent_results(self, worker: str) -> WorkerResults:
        """On a worker: the records and verdicts not yet sent to the controller, marked as sent."""
        # A variant measured with its case waits for its own item: the item may add its paired re-timing.
        records = [record for case_id, record in self.records.items() if case_id not in self.sent_records
                   and (record.is_reference or case_id in self.verdicts)]
        verdicts = [verdict for case_id, verdict in self.verdicts.items() if case_id not in self.sent_verdicts]
        self.sent_records.update(r.case_id for r in records)
        self.sent_verdicts.update(v.case_id for v in verdicts)
        labels = {pipeline: sorted(names) for pipeline, names in self.matrix_labels.items()}
        return WorkerResults(worker, scrub_paths(dict(self.fingerprint)), records, verdicts, labels)

    @property
    def baseline_dir(self) -> Path:
        directory = Path(self.config.getoption("--bench-baseline-dir"))
        return directory if directory.is_absolute() else Path(self.config.rootpath) / directory

    @property
    def baseline_file(self) -> Path:
        return baseline_path(self.baseline_dir, self.fingerprint["device_class"], model_id(self.model_source))

    @cached_property
    def baseline(self) -> BaselineFile | BaselineError | None:
        """The baseline file, read once: None when there is none yet, the error when it cannot be used."""
        try:
            return load_baseline(self.baseline_file, self.fingerprint["device_class"], model_id(self.model_source))
        except BaselineError as error:
            return error

    def baseline_set(self) -> ResultSet | None:
        """The baseline as a result set for the session's report; None when there is none or it is unusable."""
        if not isinstance(self.baseline, BaselineFile):
            return None
        return baseline_results(self.baseline, os.path.relpath(self.baseline_file, self.config.rootpath))

    def baseline_entry(self, case_id: str) -> tuple[CaseRecord | None, MachineMatch]:
        """The case's baseline record and how its saved speed judges this machine's."""
        if isinstance(self.baseline, BaselineError):
            raise self.baseline
        if self.baseline is None:
            return None, MachineMatch(None, None)
        return record_of(self.baseline, case_id), self.machine_match(case_id)

    def machine_match(self, case_id: str) -> MachineMatch:
        """How the case's saved speed judges this run's: its A/A noise where it holds here, and the machine scale."""
        return match_machine(speed_noise_of(self.baseline, case_id), self.fingerprint,
                             saved_fingerprint(self.baseline, case_id))

    def machine_matches(self) -> list[MachineMatch]:
        """The match of every case run that the baseline holds, for the summary of scales and noise set aside."""
        if not isinstance(self.baseline, BaselineFile):
            return []
        return [self.machine_match(case_id) for case_id in self.records if case_id in self.baseline.cases]


@dataclass
class BenchCase:
    """What a bench case's body sees: its variant, and `run` to measure a pipeline under it."""

    session: BenchSession
    request: pytest.FixtureRequest
    variant: dict[str, str]
    pipeline: str
    swept: dict[str, tuple[str, ...]]
    _running: dict[str, str] | None = field(default=None, init=False)  # the variant whose pipeline runs now

    @property
    def reference_variant(self) -> dict[str, str]:
        return toggle_registry.reference_variant(self.swept)

    @property
    def device(self) -> str:
        return self.session.device

    @property
    def speed_profile(self) -> bool:
        """True when the session runs random weights (`--bench-model random:<arch>`): answers mean nothing."""
        return is_profile(self.session.model_source)

    def load_spec(self, variant: dict[str, str]) -> LoadSpec:
        device, config = self.session.device, self.session.config
        quantization = self.session.injections.quantization(variant.get("quantization", "none"))
        return LoadSpec(self.session.model_source, device, default_dtype(device), quantization,
                        compile=variant.get("compile") == "on", trust_remote_code=config.getoption("--bench-trust-remote-code"),
                        allow_pickle_weights=config.getoption("--bench-allow-pickle-weights"),
                        placement=self.session.placement)

    def load(self, source: str | None = None, quantization: str | None = None, dtype: str | None = None,
             copy: bool = False) -> LoadedModel:
        """A model for the case (a candidate, a sibling; by default the session's own model), on the
        session's device and dtype, with the attention of the variant being run; loaded once per session.
        `copy=True`: a second instance of those weights, loaded separately (other module objects; a scoring twin)."""
        variant = self._running or self.variant
        spec = self.load_spec(variant)
        if source is not None:
            spec = replace(spec, source=source)
        if quantization is not None:
            spec = replace(spec, quantization=self.session.injections.quantization(quantization))
        spec = replace(spec, dtype=dtype or spec.dtype, copy=copy)
        loaded = self.session.models.get(spec)
        loaded.use_attention(variant)
        return loaded

    def run(self, group: str, pipeline: Callable[[object, object, dict[str, str]], PipelineOutput],
            warm_up: Callable[[object, object, dict[str, str]], object] | None = None) -> CaseRecord:
        """Measure `pipeline(model, tokenizer, variant)` under this case's variant, judge it, record it.

        The first variant of a case to run measures the case's reference and every variant of it collected
        here, their rounds interleaved (`measure.measure_interleaved`); the others find their record made.
        """
        case_id = self._case_id(group, self.variant)
        try:
            record = self._measured(group, pipeline, warm_up)
            reference = self.session.records[self._case_id(group, self.reference_variant)]
            verdict = self._judge(record, reference)
            if self._wants_pairs(record, verdict):
                record.confirmation = self._confirm(group, pipeline, self.session.config.getoption("--bench-confirm-pairs"))
                verdict = self._judge(record, reference)
        except (CaseFailure, ModelLoadError) as error:
            pytest.fail(str(error), pytrace=False)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            pytest.fail(str(out_of_memory_failure(case_id, self.session.device, error)), pytrace=False)
        benchmark = self.request.getfixturevalue("benchmark")
        _hand_rounds(benchmark, record.speed.round_seconds)
        benchmark.extra_info.update(_extra_info(record, verdict))
        config = self.session.config
        if verdict.status == REGRESSED and not config.getoption("--bench-save-baseline"):
            pytest.fail(verdict.message, pytrace=False)
        if verdict.status == IMPROVED and config.getoption("--bench-ratchet"):
            pytest.fail(f"{verdict.message}\nthe baseline is stale (--bench-ratchet): accept the new figures with "
                        f"{ACCEPT_HINT} or --bench-save-baseline", pytrace=False)
        return record

    def _case_id(self, group: str, variant: dict[str, str]) -> str:
        return f"{self.pipeline}[{group}|{toggle_registry.variant_label(variant, self.reference_variant)}]"

    def _measured(self, group, pipeline, warm_up) -> CaseRecord:
        """This variant's record, measured with its case's other variants if none of their items has run yet;
        what made its measurement fail is raised here, in its own item."""
        case_id = self._case_id(group, self.variant)
        if case_id not in self.session.records and case_id not in self.session.failures:
            self._measure_case(group, pipeline, warm_up)
        if case_id in self.session.failures:
            raise self.session.failures[case_id]
        return self.session.records[case_id]

    def _variants_to_measure(self, group: str) -> list[dict[str, str]]:
        """The reference, then every variant of this case collected in the session and not measured yet."""
        collected = self.session.case_variants.get(_case_key(self.request.node), [])
        done = self.session.records.keys() | self.session.failures.keys()
        pending = [v for v in [*collected, self.variant] if v != self.reference_variant and self._case_id(group, v) not in done]
        return [self.reference_variant, *{self._case_id(group, v): v for v in pending}.values()]

    def _measure_case(self, group, pipeline, warm_up) -> None:
        """Time the reference and the case's variants together; a variant that fails takes only its own case."""
        sides: list[tuple[Side, dict[str, str], LoadedModel]] = []
        variants = self._variants_to_measure(group)
        for variant in variants:
            case_id = self._case_id(group, variant)
            try:
                side, loaded = self._side(group, variant, pipeline, warm_up)
            except Exception as error:  # e.g. a model that does not load: its case fails with the message
                if variant == self.reference_variant:  # nothing to compare the variants with
                    self.session.failures.update({self._case_id(group, v): _kept(error) for v in variants})
                    return
                self.session.failures[case_id] = _kept(error)
                continue
            sides.append((side, variant, loaded))
        mode = self.session.config.getoption("--bench-progress")
        with case_progress(f"{self.pipeline}[{group}]", mode, self._progress_stream()) as progress, \
                patched_pipelines(self.session.injections):
            results = measure_interleaved([side for side, _, _ in sides], self._settings(), progress.start_round)
        reference_rounds: list[float] = []
        for (side, variant, loaded), result in zip(sides, results):
            if isinstance(result, Exception):
                self.session.failures[side.label] = _kept(result)
                continue
            record = self._record(group, variant, loaded, *result, reference_rounds)
            if record.is_reference:
                reference_rounds = record.speed.judged_seconds
            self.session.records.setdefault(record.case_id, record)  # a reference measured before stays the session's

    def _side(self, group, variant, pipeline, warm_up) -> tuple[Side, LoadedModel]:
        """The variant's part in a measurement: its model, and its run and warm-up as the variant (its attention
        set, since the variants may share one model object), under its case's time limit, an out-of-memory
        error turned into its case's failure."""
        case_id = self._case_id(group, variant)
        budget = TimeBudget(self.session.config.getoption("--bench-timeout"), case_id)
        loaded, handed, run = budget.limited(lambda: self._runner(group, variant, pipeline))()
        warm = chosen_warm_up(variant, self.session.device, pipeline, warm_up)

        def as_variant(call: Callable[[], object]) -> Callable:
            def call_as_variant():
                loaded.use_attention(variant)
                self._running = variant  # for bench.load in the pipeline
                try:
                    return call()
                finally:
                    self._running = None

            return budget.limited(failing_cleanly_on_oom(call_as_variant, case_id, self.session.device))

        side = Side(case_id, as_variant(run), as_variant(lambda: warm(loaded.model, loaded.tokenizer, handed)),
                    resident_bytes=weights_summary(loaded.model)["bytes"])
        return side, loaded

    def _runner(self, group, variant, pipeline) -> tuple[LoadedModel, dict[str, str], Callable[[], PipelineOutput]]:
        """The variant's model, the variant its pipeline is handed (injections applied), and one run of it."""
        loaded = self.session.models.get(self.load_spec(variant))
        injections, case_id = self.session.injections, self._case_id(group, variant)
        handed = injections.pipeline_variant(variant)
        run = slowed(lambda: pipeline(loaded.model, loaded.tokenizer, handed),
                     injections.slowdown_of(case_id, variant == self.reference_variant),
                     cpu_time=self.session.device == "cpu")
        return loaded, handed, run

    def _wants_pairs(self, record: CaseRecord, verdict: Verdict) -> bool:
        """Whether to time the variant again in pairs: a speed regression, or any variant with --bench-confirm-all;
        never when saving (a save fails nothing) or with --bench-confirm-pairs 0."""
        config = self.session.config
        if not config.getoption("--bench-confirm-pairs") or config.getoption("--bench-save-baseline") or record.is_reference:
            return False
        return needs_confirmation(verdict) or config.getoption("--bench-confirm-all")

    def _confirm(self, group, pipeline, pairs: int) -> Confirmation:
        """The speed regression's re-timing: the reference's round, then the variant's, `pairs` times."""
        reference, _ = self._side(group, self.reference_variant, pipeline, None)
        variant, _ = self._side(group, self.variant, pipeline, None)
        with patched_pipelines(self.session.injections):
            return Confirmation(time_pairs(reference.run, variant.run, pairs, self.session.device, self._cuda_devices()))

    def _settings(self) -> MeasureSettings:
        config = self.session.config
        return MeasureSettings(rounds=config.getoption("--bench-rounds"), min_time=self.session.min_time,
                               max_rounds=config.getoption("--bench-max-rounds"), device=self.session.device,
                               same_outputs=not is_profile(self.session.model_source), cuda_devices=self._cuda_devices(),
                               count_instructions=config.getoption("--bench-timer") == "instructions")

    def _record(self, group, variant, loaded: LoadedModel, output: PipelineOutput, speed: Speed,
                reference_rounds: list[float]) -> CaseRecord:
        """The record of a measured variant; its speedup is over the reference rounds timed with it."""
        record = CaseRecord(
            case_id=self._case_id(group, variant),
            pipeline=self.pipeline,
            group=group,
            variant=dict(variant),
            reference_variant=self.reference_variant,
            fidelity=toggle_registry.fidelity_of(variant, self.reference_variant),
            speed=speed,
            output=output,
            metadata={"dtype": loaded.spec.dtype, "device": self.session.device, "model": model_id(self.session.model_source),
                      "weights": weights_summary(loaded.model), "random_weights": is_profile(self.session.model_source)},
        )
        layout = layout_of(loaded.model) if self.session.placement is not None else None
        if layout is not None:
            record.metadata["layout"] = layout  # modules per GPU, as accelerate placed them
        if self.session.device == "cuda":
            efficiency = decode_efficiency(loaded.model, output.counters, speed.median_seconds, self.session.fingerprint["gpu"],
                                           measured_read_bandwidth())
            if efficiency is not None:
                record.metadata["decode"] = efficiency.to_dict()
        if not record.is_reference:
            reference = self.session.records.get(self._case_id(group, self.reference_variant))
            record.speedup = bootstrap_speedup(reference_rounds, speed.judged_seconds)
            shared, differing = differing_items(output, reference.output)
            record.agreement = (shared - len(differing)) / shared if shared else None
        return record

    def _cuda_devices(self) -> tuple[int, ...]:
        """The GPUs a split model runs on, for measure to synchronize and count; none: the current device."""
        placement = self.session.placement
        if placement is None or self.session.device != "cuda":
            return ()
        return placement.gpu_indices(torch.cuda.device_count())

    def _progress_stream(self):
        """The bar's stream: the real stderr, written with pytest's capture suspended, as live logging does."""
        plugins = self.session.config.pluginmanager
        capture_manager = plugins.getplugin("capturemanager")
        if capture_manager is None:  # -p no:capture: nothing captures stderr
            return sys.stderr
        reporter = plugins.getplugin("terminalreporter")
        # The bar starts below the line pytest leaves open for the outcome, which pytest then reprints.
        return ProgressWriter(capture_manager, sys.__stderr__, before_write=reporter.ensure_newline if reporter else None)

    def _judge(self, record: CaseRecord, reference: CaseRecord) -> Verdict:
        try:
            baseline, match = self.session.baseline_entry(record.case_id)
        except BaselineError as error:
            pytest.fail(str(error), pytrace=False)
        config = self.session.config
        policy = replace(GatePolicy.for_speed_factor(config.getoption("--bench-speed-factor"),
                                                     self.session.fingerprint["device_class"]),
                         strict_env=config.getoption("--bench-strict-env"))
        verdict = judge(record, baseline, reference, policy,
                        neighbours=one_toggle_neighbours(record, self.session.records.values()), noise=match.noise,
                        machine_scale=match.scale, same_machine=match.same_machine,
                        environment=environment_findings(match.changes, policy.strict_env))
        self.session.verdicts[record.case_id] = verdict
        return verdict


def _machine_lines(matches: list[MachineMatch]) -> list[str]:
    """What the baseline's machine differs in: the scale of absolute times, and why stored noise was set aside."""
    lines = []
    scales = sorted({round(m.scale, 2) for m in matches if slower_by(m.scale) is not None})
    if scales and scales != [1.0]:
        spread = f"x{scales[0]:.2f}" if len(scales) == 1 else f"x{scales[0]:.2f}-x{scales[-1]:.2f}"
        lines.append(f"this machine ran the calibration workload {spread} as long as the baseline's: the reference "
                     "variants' times are divided by that before they are compared")
    for reason in sorted({m.set_aside for m in matches if m.set_aside}):
        lines.append(f"{reason}: speedups are judged by the factor rule (--bench-speed-factor) instead")
    return lines


def chosen_warm_up(variant: dict[str, str], device: str, pipeline: Callable, warm_up: Callable | None) -> Callable:
    """What a side runs, untimed, before its rounds: the case's warm-up, or the whole pipeline where a shorter one
    leaves the rounds cold. Compiling does (each new shape compiles). On a GPU so did the cases' shorter warm-ups:
    31 of the 142 cases of the GPU baselines had a first timed round 1.5-5.7x the median of the rest
    (eval[math-200|reference] on the H100: 21.7 s against 6.8 s), none of the CPU baseline's. What the first round
    paid for there was not measured."""
    if variant.get("compile") == "on" or device == "cuda":
        return pipeline
    return warm_up or _no_warm_up


def _no_warm_up(model, tokenizer, variant) -> None:
    return None


def _hand_rounds(benchmark, round_seconds: list[float]) -> None:
    """Give pytest-benchmark's fixture the case's rounds, so its JSON and tables hold the rounds judged here.

    They were timed with the case's other variants (perf_counter, pytest-benchmark's default clock too), so
    its pedantic mode records one empty call, whose figure the rounds then replace.
    """
    if getattr(benchmark, "disabled", False):
        return
    benchmark.pedantic(_no_call, rounds=1, warmup_rounds=0, iterations=1)
    benchmark.stats.stats.data[:] = round_seconds


def _no_call() -> None:
    return None


def _kept(error: Exception) -> Exception:
    """A variant's failure, kept until its item raises it: a CaseFailure's message is all that is shown, so
    its traceback, with the frames and tensors of the round it stopped, is let go."""
    return error.with_traceback(None) if isinstance(error, CaseFailure) else error


def _case_key(item: pytest.Item) -> str:
    """The case an item is a variant of: its function and parameters other than the variant."""
    callspec = getattr(item, "callspec", None)
    return workers.group_name(item.nodeid.split("[", 1)[0], callspec.params if callspec else {})


def _extra_info(record: CaseRecord, verdict: Verdict) -> dict:
    """Flat figures for pytest-benchmark's tables, and the whole record and verdict, so that its
    `--benchmark-json` file is one that `harness diff` and `harness accept` read."""
    info = {"case_id": record.case_id, **{f"quality.{k}": v for k, v in record.output.quality.items()}}
    info.update({f"counter.{k}": v for k, v in record.output.counters.items()})
    if record.speedup is not None:
        info["speedup"] = record.speedup.ratio
    info[RECORD_KEY] = scrub_paths(record.to_dict())
    info[VERDICT_KEY] = verdict_to_dict(verdict)
    return info


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """What `harness diff` needs to know about the run, in pytest-benchmark's JSON."""
    session = _session(config)
    if session is not None:
        machine_info[MACHINE_KEY] = {"device_class": session.fingerprint["device_class"],
                                     "model_id": model_id(session.model_source),
                                     "fingerprint": scrub_paths(dict(session.fingerprint))}


@pytest.fixture
def bench(request: pytest.FixtureRequest, variant: dict[str, str]) -> BenchCase:
    """A bench case's handle: `bench.variant`, `bench.run(group, pipeline)`."""
    session = _session(request.config)
    if session is None:
        pytest.skip("bench case: runs with pytest --benchmark")
    marker = request.node.get_closest_marker("bench")
    return BenchCase(session, request, variant, marker.kwargs["pipeline"], swept_toggles(marker, session.device))


def _session_diff(bench_session: BenchSession) -> Diff:
    """This run against its baseline file, with the verdicts judged case by case during the run."""
    config = bench_session.config
    run = ResultSet("this run", RUN, bench_session.fingerprint["device_class"], model_id(bench_session.model_source),
                    dict(bench_session.fingerprint), dict(bench_session.records))
    baseline = bench_session.baseline_set()
    diff = compare(baseline, run, verdicts=bench_session.verdicts, missing_within_groups_run=True,
                   matrix_labels=bench_session.matrix_labels)
    if isinstance(bench_session.baseline, BaselineError):
        diff.notes.append(f"baseline not used: {bench_session.baseline}")
    if config.getoption("--bench-save-baseline"):
        diff.notes.append("--bench-save-baseline: regressions did not fail this run; the results became the baseline")
    if bench_session.merged is not None:
        diff.notes.extend(bench_session.merged.problems)
    if bench_session.injections.active:
        diff.notes.append("regressions injected on purpose (--bench-inject " + " ".join(config.getoption("--bench-inject"))
                          + "): this run measures the gate, not the code")
    return diff


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On an xdist worker: what the case measured and judged rides on its call-phase report to the controller."""
    report = yield
    bench_session = _session(item.config)
    if call.when == "call" and bench_session is not None and workers.is_worker(item.config):
        results = bench_session.unsent_results(item.config.workerinput["workerid"])
        if results.records or results.verdicts:
            report.user_properties.append((USER_PROPERTY, results.to_json()))
    return report


class WorkerResultsCollector:
    """Registered on the xdist controller only: merges what each worker's case measured into the run."""

    def __init__(self, merged: MergedRun, dist: str) -> None:
        self.merged = merged
        self.dist = dist

    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """Every bench item carries an xdist_group mark; under loadgroup, xdist shows it as an `@group` suffix of
        the node id. None there: this xdist and pytest ignore the marks (pytest-xdist#1386, pytest 9.2)."""
        if self.dist == "loadgroup" and ids and not any("@" in node_id for node_id in ids):
            problem = ("pytest-xdist ignored the xdist_group marks (pytest-xdist#1386, with pytest 9.2), so cases may "
                       "be measured away from their reference: run with --dist loadscope")
            if problem not in self.merged.problems:
                self.merged.problems.append(problem)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        results = results_of(report.user_properties)
        if results is not None:
            self.merged.add(results)


def _merge_workers(bench_session: BenchSession) -> None:
    """The controller's run is the workers' merged results, in the environment the workers measured."""
    merged = bench_session.merged
    bench_session.records, bench_session.verdicts = dict(merged.records), dict(merged.verdicts)
    bench_session.matrix_labels = merged.matrix_labels
    for derived in ("fingerprint", "baseline"):  # computed again from the workers' fingerprint
        bench_session.__dict__.pop(derived, None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench_session = _session(session.config)
    if bench_session is None or workers.is_worker(session.config):
        return  # a worker's results went to the controller, which reports and saves them once
    if bench_session.merged is not None:
        _merge_workers(bench_session)
        if bench_session.merged.problems:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not bench_session.records:
        return
    config = session.config
    bench_session.diff = _session_diff(bench_session)
    for path in config.getoption("--bench-report"):
        write_report(Path(path), bench_session.diff)
    if config.getoption("--bench-save-baseline"):
        records = list(bench_session.records.values())
        path = bench_session.baseline_file
        save_baseline(path, bench_session.fingerprint["device_class"], model_id(bench_session.model_source),
                      bench_session.fingerprint, records, config.getoption("--bench-reason"),
                      current_commit(config.rootpath, ignore=bench_session.baseline_dir), min_rounds=GatePolicy().min_rounds)
        bench_session.saved_to = path


def pytest_unconfigure(config: pytest.Config) -> None:
    restore_sigterm()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bench_session = _session(config)
    if bench_session is None or bench_session.diff is None:
        return
    terminalreporter.section("LLM inference benchmarks: speed and quality")
    terminalreporter.write_line(f"model {model_id(bench_session.model_source)} on {bench_session.fingerprint['device_class']}, "
                                f"matrix {config.getoption('--bench-matrix')}, at least {config.getoption('--bench-rounds')} "
                                f"rounds and {bench_session.min_time:g} s of them per variant, "
                                f"{_threads_line(bench_session)}")
    terminalreporter.write_line(terminal_table(bench_session.diff))
    for line in _machine_lines(bench_session.machine_matches()):
        terminalreporter.write_line(line)
    for line in _confirmation_lines(bench_session.diff):
        terminalreporter.write_line(line)
    for path in config.getoption("--bench-report"):
        terminalreporter.write_line(f"report written to {path}")
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        terminalreporter.write_line(f"the run was interrupted: the {len(bench_session.records)} case(s) measured before "
                                    "it are reported" + (" and saved" if bench_session.saved_to else ""))
    saved = bench_session.saved_to
    if saved:
        terminalreporter.write_line(f"baselines saved to {os.path.relpath(saved, config.rootpath)}")


def _confirmation_lines(diff: Diff) -> list[str]:
    """One line per variant that was timed again in pairs: what the pairs said, and what became of its speedup."""
    lines = []
    for case in diff.cases:
        record = case.current
        if record is None or record.confirmation is None or record.speedup is None or case.verdict is None:
            continue
        if needs_confirmation(case.verdict):
            outcome = "confirmed"
        elif cleared_by_pairs(case.verdict):
            outcome = "cleared: a change of the machine's speed, not of the code's"
        else:
            outcome = "re-timed on request (--bench-confirm-all); its rounds had passed"
        lines.append(f"{case.case_id}: speedup {record.speedup.ratio:.2f}x in its rounds, "
                     f"{record.confirmation.ratio:.2f}x in {record.confirmation.label}: {outcome}")
    return lines


def _threads_line(bench_session: BenchSession) -> str:
    """This process's torch threads; under xdist, the workers' (the controller runs no case) and how many."""
    merged = bench_session.merged
    if merged is None:
        return f"{torch.get_num_threads()} torch thread(s)"
    return (f"{bench_session.fingerprint.get('torch_threads')} torch thread(s) in each of {len(merged.workers)} "
            f"xdist worker(s) ({', '.join(f'{w}: {n} case(s)' for w, n in sorted(merged.workers.items()))})")
