"""The pytest glue: options, markers, variant parametrization, the `bench` fixture, save and summary.

No pipeline or statistics logic lives here: it wires toggles -> models -> pipeline -> measure ->
verdict -> baseline/report together.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import pytest

from harness import toggles as toggle_registry
from harness.baseline import (BaselineError, BaselineFile, baseline_path, current_commit, load_baseline, record_of, save_baseline,
                              scrub_paths)
from harness.diff import Diff, compare
from harness.guard import CaseFailure, is_out_of_memory, out_of_memory_failure, time_limit
from harness.measure import MeasureSettings, measure, perf_counter_timer
from harness.progress import MODES as PROGRESS_MODES, ProgressWriter, case_progress
from harness.models import LoadedModel, LoadSpec, ModelCache, ModelLoadError, default_dtype, fingerprint, model_id, resolve_device
from harness.records import CaseRecord, PipelineOutput, differing_items
from harness.report import SUPPORTED_SUFFIXES, terminal_table, write_report
from harness.report.tables import ACCEPT_HINT
from harness.results import MACHINE_KEY, RECORD_KEY, RUN, VERDICT_KEY, ResultSet, baseline_results, verdict_to_dict
from harness.verdict import DEFAULT_SPEED_FACTOR, IMPROVED, REGRESSED, GatePolicy, Verdict, bootstrap_speedup, judge, one_toggle_neighbours

_SESSION_KEY = pytest.StashKey["BenchSession"]()
_WARM_UP_ITEMS = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "LLM inference benchmarks: speed and quality together")
    group.addoption("--benchmark", action="store_true", help="run the bench cases (and only them), gated against baselines")
    group.addoption("--bench-model", default="embedded", help="'embedded' (default) or a local Hugging Face model directory")
    group.addoption("--bench-device", default="auto", choices=("auto", "cpu", "cuda"))
    group.addoption("--bench-matrix", default="leave-one-out", choices=toggle_registry.MATRICES,
                    help="variants per case: ablation (reference, each toggle alone, all on), "
                         "leave-one-out (reference, all on, all on but one; default), full (cross product)")
    group.addoption("--bench-rounds", type=int, default=3, help="timed rounds per variant (default 3)")
    group.addoption("--bench-speed-factor", type=float, default=DEFAULT_SPEED_FACTOR,
                    help=f"a speed change must exceed this factor (and be significant) to count; default "
                         f"{DEFAULT_SPEED_FACTOR}, the between-run spread of a 1-second round on a 2-core CPU reached 1.66x")
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
    group.addoption("--bench-ratchet", action="store_true",
                    help="fail a case that improved beyond its baseline, so baselines do not go stale")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench(pipeline, toggles): a bench case, parametrized over toggle variants")
    config.addinivalue_line("markers", "gpu: a bench case that needs a CUDA device")
    if not config.getoption("--benchmark"):
        return
    if config.getoption("--bench-save-baseline") and not config.getoption("--bench-reason").strip():
        raise pytest.UsageError("--bench-save-baseline needs --bench-reason \"why the baseline changes\"; it is stored in the file")
    if config.getoption("--bench-rounds") < 1:
        raise pytest.UsageError("--bench-rounds must be at least 1")
    for path in config.getoption("--bench-report"):
        if Path(path).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise pytest.UsageError(f"--bench-report {path}: the suffix picks the format, one of "
                                    f"{', '.join(SUPPORTED_SUFFIXES)}")
    try:
        device = resolve_device(config.getoption("--bench-device"))
    except ModelLoadError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[_SESSION_KEY] = BenchSession(config, device)


def _session(config: pytest.Config) -> BenchSession | None:
    return config.stash.get(_SESSION_KEY, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--benchmark"):
        skip = pytest.mark.skip(reason="bench case: runs with pytest --benchmark")
        for item in items:
            if item.get_closest_marker("bench"):
                item.add_marker(skip)
        return
    kept = [item for item in items if item.get_closest_marker("bench")]
    deselected = [item for item in items if not item.get_closest_marker("bench")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    session = _session(config)
    for item in kept:
        if item.get_closest_marker("gpu") and session.device != "cuda":
            item.add_marker(pytest.mark.skip(reason="GPU case: needs --bench-device cuda on a machine with CUDA"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("bench")
    if marker is None or "variant" not in metafunc.fixturenames:
        return
    swept = {name: tuple(values) for name, values in marker.kwargs.get("toggles", {}).items()}
    matrix = metafunc.config.getoption("--bench-matrix")
    session = _session(metafunc.config)
    device = session.device if session else "cpu"
    chosen = toggle_registry.variants(swept, matrix)
    reference = chosen[0]
    params = []
    for variant in chosen:
        reason = toggle_registry.unavailable_reason(variant, device)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(variant, id=toggle_registry.variant_label(variant, reference), marks=marks))
    metafunc.parametrize("variant", params)


@dataclass
class BenchSession:
    """State shared by every case of a run: models, records, verdicts, the baseline file."""

    config: pytest.Config
    device: str
    models: ModelCache = field(default_factory=ModelCache)
    records: dict[str, CaseRecord] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    saved_to: Path | None = None
    diff: Diff | None = None  # this run against its baseline, built at session end

    @property
    def model_source(self) -> str:
        return self.config.getoption("--bench-model")

    @cached_property
    def fingerprint(self) -> dict:
        return fingerprint(self.device)

    @property
    def baseline_file(self) -> Path:
        directory = Path(self.config.getoption("--bench-baseline-dir"))
        if not directory.is_absolute():
            directory = Path(self.config.rootpath) / directory
        return baseline_path(directory, self.fingerprint["device_class"], model_id(self.model_source))

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

    def baseline_record(self, case_id: str) -> CaseRecord | None:
        if isinstance(self.baseline, BaselineError):
            raise self.baseline
        return record_of(self.baseline, case_id) if self.baseline is not None else None


@dataclass
class BenchCase:
    """What a bench case's body sees: its variant, and `run` to measure a pipeline under it."""

    session: BenchSession
    request: pytest.FixtureRequest
    variant: dict[str, str]
    pipeline: str
    swept: dict[str, tuple[str, ...]]

    @property
    def reference_variant(self) -> dict[str, str]:
        return toggle_registry.reference_variant(self.swept)

    def load_spec(self, variant: dict[str, str]) -> LoadSpec:
        device, config = self.session.device, self.session.config
        return LoadSpec(self.session.model_source, device, default_dtype(device), variant.get("quantization", "none"),
                        trust_remote_code=config.getoption("--bench-trust-remote-code"),
                        allow_pickle_weights=config.getoption("--bench-allow-pickle-weights"))

    def load(self, source: str | None = None, quantization: str | None = None) -> LoadedModel:
        """A model for the case (a candidate, a sibling; by default the session's own model), on the
        session's device and dtype, with this variant's attention; loaded once per session."""
        spec = self.load_spec(self.variant)
        if source is not None:
            spec = replace(spec, source=source)
        if quantization is not None:
            spec = replace(spec, quantization=quantization)
        loaded = self.session.models.get(spec)
        if "attention" in self.variant:
            loaded.model.set_attn_implementation(self.variant["attention"])
        return loaded

    def run(self, group: str, pipeline: Callable[[object, object, dict[str, str]], PipelineOutput],
            warm_up: Callable[[object, object, dict[str, str]], object] | None = None) -> CaseRecord:
        """Measure `pipeline(model, tokenizer, variant)` under this case's variant, judge it, record it."""
        case_id = self._case_id(group, self.variant)
        try:
            with time_limit(self.session.config.getoption("--bench-timeout"), case_id):
                reference = self._reference_record(group, pipeline, warm_up)
                record = reference if self.variant == self.reference_variant else self._measure(group, self.variant, pipeline, warm_up, reference)
        except (CaseFailure, ModelLoadError) as error:
            pytest.fail(str(error), pytrace=False)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            pytest.fail(str(out_of_memory_failure(case_id, self.session.device, error)), pytrace=False)
        verdict = self._judge(record, reference)
        self.request.getfixturevalue("benchmark").extra_info.update(_extra_info(record, verdict))
        config = self.session.config
        if verdict.status == REGRESSED and not config.getoption("--bench-save-baseline"):
            pytest.fail(verdict.message, pytrace=False)
        if verdict.status == IMPROVED and config.getoption("--bench-ratchet"):
            pytest.fail(f"{verdict.message}\nthe baseline is stale (--bench-ratchet): accept the new figures with "
                        f"{ACCEPT_HINT} or --bench-save-baseline", pytrace=False)
        return record

    def _case_id(self, group: str, variant: dict[str, str]) -> str:
        return f"{self.pipeline}[{group}|{toggle_registry.variant_label(variant, self.reference_variant)}]"

    def _reference_record(self, group, pipeline, warm_up) -> CaseRecord:
        """The session's reference for this group, measured once; measured here if no case asked yet."""
        case_id = self._case_id(group, self.reference_variant)
        if case_id not in self.session.records:
            self._measure(group, self.reference_variant, pipeline, warm_up, None)
        return self.session.records[case_id]

    def _measure(self, group, variant, pipeline, warm_up, reference: CaseRecord | None) -> CaseRecord:
        loaded = self.session.models.get(self.load_spec(variant))
        if "attention" in variant:
            loaded.model.set_attn_implementation(variant["attention"])
        settings = MeasureSettings(rounds=self.session.config.getoption("--bench-rounds"), device=self.session.device)
        is_reference = reference is None
        timer = _benchmark_timer(self.request.getfixturevalue("benchmark")) if variant == self.variant else None
        mode = self.session.config.getoption("--bench-progress")
        with case_progress(self._case_id(group, variant), mode, self._progress_stream()) as progress:
            output, speed = measure(
                run=lambda: pipeline(loaded.model, loaded.tokenizer, variant),
                warm_up=lambda: (warm_up or _no_warm_up)(loaded.model, loaded.tokenizer, variant),
                settings=settings,
                progress=progress.start_round,
                **({"timer": timer} if timer else {}),
            )
        record = CaseRecord(
            case_id=self._case_id(group, variant),
            pipeline=self.pipeline,
            group=group,
            variant=dict(variant),
            reference_variant=self.reference_variant,
            fidelity=toggle_registry.fidelity_of(variant, self.reference_variant),
            speed=speed,
            output=output,
            metadata={"dtype": loaded.spec.dtype, "device": self.session.device, "model": model_id(self.session.model_source)},
        )
        if not is_reference:
            record.speedup = bootstrap_speedup(reference.speed.round_seconds, speed.round_seconds)
            shared, differing = differing_items(output, reference.output)
            record.agreement = (shared - len(differing)) / shared if shared else None
        self.session.records[record.case_id] = record
        return record

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
            baseline = self.session.baseline_record(record.case_id)
        except BaselineError as error:
            pytest.fail(str(error), pytrace=False)
        factor = self.session.config.getoption("--bench-speed-factor")
        policy = GatePolicy.for_speed_factor(factor)
        verdict = judge(record, baseline, reference, policy, neighbours=one_toggle_neighbours(record, self.session.records.values()))
        self.session.verdicts[record.case_id] = verdict
        return verdict


def _no_warm_up(model, tokenizer, variant) -> None:
    return None


def _benchmark_timer(benchmark) -> Callable:
    """Rounds through pytest-benchmark's pedantic mode, so its JSON and tables hold the same rounds."""

    def timer(target, rounds: int) -> list[float]:
        if getattr(benchmark, "disabled", False):
            return perf_counter_timer(target, rounds)
        benchmark.pedantic(target, rounds=rounds, warmup_rounds=0, iterations=1)
        return list(benchmark.stats.stats.data)

    return timer


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
    swept = {name: tuple(values) for name, values in marker.kwargs.get("toggles", {}).items()}
    return BenchCase(session, request, variant, marker.kwargs["pipeline"], swept)


def _session_diff(bench_session: BenchSession) -> Diff:
    """This run against its baseline file, with the verdicts judged case by case during the run."""
    config = bench_session.config
    run = ResultSet("this run", RUN, bench_session.fingerprint["device_class"], model_id(bench_session.model_source),
                    dict(bench_session.fingerprint), dict(bench_session.records))
    baseline = bench_session.baseline_set()
    diff = compare(baseline, run, verdicts=bench_session.verdicts, missing_within_groups_run=True)
    if isinstance(bench_session.baseline, BaselineError):
        diff.notes.append(f"baseline not used: {bench_session.baseline}")
    if config.getoption("--bench-save-baseline"):
        diff.notes.append("--bench-save-baseline: regressions did not fail this run; the results became the baseline")
    return diff


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench_session = _session(session.config)
    if bench_session is None or not bench_session.records:
        return
    config = session.config
    bench_session.diff = _session_diff(bench_session)
    for path in config.getoption("--bench-report"):
        write_report(Path(path), bench_session.diff)
    if config.getoption("--bench-save-baseline"):
        records = list(bench_session.records.values())
        path = bench_session.baseline_file
        save_baseline(path, bench_session.fingerprint["device_class"], model_id(bench_session.model_source),
                      bench_session.fingerprint, records, config.getoption("--bench-reason"), current_commit(config.rootpath))
        bench_session.saved_to = path


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bench_session = _session(config)
    if bench_session is None or bench_session.diff is None:
        return
    terminalreporter.section("LLM inference benchmarks: speed and quality")
    terminalreporter.write_line(f"model {model_id(bench_session.model_source)} on {bench_session.fingerprint['device_class']}, "
                                f"matrix {config.getoption('--bench-matrix')}, {config.getoption('--bench-rounds')} rounds")
    terminalreporter.write_line(terminal_table(bench_session.diff))
    for path in config.getoption("--bench-report"):
        terminalreporter.write_line(f"report written to {path}")
    saved = bench_session.saved_to
    if saved:
        terminalreporter.write_line(f"baselines saved to {os.path.relpath(saved, config.rootpath)}")
