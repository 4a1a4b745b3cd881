"""One bench case: what its body sees (`bench.variant`, `bench.load`, `bench.run`), and how `run` measures the
case's variants together, judges this one, and hands its rounds to pytest-benchmark's fixture.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
import torch

from harness import toggles as toggle_registry
from harness.gate.diff import judge_case
from harness.gate.verdict import bootstrap_speedup, needs_confirmation
from harness.measure.guard import (
    CaseFailure,
    TimeBudget,
    failing_cleanly_on_oom,
    is_out_of_memory,
    out_of_memory_failure,
)
from harness.measure.inject import patched_pipelines, slowed
from harness.measure.roofline import efficiency_figures, measured_read_bandwidth
from harness.measure.timing import (
    MeasureSettings,
    Side,
    measure_interleaved,
    time_pairs,
)
from harness.models.loading import (
    LoadedModel,
    LoadSpec,
    ModelLoadError,
    default_dtype,
    weights_summary,
)
from harness.models.placement import layout_of
from harness.models.profiles import is_profile
from harness.pipelines.attention import KernelRefused
from harness.pipelines.progress import ProgressWriter, case_progress
from harness.plugin import workers
from harness.plugin.session import BenchSession
from harness.records import (
    IMPROVED,
    REGRESSED,
    CaseId,
    CaseRecord,
    Confirmation,
    PipelineOutput,
    Speed,
    Verdict,
    differing_items,
)
from harness.report.tables import ACCEPT_HINT
from harness.store.baseline import scrub_paths
from harness.store.baseline_format import BaselineError
from harness.store.results import RECORD_KEY, VERDICT_KEY, verdict_to_dict
from harness.toggles import is_on, value_of


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
        device, options = self.session.device, self.session.options
        quantization = self.session.injections.quantization(value_of(variant, "quantization"))
        return LoadSpec(self.session.model_source, device, default_dtype(device), quantization,
                        compile=is_on(variant, "compile"), trust_remote_code=options.trust_remote_code,
                        allow_pickle_weights=options.allow_pickle_weights, placement=self.session.placement)

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
        here, their rounds interleaved (`measure_interleaved`); the others find their record made.
        """
        case_id = self._case_id(group, self.variant)
        options = self.session.options
        try:
            record = self._measured(group, pipeline, warm_up)
            reference = self.session.records[self._case_id(group, self.reference_variant)]
            verdict = self._judge(record, reference)
            if self._wants_pairs(record, verdict):
                record.confirmation = self._confirm(group, pipeline, options.confirm_pairs)
                verdict = self._judge(record, reference)
        except (CaseFailure, ModelLoadError, KernelRefused) as error:
            pytest.fail(str(error), pytrace=False)
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            pytest.fail(str(out_of_memory_failure(case_id, self.session.device, error)), pytrace=False)
        benchmark = self.request.getfixturevalue("benchmark")
        _hand_rounds(benchmark, record.speed.round_seconds)
        benchmark.extra_info.update(_extra_info(record, verdict))
        if verdict.status == REGRESSED and not options.save_baseline:
            pytest.fail(verdict.message, pytrace=False)
        if verdict.status == IMPROVED and options.ratchet:
            pytest.fail(f"{verdict.message}\nthe baseline is stale (--bench-ratchet): accept the new figures with "
                        f"{ACCEPT_HINT} or --bench-save-baseline", pytrace=False)
        return record

    def _case_id(self, group: str, variant: dict[str, str]) -> str:
        return str(CaseId(self.pipeline, group, toggle_registry.variant_label(variant, self.reference_variant)))

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
        collected = self.session.case_variants.get(case_key(self.request.node), [])
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
        with case_progress(f"{self.pipeline}[{group}]", self.session.options.progress, self._progress_stream()) as progress, \
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
        budget = TimeBudget(self.session.options.timeout, case_id)
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
        options = self.session.options
        if not options.confirm_pairs or options.save_baseline or record.is_reference:
            return False
        return needs_confirmation(verdict) or options.confirm_all

    def _confirm(self, group, pipeline, pairs: int) -> Confirmation:
        """The speed regression's re-timing: the reference's round, then the variant's, `pairs` times."""
        reference, _ = self._side(group, self.reference_variant, pipeline, None)
        variant, _ = self._side(group, self.variant, pipeline, None)
        with patched_pipelines(self.session.injections):
            return Confirmation(time_pairs(reference.run, variant.run, pairs, self.session.device, self._cuda_devices()))

    def _settings(self) -> MeasureSettings:
        options = self.session.options
        return MeasureSettings(rounds=options.rounds, min_time=self.session.min_time, max_rounds=options.max_rounds,
                               device=self.session.device, same_outputs=not self.speed_profile,
                               cuda_devices=self._cuda_devices(), count_instructions=options.count_instructions)

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
            metadata={"dtype": loaded.spec.dtype, "device": self.session.device, "model": self.session.model_id,
                      "weights": weights_summary(loaded.model), "random_weights": self.speed_profile},
        )
        layout = layout_of(loaded.model) if self.session.placement is not None else None
        if layout is not None:
            record.metadata["layout"] = layout  # modules per GPU, as accelerate placed them
        if self.session.device == "cuda":
            record.metadata.update(self._efficiency(loaded.model, output.counters, speed.median_seconds))
            phases = {name: self._efficiency(loaded.model, counters, statistics.median(speed.phase_seconds[name]))
                      for name, counters in speed.phase_counters.items() if speed.phase_seconds.get(name)}
            if any(phases.values()):
                record.metadata["phases"] = {name: figures for name, figures in phases.items() if figures}
        if not record.is_reference:
            reference = self.session.records.get(self._case_id(group, self.reference_variant))
            record.speedup = bootstrap_speedup(reference_rounds, speed.judged_seconds)
            shared, differing = differing_items(output, reference.output)
            record.agreement = (shared - len(differing)) / shared if shared else None
        return record

    def _efficiency(self, model, counters: dict[str, int], seconds: float) -> dict[str, dict]:
        return efficiency_figures(model, counters, seconds, self.session.fingerprint["gpu"], measured_read_bandwidth())

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
        """The one judging path `harness diff` takes too (`judge_case`), against the session's baseline."""
        try:
            baseline = self.session.baseline_set
        except BaselineError as error:
            pytest.fail(str(error), pytrace=False)
        verdict = judge_case(record, baseline, self.session.fingerprint, reference, self.session.records.values(),
                             self.session.policy)
        self.session.verdicts[record.case_id] = verdict
        return verdict


def chosen_warm_up(variant: dict[str, str], device: str, pipeline: Callable, warm_up: Callable | None) -> Callable:
    """What a side runs, untimed, before its rounds: the case's warm-up, or the whole pipeline where a shorter one
    leaves the rounds cold. Compiling does (each new shape compiles). On a GPU so did the cases' shorter warm-ups:
    31 of the 142 cases of the GPU baselines had a first timed round 1.5-5.7x the median of the rest
    (eval[math-200|reference] on the H100: 21.7 s against 6.8 s), none of the CPU baseline's."""
    if is_on(variant, "compile") or device == "cuda":
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


def case_key(item: pytest.Item) -> str:
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
