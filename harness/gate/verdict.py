"""The rules that turn a case's record, its baseline and its session reference into a verdict.

No I/O here: records in, verdicts out.

Against the baseline (same case id, same device class: the caller guarantees that):

Speed is read by the judged timer (`Speed.judged_seconds`: CPU time on a CPU, synchronized wall time on a GPU); a
baseline timed by another timer is not judged for speed. On another machine than the baseline's both factors become
`cross_machine_factor`.

1. speed of a variant: its speedup over the session reference must not fall by more than
   `speedup_factor`; where A/A runs have measured the case's noise (`SpeedNoise`), by more than `noise_z` of its
   standard deviations instead. Once the caller has timed such a regression again in pairs
   (`CaseRecord.confirmation`), it stands only if the paired speedup falls beyond the same limit;
2. speed of the reference variant (no speedup): its median time must not grow by more than
   `time_factor`, with a one-sided Mann-Whitney U test; where both sides timed the calibration workload
   (`machine_speed`), this run's times are first divided by how much slower this machine ran it;
3. outputs: the same variant reproduces every per-item output, score and value of its baseline
   (`harness.gate.quality`: greedy inference on one device class is deterministic);
4. work counters: compared exactly; more work regresses; less work improves only with unchanged outputs (less
   work with changed outputs is a regression until accepted, and the outputs rule says so);
5. the weights loaded are those the baseline measured.

Against the session reference (for every variant but the reference itself), and between one-toggle neighbours:

6. fidelity by class (`harness.gate.quality`): exact (every output), answer-preserving (every extracted answer),
   tolerance (agreement and a net-loss budget) or budgeted (the toggle's net-loss budget on the fixed items).

Every metric is treated as higher-is-better (accuracy, AUC, decision accuracy, reward).

One piece past 400 lines: the speed rules (factor, A/A noise, paired confirmation, instructions) are one rule with its
fallbacks; the quality rules live in harness.gate.quality.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
from scipy import stats

from harness.gate.policy import EPS, GatePolicy
from harness.gate.quality import (
    baseline_findings,
    decision_findings,
    fidelity_class,
    outputs_changed,
    power_finding,
    reference_findings,
)
from harness.measure.machine_speed import slower_by
from harness.records import (
    IMPROVED,
    NEW,
    PASSED,
    REGRESSED,
    CaseRecord,
    Finding,
    SpeedNoise,
    Speedup,
    Verdict,
)
from harness.toggles import FIDELITY_CLASSES

# --- speed -------------------------------------------------------------------------------------


def bootstrap_speedup(
    reference_seconds: Sequence[float],
    variant_seconds: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Speedup:
    """Ratio of median times reference / variant with a percentile bootstrap confidence interval.

    Each side's rounds are resampled independently (they are separate measurements), with a numpy
    Generator seeded by `seed`, so the same rounds always give the same interval.
    """
    reference = np.asarray(reference_seconds, dtype=float)
    variant = np.asarray(variant_seconds, dtype=float)
    if reference.size == 0 or variant.size == 0:
        raise ValueError("bootstrap_speedup needs at least one round on each side")
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(variant))):
        raise ValueError("round times must be finite")
    if np.any(reference <= 0) or np.any(variant <= 0):
        raise ValueError("round times must be positive")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")

    ratio = float(np.median(reference) / np.median(variant))
    rng = np.random.default_rng(seed)
    reference_medians = np.median(rng.choice(reference, size=(resamples, reference.size), replace=True), axis=1)
    variant_medians = np.median(rng.choice(variant, size=(resamples, variant.size), replace=True), axis=1)
    ratios = reference_medians / variant_medians
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.percentile(ratios, [tail, 100.0 - tail]))
    # The bootstrap distribution of a median ratio always puts far more than the tail mass on each
    # side of the point estimate; the clamp only guards against rounding in the interpolation.
    return Speedup(ratio=ratio, low=min(low, ratio), high=max(high, ratio), confidence=confidence)


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds * 1e6:.1f}us"


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _measured_noise(noise: SpeedNoise | None, policy: GatePolicy) -> SpeedNoise | None:
    """The case's A/A noise when enough runs measured it to judge by; None: the factor rule judges."""
    return noise if noise is not None and noise.runs >= policy.min_noise_runs else None


def _speedup_regressed(ratio: float, baseline: Speedup, noise: SpeedNoise | None, policy: GatePolicy) -> bool:
    """Whether a speedup of `ratio` fell beyond what the case's rule allows: its A/A noise, or the factor."""
    if _measured_noise(noise, policy) is not None:
        return beyond_noise(baseline.ratio, ratio, noise, policy)
    return ratio < baseline.ratio / policy.speedup_factor


def _speedup_finding(current: Speedup, baseline: Speedup, policy: GatePolicy) -> Finding:
    """Rule 1 by the factor: a speedup that fell by more than `speedup_factor` regresses (a paired re-timing then
    confirms or clears it); an improvement must clear the factor with non-overlapping intervals as well."""
    message = (
        f"speedup {baseline.ratio:.2f}x -> {current.ratio:.2f}x ({100 * (current.ratio / baseline.ratio - 1):+.1f}%, "
        f"CI {current.low:.2f}-{current.high:.2f}; limit -{100 * (1 - 1 / policy.speedup_factor):.0f}%, "
        f"factor {policy.speedup_factor:g})"
    )
    status = PASSED
    if _speedup_regressed(current.ratio, baseline, None, policy):
        status = REGRESSED
    elif current.ratio > baseline.ratio * policy.speedup_factor and current.low > baseline.high:
        status = IMPROVED
    return Finding("speedup", "baseline", status, message)


def noise_limit(noise: SpeedNoise, policy: GatePolicy) -> float:
    """The largest drop of log speedup (from the noise's starting point) that still counts as noise."""
    return max(math.log(policy.noise_floor), policy.noise_z * noise.spread)


def noise_start(noise: SpeedNoise) -> float:
    """Where a drop is counted from, in log(baseline speedup / speedup): the slower of the baseline and the A/A
    mean. A baseline recorded in a slow moment is forgiven when the A/A runs were slower still; one recorded in
    a fast moment is not held against later runs, which the A/A runs of one series would otherwise do (their
    spread does not cover how far one series' mean lies from another's)."""
    return max(noise.center, 0.0)


def noise_drop(baseline_ratio: float, ratio: float, noise: SpeedNoise) -> float:
    return math.log(baseline_ratio / ratio) - noise_start(noise)


def beyond_noise(baseline_ratio: float, ratio: float, noise: SpeedNoise, policy: GatePolicy) -> bool:
    """Rule 1 with the case's A/A noise: the speedup fell by more than its noise allows."""
    return noise_drop(baseline_ratio, ratio, noise) > noise_limit(noise, policy) + EPS


def _noise_speedup_finding(current: Speedup, baseline: Speedup, noise: SpeedNoise, policy: GatePolicy) -> Finding:
    """Rule 1 with the case's A/A noise: the drop of log speedup, from the slower of baseline and A/A mean,
    against noise_z spreads."""
    drop = noise_drop(baseline.ratio, current.ratio, noise)
    limit = noise_limit(noise, policy)
    message = (
        f"speedup {baseline.ratio:.2f}x -> {current.ratio:.2f}x ({100 * (current.ratio / baseline.ratio - 1):+.1f}%; "
        f"A/A noise {100 * noise.spread:.1f}% sd over {noise.runs} runs, limit {100 * (math.exp(-limit - noise_start(noise)) - 1):+.1f}%)"
    )
    status = PASSED
    if beyond_noise(baseline.ratio, current.ratio, noise, policy):
        status = REGRESSED
    elif drop < -limit - EPS:
        status = IMPROVED
    return Finding("speedup", "baseline", status, message)


def _scaled_rounds(current: CaseRecord, machine_scale: float | None) -> list[float]:
    """The current rounds as the baseline's machine would have timed them: divided by how many times slower this
    machine ran the calibration workload (machine_speed)."""
    scale = slower_by(machine_scale)
    rounds = current.speed.judged_seconds
    return [t / scale for t in rounds] if scale else list(rounds)


def _time_change(factor: float, machine_scale: float | None) -> str:
    machine_scale = slower_by(machine_scale)
    if not machine_scale:
        return f"x{factor:.2f}"
    return f"x{factor * machine_scale:.2f} as timed, x{factor:.2f} scaled by this machine's x{machine_scale:.2f} on the calibration"


def _time_finding(current: CaseRecord, baseline: CaseRecord, policy: GatePolicy, machine_scale: float | None) -> Finding:
    cur, base = _scaled_rounds(current, machine_scale), baseline.speed.judged_seconds
    factor = float(np.median(cur) / np.median(base))
    slower = factor >= 1.0
    # One-sided in the direction the medians moved: "greater" asks whether current is slower.
    p = float(stats.mannwhitneyu(cur, base, alternative="greater" if slower else "less").pvalue)
    message = (
        f"median {current.speed.timer} time {_fmt_seconds(float(np.median(base)))} -> "
        f"{_fmt_seconds(float(np.median(current.speed.judged_seconds)))} "
        f"({_time_change(factor, machine_scale)}, Mann-Whitney {_fmt_p(p)}, "
        f"factor {policy.time_factor:g})"
    )
    # `<=`: with 3 rounds a side the smallest exact one-sided p is 1/20 = 0.05 = speed_alpha.
    significant = p <= policy.speed_alpha + EPS
    status = PASSED
    if significant and slower and factor > policy.time_factor:
        status = REGRESSED
    elif significant and not slower and 1.0 / factor > policy.time_factor:
        status = IMPROVED
    return Finding("median_seconds", "baseline", status, message)


def _confirmed_by_pairs(finding: Finding, current: CaseRecord, baseline: CaseRecord, noise: SpeedNoise | None,
                        policy: GatePolicy) -> Finding:
    """A speedup regression stands only if the paired re-timing (`CaseRecord.confirmation`) falls beyond the
    same limit; without one (not timed yet, or pairs turned off) the first measurement decides."""
    if finding.status != REGRESSED or current.confirmation is None:
        return finding
    paired, pairs = current.confirmation.ratio, current.confirmation.label
    if _speedup_regressed(paired, baseline.speedup, noise, policy):
        return replace(finding, message=f"{finding.message}; confirmed by {pairs}: {paired:.2f}x")
    return replace(finding, status=PASSED,
                   message=f"{finding.message}; {_NOT_CONFIRMED} {pairs}: {paired:.2f}x (the machine's "
                           f"speed changed between the reference's rounds and the variant's)")


_NOT_CONFIRMED = "not confirmed by"


def cleared_by_pairs(verdict: Verdict) -> bool:
    """True when a speedup regression of the first measurement was cleared by its paired re-timing."""
    return any(f.metric == "speedup" and f.status == PASSED and _NOT_CONFIRMED in f.message for f in verdict.findings)


def needs_confirmation(verdict: Verdict) -> bool:
    """True when the verdict fails on a variant's speedup against its baseline: the finding to time again in pairs."""
    return any(f.metric == "speedup" and f.against == "baseline" and f.status == REGRESSED for f in verdict.findings)


def _speed_findings(current: CaseRecord, baseline: CaseRecord, policy: GatePolicy,
                    noise: SpeedNoise | None = None, machine_scale: float | None = None,
                    same_machine: bool = True) -> list[Finding]:
    if not policy.judge_speed:
        return [Finding("speed", "baseline", PASSED, "speed not judged: the baseline is from another device class")]
    if current.speed.timer != baseline.speed.timer:
        return [Finding("speed", "baseline", PASSED,
                        f"speed not judged: the baseline was timed by {baseline.speed.timer} time, this run by "
                        f"{current.speed.timer} time; save the baseline again")]
    rounds = min(len(current.speed.judged_seconds), len(baseline.speed.judged_seconds))
    if rounds < policy.min_rounds:
        return [Finding("speed", "baseline", PASSED,
                        f"speed not judged: {rounds} timed round(s) on one side, {policy.min_rounds} needed")]
    where = ""
    if not same_machine:
        policy, noise = policy.on_another_machine(), None
        where = "; the baseline's machine is another, so only this factor counts"
    if current.speedup is not None and baseline.speedup is not None:
        if _measured_noise(noise, policy) is not None:
            finding = _noise_speedup_finding(current.speedup, baseline.speedup, noise, policy)
        else:
            finding = _speedup_finding(current.speedup, baseline.speedup, policy)
        finding = _confirmed_by_pairs(finding, current, baseline, noise, policy)
        return [replace(finding, message=finding.message + where)]
    # The reference variant has no speedup; a variant whose baseline lacks one falls back to
    # absolute times too (same case, same device class).
    cur, base = current.speed.judged_seconds, baseline.speed.judged_seconds
    if not cur or not base or min(cur) <= 0 or min(base) <= 0:
        return [Finding("median_seconds", "baseline", PASSED, "speed not comparable: no timed rounds on one side")]
    finding = _time_finding(current, baseline, policy, machine_scale)
    return [replace(finding, message=finding.message + where)]


def instruction_findings(current: CaseRecord, baseline: CaseRecord, policy: GatePolicy) -> list[Finding]:
    """Rule 1b, where both the run and the baseline counted the variant's instructions (--bench-timer
    instructions): its median count must not grow by more than `instructions_factor`."""
    now, before = current.speed.instructions, baseline.speed.instructions
    if not now or not before:
        return []
    factor = float(np.median(now) / np.median(before))
    message = (f"instructions {np.median(before):,.0f} -> {np.median(now):,.0f} a round ({100 * (factor - 1):+.2f}%, "
               f"factor {policy.instructions_factor:g})")
    status = REGRESSED if factor > policy.instructions_factor + EPS else (
        IMPROVED if 1 / factor > policy.instructions_factor + EPS else PASSED)
    return [Finding("instructions", "baseline", status, message)]


# --- work counters -----------------------------------------------------------------------------


def _counter_findings(current: CaseRecord, baseline: CaseRecord, outputs_same: bool = True) -> list[Finding]:
    """Counters gate exactly. Less work is an improvement only where the outputs stayed the same."""
    findings: list[Finding] = []
    cur, base = current.output.counters, baseline.output.counters
    unchanged = []
    for name in [n for n in cur if n in base]:
        before, after = base[name], cur[name]
        if after == before:
            unchanged.append(name)
            continue
        change = f"{100.0 * (after - before) / before:+.1f}%" if before else "from zero"
        status = REGRESSED if after > before else IMPROVED if outputs_same else PASSED
        note = "" if after > before or outputs_same else ": less work with changed outputs is no improvement"
        findings.append(Finding(f"counter:{name}", "baseline", status, f"counter {name} {before} -> {after} ({change}){note}"))
    if unchanged:
        findings.append(Finding("counters", "baseline", PASSED, f"counters unchanged: {', '.join(unchanged)}"))
    only_current = [n for n in cur if n not in base]
    only_baseline = [n for n in base if n not in cur]
    if only_current or only_baseline:
        parts = []
        if only_current:
            parts.append(f"new (not in the baseline): {', '.join(only_current)}")
        if only_baseline:
            parts.append(f"gone (only in the baseline): {', '.join(only_baseline)}")
        findings.append(Finding("counters", "baseline", PASSED, "counters " + "; ".join(parts)))
    return findings


# --- the model measured -------------------------------------------------------------------------


def _fmt_weights(weights: dict) -> str:
    return (f"{weights.get('parameters', 0):,} parameters in {weights.get('bytes', 0) / 2**20:.2f} MiB, "
            f"{'+'.join(weights.get('dtypes', []))}, quantization {weights.get('quantization')}")


def _model_findings(current: CaseRecord, baseline: CaseRecord) -> list[Finding]:
    """The weights this case ran must be those of its baseline: another model, dtype or quantization is not a
    speed-up or a quality change of the code, and must not pass as one."""
    now, before = current.metadata.get("weights"), baseline.metadata.get("weights")
    if not isinstance(now, dict) or not isinstance(before, dict):
        return []
    if now == before:
        return [Finding("model", "baseline", PASSED, f"model as in the baseline: {_fmt_weights(now)}")]
    return [Finding("model", "baseline", REGRESSED,
                    f"model changed vs the baseline: {_fmt_weights(before)} -> {_fmt_weights(now)}; the case did not "
                    "load what its baseline measured (re-record the baseline if the model was meant to change)")]


# --- neighbours ----------------------------------------------------------------------------------


def neighbour_findings(current: CaseRecord, neighbour: CaseRecord, policy: GatePolicy = GatePolicy()) -> list[Finding]:
    """The contract of the one toggle in which two variants of a session differ, checked between them.

    This is how leave-one-out and full matrices check, say, that kv_cache is exact: the variant
    without it is compared with the one that has it, all else equal.
    """
    # Each pair is met from both sides; it is judged from the side that has the toggle on, since a budget is a loss
    # from the side without it to the side with it.
    toggle = next(t for t in current.variant if current.variant[t] != neighbour.variant.get(t))
    if current.variant[toggle] == current.reference_variant.get(toggle):
        return []
    view = replace(current, reference_variant=dict(neighbour.variant), fidelity={toggle: current.fidelity[toggle]})
    return reference_findings(view, neighbour, policy, against=neighbour.case_id)


def one_toggle_neighbours(record: CaseRecord, records: Iterable[CaseRecord]) -> list[CaseRecord]:
    """The non-reference variants of the same pipeline and group that differ from `record` in exactly one toggle."""
    return [
        other for other in records
        if other.group == record.group and other.pipeline == record.pipeline and other is not record
        and not other.is_reference
        and sum(other.variant.get(t) != record.variant.get(t) for t in record.variant) == 1
    ]


# --- the verdict -------------------------------------------------------------------------------


# A first timed round this many times the median of the others was not warm: the case's warm-up did not run what
# its rounds do. The CPU baseline's cases stay under it; 31 of the GPU baselines' 142, warmed on a few items, did not.
COLD_FIRST_ROUND_FACTOR = 1.5
COLD_FIRST_ROUND = "warm-up"  # the finding's metric


def cold_first_round_findings(current: CaseRecord) -> list[Finding]:
    """A note, never a regression, where the first timed round ran cold: the median, and the speedup, lean on it."""
    rounds = current.speed.round_seconds
    if len(rounds) < 2:
        return []
    rest = float(np.median(rounds[1:]))
    if rounds[0] <= COLD_FIRST_ROUND_FACTOR * rest:
        return []
    return [Finding(COLD_FIRST_ROUND, "its other rounds", PASSED,
                    f"first timed round {_fmt_seconds(rounds[0])}, {rounds[0] / rest:.1f}x the median of the others "
                    f"({_fmt_seconds(rest)}): the warm-up did not run what the rounds do, so the figures lean on it")]


def judge(
    current: CaseRecord,
    baseline: CaseRecord | None,
    reference: CaseRecord | None,
    policy: GatePolicy = GatePolicy(),
    neighbours: Sequence[CaseRecord] = (),
    noise: SpeedNoise | None = None,
    machine_scale: float | None = None,
    same_machine: bool = True,
    environment: Sequence[Finding] = (),
) -> Verdict:
    """Apply rules 1-5 against the baseline (if any) and rule 6 against the session reference (if any).

    `noise` is the case's A/A speed noise stored with its baseline entry, when it has been measured and holds on
    this machine. `machine_scale` is how many times slower this machine ran the calibration workload than the
    baseline's did: absolute times are divided by it before they are compared (None: compared as timed).
    `same_machine` False: the baseline's machine is another (GatePolicy.on_another_machine). `environment`: the
    findings on what differs from the baseline's environment (harness.measure.environment), passed through.

    Status: REGRESSED if any finding regressed; else NEW without a baseline; else IMPROVED if any
    finding improved; else PASSED.
    """
    findings: list[Finding] = []
    if baseline is None:
        findings.append(Finding("baseline", "baseline", NEW,
                                "not in the baseline yet: record it with --bench-save-baseline or harness accept"))
    else:
        findings += _speed_findings(current, baseline, policy, noise, machine_scale, same_machine)
        findings += instruction_findings(current, baseline, policy)
        findings += environment
        changes = outputs_changed(current, baseline)
        findings += baseline_findings(current, baseline, policy, changes)
        findings += _counter_findings(current, baseline, outputs_same=not changes)
        findings += _model_findings(current, baseline)
        findings += decision_findings(current, baseline, "baseline")
    if reference is not None and not current.is_reference and reference is not current:
        findings += reference_findings(current, reference, policy)
        findings += decision_findings(current, reference, "reference")
    for neighbour in neighbours:
        findings += neighbour_findings(current, neighbour, policy)
    findings += cold_first_round_findings(current)
    findings.append(power_finding(current, policy))

    statuses = {f.status for f in findings}
    if REGRESSED in statuses:
        status = REGRESSED
    elif baseline is None:
        status = NEW
    elif IMPROVED in statuses:
        status = IMPROVED
    else:
        status = PASSED
    return Verdict(current.case_id, status, tuple(findings))


__all__ = [
    "COLD_FIRST_ROUND",
    "COLD_FIRST_ROUND_FACTOR",
    "FIDELITY_CLASSES",
    "GatePolicy",
    "bootstrap_speedup",
    "cleared_by_pairs",
    "cold_first_round_findings",
    "decision_findings",
    "fidelity_class",
    "judge",
    "needs_confirmation",
    "neighbour_findings",
    "beyond_noise",
    "noise_drop",
    "noise_limit",
    "noise_start",
    "one_toggle_neighbours",
]
