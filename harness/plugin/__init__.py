"""The pytest plugin: its hooks, and the `bench` fixture. The hooks only wire the pieces together:
options (read once) -> session (models, baseline) -> case (measure, judge) -> session end (diff, report, save).

- `options`: the --bench-* options and their checks;
- `session`: what every case of a run shares, the run's diff, the save and the summary;
- `case`: one bench case, measured with its variants and judged;
- `distributed`, `workers`, `merge`: pytest-xdist (GPUs per worker, the workers' results).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness import toggles as toggle_registry
from harness.measure.guard import restore_sigterm, stop_on_sigterm
from harness.models.loading import ModelLoadError, model_id, resolve_device
from harness.plugin import workers
from harness.plugin.case import BenchCase, case_key
from harness.plugin.distributed import (
    WorkerResultsCollector,
    auto_worker_count,
    check_distribution,
    pin_worker,
    session_placement,
    unpin_unless_a_worker,
)
from harness.plugin.merge import USER_PROPERTY, MergedRun
from harness.plugin.options import BenchOptions, add_options, check_options, cpu_threads
from harness.plugin.session import BenchSession
from harness.report import write_report
from harness.store.baseline import scrub_paths
from harness.store.results import MACHINE_KEY

_SESSION_KEY = pytest.StashKey[BenchSession]()
_OPTIONS_KEY = pytest.StashKey[BenchOptions]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _options(config: pytest.Config) -> BenchOptions:
    """The run's --bench-* options, read from pytest once."""
    if _OPTIONS_KEY not in config.stash:
        config.stash[_OPTIONS_KEY] = BenchOptions.from_config(config)
    return config.stash[_OPTIONS_KEY]


def _session(config: pytest.Config) -> BenchSession | None:
    return config.stash.get(_SESSION_KEY, None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench(pipeline, toggles, gpu_toggles, gate=True): a bench case, parametrized "
                                       "over toggle variants (gpu_toggles: swept as well on CUDA; gate=False: only with "
                                       "a whole --bench-matrix, not in the default gate)")
    config.addinivalue_line("markers", "gpu: a bench case that needs a CUDA device")
    options = _options(config)
    if not options.benchmark:
        return
    injections = check_options(options, config.rootpath)
    unpin_unless_a_worker(config)
    if not workers.is_worker(config):  # a worker is stopped by its controller, which reports for it
        stop_on_sigterm()
    try:
        device = resolve_device(options.device)
    except ModelLoadError as error:
        raise pytest.UsageError(str(error)) from None
    if device == "cpu":
        torch.set_num_threads(cpu_threads(options.threads, workers.worker_total(config)))
    placement = session_placement(config, options, device)
    check_distribution(config, options, device)
    if workers.is_worker(config):
        # pytest-benchmark turns itself off under xdist (its own warning says so, once); the rounds are timed here
        # instead, so its note on each case that its fixture went unused says nothing.
        config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used at all")
    bench_session = BenchSession(config, device, options, injections, placement=placement)
    if workers.is_controller(config):
        bench_session.merged = MergedRun()
        config.pluginmanager.register(WorkerResultsCollector(bench_session.merged, config.getoption("dist")),
                                      "harness-worker-results")
    config.stash[_SESSION_KEY] = bench_session


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    pin_worker(early_config)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own answer, one worker per CPU
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` with --benchmark: one worker per GPU (per --bench-gpus-per-worker GPUs); one on CPU."""
    options = _options(config)
    if not options.benchmark:
        return None  # the project's own tests: xdist's default, one per CPU
    return auto_worker_count(options)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = _session(config)
    if session is None:
        skip = pytest.mark.skip(reason="bench case: runs with pytest --benchmark")
        for item in items:
            if item.get_closest_marker("bench"):
                item.add_marker(skip)
        return
    # The default matrix is the gate: a case marked bench(..., gate=False) is too slow for it, and runs with a whole
    # matrix (--bench-matrix leave-one-out, ablation or full).
    kept = [item for item in items if (marker := item.get_closest_marker("bench"))
            and (session.options.whole_matrix or marker.kwargs.get("gate", True))]
    deselected = [item for item in items if item not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
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
        bench_session.case_variants.setdefault(case_key(item), []).append(callspec.params["variant"])


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
    try:
        # gpu_toggles are checked on any device, so that a CPU run catches what a GPU run would refuse
        for field in ("toggles", "gpu_toggles"):
            toggle_registry.check_applicable(metafunc.definition.name, marker.kwargs.get("pipeline"),
                                             marker.kwargs.get(field, {}), field)
        chosen = toggle_registry.variants(swept, _options(metafunc.config).matrix)
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


@pytest.fixture
def bench(request: pytest.FixtureRequest, variant: dict[str, str]) -> BenchCase:
    """A bench case's handle: `bench.variant`, `bench.run(group, pipeline)`."""
    session = _session(request.config)
    if session is None:
        pytest.skip("bench case: runs with pytest --benchmark")
    marker = request.node.get_closest_marker("bench")
    return BenchCase(session, request, variant, marker.kwargs["pipeline"], swept_toggles(marker, session.device))


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """What `harness diff` needs to know about the run, in pytest-benchmark's JSON."""
    session = _session(config)
    if session is not None:
        machine_info[MACHINE_KEY] = {"device_class": session.fingerprint["device_class"],
                                     "model_id": model_id(session.model_source),
                                     "fingerprint": scrub_paths(dict(session.fingerprint))}


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench_session = _session(session.config)
    if bench_session is None or workers.is_worker(session.config):
        return  # a worker's results went to the controller, which reports and saves them once
    if bench_session.merged is not None:
        bench_session.merge_workers()
        if bench_session.merged.problems:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not bench_session.records:
        return
    bench_session.diff = bench_session.run_diff()
    for path in bench_session.options.report:
        write_report(Path(path), bench_session.diff)
    if bench_session.options.save_baseline:
        bench_session.save()


def pytest_unconfigure(config: pytest.Config) -> None:
    restore_sigterm()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bench_session = _session(config)
    if bench_session is None or bench_session.diff is None:
        return
    terminalreporter.section("LLM inference benchmarks: speed and quality")
    for line in bench_session.summary_lines(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED):
        terminalreporter.write_line(line)
