"""pytest-xdist with bench cases: each worker's GPUs pinned before CUDA starts, the distribution checked on the
controller before any worker starts, and the workers' results collected there into one run.

The pure parts (which GPUs a worker gets, group names) are in `workers`; the results' JSON in `merge`.
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.models.placement import (
    Placement,
    PlacementError,
    check_placement,
    placement_from_options,
)
from harness.plugin import workers
from harness.plugin.merge import MergedRun, results_of
from harness.plugin.options import BenchOptions

UNPINNED_KEY = pytest.StashKey["str | None"]()  # CUDA_VISIBLE_DEVICES before an xdist worker's pin (None: unset)


def pin_worker(early_config: pytest.Config) -> None:
    """Pin an xdist worker's GPUs before anything (a conftest, another plugin) can initialize CUDA: after
    that, the process sees every GPU whatever CUDA_VISIBLE_DEVICES says."""
    options = early_config.known_args_namespace
    worker = os.environ.get(workers.WORKER_ENV)
    if worker is None or not getattr(options, "benchmark", False) or getattr(options, "bench_device", "auto") == "cpu":
        return
    try:
        gpus = worker_share(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), workers.worker_index(worker),
                            getattr(options, "bench_gpus_per_worker", 1), getattr(options, "bench_device", "auto"))
    except workers.WorkerGpuError as error:
        raise pytest.UsageError(str(error)) from None
    if gpus is not None:
        early_config.stash[UNPINNED_KEY] = os.environ.get(workers.VISIBLE_DEVICES)
        workers.pin(os.environ, gpus)


def unpin_unless_a_worker(config: pytest.Config) -> None:
    """Undo the pin where the variable only looked like a worker's: a plain run started from inside an xdist
    worker inherits PYTEST_XDIST_WORKER, but is no worker itself (no `workerinput`)."""
    if UNPINNED_KEY not in config.stash or workers.is_worker(config):
        return
    previous = config.stash[UNPINNED_KEY]
    if previous is None:
        os.environ.pop(workers.VISIBLE_DEVICES, None)
    else:
        os.environ[workers.VISIBLE_DEVICES] = previous


def worker_share(count: int, index: int, per_worker: int, requested_device: str) -> list[str] | None:
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


def session_placement(config: pytest.Config, options: BenchOptions, device: str) -> Placement | None:
    """The session's device map setting, checked against this machine (or worker): None without one."""
    try:
        placement = placement_from_options(options.device_map, options.max_memory)
        if placement is not None:
            # The controller checks against a worker's share, before any worker starts; a worker, what it sees.
            visible = options.gpus_per_worker if workers.is_controller(config) else (
                torch.cuda.device_count() if device == "cuda" else 0)
            check_placement(placement, device, visible)
    except PlacementError as error:
        raise pytest.UsageError(str(error)) from None
    return placement


def check_distribution(config: pytest.Config, options: BenchOptions, device: str) -> None:
    """Under xdist, on the controller before any worker starts: the distribution mode and the GPU count."""
    if not workers.is_controller(config):
        return
    dist = config.getoption("dist", "no")
    if dist not in workers.GROUPING_MODES:
        raise pytest.UsageError(f"bench cases under pytest-xdist need --dist {' or '.join(workers.GROUPING_MODES)} "
                                f"(this run: --dist {dist}): every variant of a case must run on the worker that "
                                "measures its reference")
    if options.gpus_per_worker < 1:
        raise pytest.UsageError("--bench-gpus-per-worker must be at least 1")
    if device == "cuda":  # too many workers for the GPUs fails here, before any worker starts
        try:
            worker_share(workers.worker_total(config), 0, options.gpus_per_worker, "cuda")
        except workers.WorkerGpuError as error:
            raise pytest.UsageError(str(error)) from None


def auto_worker_count(options: BenchOptions) -> int | None:
    """`-n auto` with --benchmark: one worker per GPU (per --bench-gpus-per-worker GPUs); one on CPU."""
    if options.device == "cpu":
        return 1
    visible = workers.visible_gpus(os.environ, workers.nvml_gpu_count)
    return workers.auto_worker_count(visible, max(1, options.gpus_per_worker))


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
