"""The vocabulary every layer shares: what one bench case records (the unit that baselines store, verdicts judge and
reports show), its id, the verdict on it, and a set of records as the gate compares them.

Plain dataclasses with `to_dict` / `from_dict`, so records travel as JSON (never pickle).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PipelineOutput:
    """What a pipeline returns for one run over its items: no timings, those are measure's."""

    quality: dict[str, float]  # e.g. {"accuracy": 0.84}; the first key is the gated metric
    counters: dict[str, int]  # deterministic work counters: generated_tokens, forward_passes, ...
    item_ids: list[str]
    item_scores: list[float]  # per item, aligned with item_ids: 1.0/0.0 correctness for accuracy
    item_outputs: list[str]  # per item: what the model produced (for fidelity between variants)
    # True when each item output is a decision (e.g. SAME / DIFFERENT): any change of one fails the
    # gate whatever the toggle's class, since a handful of decisions is too few for a paired test.
    decisions: bool = False
    # Per item, the answer the pipeline extracted from its output (eval, search: the normalized answer), where it
    # extracts one: answer-preserving toggles (early_stop) must keep every one. Empty: the outputs are the answers.
    item_answers: list[str] = field(default_factory=list)
    # Per item, a continuous value every variant computes comparably (scoring: a pair's score over the queries
    # every variant scores), gated within a tolerance against the reference and the baseline. Empty: none.
    item_values: list[float] = field(default_factory=list)


# The phase (pipelines.phases) of a cached decode's one-token steps, the prefill left out: the bandwidth of decode
# alone is read from it, beside the round's.
DECODE_STEPS = "decode steps"

# The timers a round is timed by (measure.TIMERS says how each is read). Speed is judged on the steadiest the device
# has: CPU time on a CPU (a neighbour's load shows in wall time, much less in CPU time), synchronized wall time on a GPU.
WALL, CPU_TIME = "wall", "cpu"


@dataclass
class Speed:
    round_seconds: list[float]  # wall time of each timed round, warm-up excluded
    items_per_round: int
    tokens_per_round: int  # generated tokens, for tokens/s
    peak_memory_bytes: int
    memory_kind: str  # "cuda_max_allocated", "cpu_case_peak" (weights + the rounds' own peak) or "cpu_process_peak_rss"
    warm_up_seconds: float = 0.0  # untimed first run; with compile=on, the compilation (reported apart)
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time of each round (the process's, every thread's)
    timer: str = WALL  # the timer speed is judged on: WALL (round_seconds) or CPU_TIME (cpu_seconds)
    instructions: list[int] = field(default_factory=list)  # per round, counted under callgrind (--bench-timer instructions)
    # Named phases within the rounds (pipelines.phases): each one's time per round, and its work counters
    phase_seconds: dict[str, list[float]] = field(default_factory=dict)
    phase_counters: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def judged_seconds(self) -> list[float]:
        """The rounds as the speed rules read them: by the judged timer."""
        return self.cpu_seconds if self.timer == CPU_TIME else self.round_seconds

    @property
    def median_seconds(self) -> float:
        ordered = sorted(self.round_seconds)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def items_per_minute(self) -> float:
        return 60.0 * self.items_per_round / self.median_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_round / self.median_seconds


@dataclass
class Speedup:
    """Median-time ratio reference / variant with a bootstrap confidence interval over rounds."""

    ratio: float
    low: float
    high: float
    confidence: float = 0.95


@dataclass
class Confirmation:
    """A speed regression timed again in pairs, a reference round and then the variant's, before it may fail.

    The speedup is the median of the pairs' ratios: a machine that changes speed slows both rounds of a pair
    alike. The first measurement takes a case's variants in turns, but the turns of a case with many variants
    span minutes, where a pair's two rounds follow one another (`research.studies.pairing_study`).
    """

    pairs: list[list[float]]  # [reference seconds, variant seconds] of each pair

    @property
    def ratio(self) -> float:
        return statistics.median(reference / variant for reference, variant in self.pairs)

    @property
    def label(self) -> str:
        return f"{len(self.pairs)} paired round{'s' if len(self.pairs) != 1 else ''}"


@dataclass(frozen=True)
class SpeedNoise:
    """How far a variant's speedup moves between runs when nothing changed, learned from A/A runs of the gate
    (`harness calibrate`) and stored with the case's baseline entry."""

    center: float  # mean of log(baseline speedup / run speedup) over the A/A runs
    spread: float  # its standard deviation
    runs: int  # how many A/A runs it was learned from
    measured: str  # when and where, e.g. "<date>, AMD EPYC (2 cores)"
    cpu: str = ""  # the CPU's model name it was learned on; "" in entries stored before it was kept
    arch: str = ""  # and its generation (models.cpu_arch); "" in entries stored before it was kept
    # The median calibration time of the A/A runs (machine_speed): the machine speed the noise holds near. None in
    # entries stored before it was kept; those are held against the calibration of the baseline's save instead.
    calibration_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def learned_here(self, cpu: str | None, arch: str | None) -> bool:
        """Whether a run on this CPU (model name and generation; either unknown matches) is the noise's machine."""
        if cpu and self.learned_on and self.learned_on != cpu:
            return False
        return not (arch and self.arch and self.arch != arch)

    @property
    def where(self) -> str:
        """The CPU it was learned on, for messages: "AMD EPYC (family 25 model 17, avx512)"."""
        return f"{self.learned_on} ({self.arch})" if self.arch else self.learned_on

    @property
    def learned_on(self) -> str:
        """The CPU the noise was learned on, read from `measured` in entries that predate `cpu`."""
        if self.cpu:
            return self.cpu
        match = re.search(r",\s*([^,]+?)\s*\(\d+ cores?\)\s*$", self.measured)
        return match.group(1) if match else ""


@dataclass
class CaseRecord:
    case_id: str  # "eval[math|kv_cache=on]": pipeline[group|toggles that differ from the reference]
    pipeline: str
    group: str  # what the case runs on, e.g. the suite; variants of one group share a reference
    variant: dict[str, str]  # every toggle the pipeline reads -> its value
    reference_variant: dict[str, str]
    fidelity: dict[str, str]  # toggle -> fidelity class, for the toggles that differ from the reference
    speed: Speed
    output: PipelineOutput
    speedup: Speedup | None = None  # None for the reference itself
    agreement: float | None = None  # share of items whose output equals the reference's
    confirmation: Confirmation | None = None  # a speed regression's paired re-timing, when it had one
    metadata: dict[str, Any] = field(default_factory=dict)  # dtype, device, settings

    @property
    def is_reference(self) -> bool:
        return self.variant == self.reference_variant

    @property
    def label(self) -> str:
        """The variant's label as the case id spells it ("kv_cache=on,batching=dynamic", "reference"): in the case's
        toggle order, which the variant dict, read back from a baseline's sorted JSON, no longer keeps."""
        return CaseId.parse(self.case_id).label

    @property
    def quality_metric(self) -> str:
        return next(iter(self.output.quality))

    @property
    def quality(self) -> float:
        return self.output.quality[self.quality_metric]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseRecord:
        values = dict(data)
        values["speed"] = Speed(**values["speed"])
        values["output"] = PipelineOutput(**values["output"])
        if values.get("speedup") is not None:
            values["speedup"] = Speedup(**values["speedup"])
        if values.get("confirmation") is not None:
            values["confirmation"] = Confirmation(**values["confirmation"])
        return cls(**values)


def differing_items(current: PipelineOutput, other: PipelineOutput) -> tuple[int, list[str]]:
    """Items both outputs share (paired by id), and the ids whose outputs differ."""
    others = dict(zip(other.item_ids, other.item_outputs))
    shared = [(i, out) for i, out in zip(current.item_ids, current.item_outputs) if i in others]
    return len(shared), [i for i, out in shared if out != others[i]]


# --- verdicts: what the gate says of a record -------------------------------------------------------------

# Verdict statuses, worst first.
REGRESSED, IMPROVED, PASSED, NEW = "regressed", "improved", "passed", "new"


@dataclass(frozen=True)
class Finding:
    """One metric's comparison: what moved, by how much, under which rule."""

    metric: str  # "speedup", "median_seconds", "outputs", "fidelity", "accuracy", "values", "counter:generated_tokens"
    against: str  # "baseline", "reference" or a neighbour's case id
    status: str  # REGRESSED / IMPROVED / PASSED
    message: str  # "accuracy 0.812 -> 0.703 (-10.9 pts: net 7 of 64 items lost; budget 2.0 pts = 1 item)"


@dataclass(frozen=True)
class Verdict:
    case_id: str
    status: str  # REGRESSED if any finding regressed, else IMPROVED if any improved, else PASSED; NEW without baseline
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def message(self) -> str:
        """One line per regression (or improvement), each prefixed with the case id."""
        worst = [f for f in self.findings if f.status == self.status] or list(self.findings)
        lines = [f"{self.case_id}: {f.message} [vs {f.against}]" for f in worst if f.status != PASSED]
        return "\n".join(lines) or f"{self.case_id}: {self.status}"



# --- result sets: the records of a run or a file, as the gate compares them -------------------------------

BASELINE, REPORT, PYTEST_BENCHMARK, RUN = "baseline", "report", "pytest-benchmark", "run"


@dataclass(frozen=True)
class Acceptance:
    """Why a baseline entry holds what it holds: the reason given when it was saved or accepted."""

    reason: str
    saved_at: str
    commit: str | None


@dataclass
class ResultSet:
    source: str  # the path as given
    kind: str  # BASELINE, REPORT or PYTEST_BENCHMARK; RUN for a live pytest session
    device_class: str
    model_id: str
    fingerprint: dict[str, Any]
    records: dict[str, CaseRecord]  # case id -> record, in file order
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # as judged when the file was written
    acceptances: dict[str, Acceptance] = field(default_factory=dict)  # baselines only
    history: list[dict[str, Any]] = field(default_factory=list)  # baselines only: one entry per save
    # baselines only: the cases whose A/A noise is known, one per CPU it was learned on
    speed_noise: dict[str, tuple[SpeedNoise, ...]] = field(default_factory=dict)
    ignored: int = 0  # pytest-benchmark entries that carry no case record
    case_fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)  # baselines only: each case's save

    def fingerprint_of(self, case_id: str) -> dict[str, Any]:
        """The environment a case was measured in: its own save's in a baseline, the run's otherwise."""
        return self.case_fingerprints.get(case_id, self.fingerprint)



@dataclass(frozen=True)
class CaseId:
    """A case's id, `pipeline[group|label]`, e.g. "eval[math|kv_cache=on,batching=dynamic]": the label names the toggles
    that differ from the reference, or "reference". Built and read here only."""

    pipeline: str
    group: str
    label: str

    def __str__(self) -> str:
        return f"{self.pipeline}[{self.group}|{self.label}]"

    @classmethod
    def parse(cls, text: str) -> CaseId:
        match = _CASE_ID.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a case id (pipeline[group|label])")
        return cls(*match.groups())


_CASE_ID = re.compile(r"([^\[\]|]+)\[(.*)\|([^|]*)\]")
