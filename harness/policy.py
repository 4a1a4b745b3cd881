"""What every rule of the gate shares: the statuses, a finding, and the policy's numbers (one home for each)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Verdict statuses, worst first.
REGRESSED, IMPROVED, PASSED, NEW = "regressed", "improved", "passed", "new"

# Comparisons of budgets and factors ignore differences below this (0.71 - 0.70 is not > 0.01).
EPS = 1e-9

# How much a speed must change, beyond significance, to count, in the plugin and `harness diff` alike: the
# between-run spread of a 1-second round on a 2-core CPU reached 1.66x.
DEFAULT_SPEED_FACTOR = 2.0


@dataclass(frozen=True)
class Finding:
    """One metric's comparison: what moved, by how much, under which rule."""

    metric: str  # "speedup", "median_seconds", "outputs", "fidelity", "accuracy", "values", "counter:generated_tokens"
    against: str  # "baseline", "reference" or a neighbour's case id
    status: str  # REGRESSED / IMPROVED / PASSED
    message: str  # "accuracy 0.812 -> 0.703 (-10.9 pts: net 7 of 64 items lost; budget 2.0 pts = 1 item)"


@dataclass(frozen=True)
class ValueTolerance:
    """How far a per-item value (scoring's pair scores) may move: |change| <= absolute + relative * |value|."""

    absolute: float
    relative: float

    def allows(self, before: float, after: float) -> bool:
        return abs(after - before) <= self.absolute + self.relative * abs(before) + EPS

    def __str__(self) -> str:
        return f"±({self.absolute:g} + {100 * self.relative:g}%)"


def _value_tolerances() -> dict[str, ValueTolerance]:
    # Against the baseline the same variant runs the same arithmetic: only the last float digits may move (the
    # CPU baselines of two CPU generations differed by 1e-7). Against the reference, by the fidelity class of what
    # differs: exact and answer-preserving toggles change no score beyond rounding, tolerance toggles (padding,
    # kernels) a little, budgeted ones (top-k) by design; a shift like 0.000 -> 0.377 fails every class.
    return {
        "baseline": ValueTolerance(1e-3, 1e-3),
        "exact": ValueTolerance(1e-3, 1e-3),
        "answer-preserving": ValueTolerance(1e-3, 1e-3),
        "tolerance": ValueTolerance(0.02, 0.02),
        "budgeted": ValueTolerance(0.05, 0.10),
    }


@dataclass(frozen=True)
class GatePolicy:
    speed_alpha: float = 0.05  # significance for speed (3-round samples cannot reach smaller p with Mann-Whitney)
    speedup_factor: float = 1.25  # a variant's speedup must fall by more than this factor vs the baseline's speedup
    time_factor: float = 1.5  # the reference variant's own median time must grow by more than this (same device class)
    # Tolerance-class toggles (attention kernels, padding, compile): the net quality loss allowed against the
    # reference, in points of the metric, and the share of items whose output must equal the reference's.
    # Budgeted toggles carry their own budget in the toggle registry.
    quality_budget: float = 0.01
    min_agreement: float = 0.9
    value_tolerances: dict[str, ValueTolerance] = field(default_factory=_value_tolerances)
    min_rounds: int = 3  # fewer timed rounds on either side cannot show significance: speed is not judged
    # With a case's A/A noise known: its speedup regresses when it falls by more than noise_z standard
    # deviations of the A/A spread (beyond the A/A mean), and never for less than noise_floor (asv's factor).
    noise_z: float = 4.0
    noise_floor: float = 1.10
    min_noise_runs: int = 8  # fewer A/A runs do not pin the spread down: the factor rule applies
    judge_speed: bool = True  # False across device classes: only quality, counters and fidelity are judged

    @classmethod
    def for_speed_factor(cls, factor: float | None = None) -> GatePolicy:
        """The gate's policy: one factor for a variant's speedup and for the reference's own time."""
        factor = DEFAULT_SPEED_FACTOR if factor is None else factor
        return cls(speedup_factor=factor, time_factor=factor)
