"""What every rule of the gate shares: the statuses, a finding, and the policy's numbers (one home for each)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Comparisons of budgets and factors ignore differences below this (0.71 - 0.70 is not > 0.01).
EPS = 1e-9

# How far speed may move before it counts, in the plugin and `harness diff` alike. Rounds are judged by CPU time on a
# CPU and by synchronized wall time on a GPU (measure.judged_timer); the factors are those the speed gate study
# held to zero false alarms with (docs/verdict.md, "Speed").
# A variant's speedup over its reference may fall by at most this factor: on the 2-core VM a speedup moved by up to
# 29.3% (-0.35 in log) from its baseline's with nothing changed, across the VM's two speeds (the speed gate study).
DEFAULT_SPEED_FACTOR = 1.5
# The reference's own time (scaled by the machine calibration on a CPU) may grow by this: on the 2-core VM a
# reference's CPU time moved from 0.57x to 1.68x its baseline's with nothing changed, the calibration notwithstanding.
DEFAULT_TIME_FACTOR = 2.0
# On a GPU the embedded model's cases are launch-bound: their wall time follows the host CPU, which no calibration
# tracks there. On one H100 a reference's time moved up to x1.98 between runs minutes apart, and a variant's speedup
# fell by up to 24.6% with nothing changed (research/gpu/logs/speed-gate-h100-*.jsonl).
GPU_SPEED_FACTOR = 1.35
GPU_TIME_FACTOR = 2.5
# On another machine than the baseline's (another CPU model or generation, or one that runs the calibration workload
# more than machine_speed.SAME_SPEED_FACTOR apart) a speedup moves by itself: bitsandbytes' nf4 variants lost 24-47%
# of theirs from one CPU model to another. There only a halving is judged.
CROSS_MACHINE_FACTOR = 2.0


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
    speedup_factor: float = DEFAULT_SPEED_FACTOR  # a variant's speedup must fall by more than this vs the baseline's
    time_factor: float = DEFAULT_TIME_FACTOR  # the reference variant's own median time must grow by more than this
    cross_machine_factor: float = CROSS_MACHINE_FACTOR  # both factors, where the baseline's machine is another
    # Instructions counted under callgrind (--bench-timer instructions) repeat to a few in a million: a variant's
    # median count may grow by at most this factor.
    instructions_factor: float = 1.05
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
    strict_env: bool = False  # a difference from the baseline's environment fails (--bench-strict-env)

    @classmethod
    def for_speed_factor(cls, factor: float | None = None, device_class: str = "cpu") -> GatePolicy:
        """The gate's policy on a device class; a `factor` given replaces both speed factors (None: the measured
        defaults of the device: the CPU's, or the GPU's for a cuda-* class)."""
        if factor is not None:
            return cls(speedup_factor=factor, time_factor=factor)
        if device_class.startswith("cuda"):
            return cls(speedup_factor=GPU_SPEED_FACTOR, time_factor=GPU_TIME_FACTOR)
        return cls()

    def on_another_machine(self) -> GatePolicy:
        """The policy for a baseline measured on another machine: speed changes count only beyond the cross factor."""
        return replace(self, speedup_factor=max(self.speedup_factor, self.cross_machine_factor),
                       time_factor=max(self.time_factor, self.cross_machine_factor))
