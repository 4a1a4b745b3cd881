"""Which saved measurement holds on this machine, and what differs from the baseline's environment.

A case's stored A/A speed noise holds only on the CPU it was learned on and near its machine speed; elsewhere the
factor rule judges speedups. A difference of environment (`measure.environment.changes`) is named in the verdict,
and with --bench-strict-env fails it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.measure.environment import changes, same_machine
from harness.measure.machine_speed import (
    FINGERPRINT_KEY,
    SAME_SPEED_FACTOR,
    machine_scale,
    same_speed,
)
from harness.records import PASSED, REGRESSED, Finding, SpeedNoise


@dataclass(frozen=True)
class MachineMatch:
    """How a saved measurement's speed judges this run's: its A/A noise where it holds here, and the factor by
    which this machine ran the calibration workload slower (None: unknown, times compared as timed)."""

    noise: SpeedNoise | None
    scale: float | None
    set_aside: str = ""  # why the stored noise does not hold here; "" when it does, or there is none
    same_machine: bool = True  # environment.same_machine: the baseline's speed factors hold here
    changes: tuple[str, ...] = ()  # environment.changes: what differs from the baseline's environment


def match_machine(noises: Sequence[SpeedNoise], run: dict[str, Any], saved: dict[str, Any]) -> MachineMatch:
    """A case keeps one A/A noise per CPU it was learned on. One holds only on its CPU model (and generation, where
    both know it), and on a machine within SAME_SPEED_FACTOR of the A/A runs' calibration (of the baseline's save,
    for noise stored before that was kept): bitsandbytes' nf4 variants of the eval case lost 24-47% of their
    speedup from an AMD EPYC to an Intel Xeon, and 20-30% on a CI runner that reported the same AMD EPYC but ran
    every case 1.5-2.5x slower. Elsewhere the factor rule judges speedups."""
    scale = machine_scale(run, saved)
    facts = {"same_machine": same_machine(run, saved), "changes": tuple(changes(run, saved))}
    if not noises:
        return MachineMatch(None, scale, **facts)
    cpu, arch = run.get("cpu"), run.get("cpu_arch")
    here = [noise for noise in noises if noise.learned_here(cpu, arch)]
    if not here:
        learned = " and ".join(noise.where if arch else noise.learned_on for noise in noises)
        return MachineMatch(None, scale, f"the baseline's speed noise was learned on {learned}, this run is on "
                                         f"{cpu}{f' ({arch})' if arch and any(n.arch for n in noises) else ''}", **facts)
    noise = max(here, key=lambda n: bool(n.arch))  # the one that names this CPU's generation, where one does
    if noise.calibration_seconds is None:
        against, than = scale, "the one that saved the baseline"
    else:
        against, than = machine_scale(run, {FINGERPRINT_KEY: noise.calibration_seconds}), "the A/A runs its speed noise was learned from"
    if not same_speed(against):
        return MachineMatch(None, scale, f"this machine ran the calibration workload x{against:.2f} as long as {than}, "
                                         f"beyond the x{SAME_SPEED_FACTOR:g} within which that noise holds", **facts)
    return MachineMatch(noise, scale, **facts)



ENVIRONMENT = "environment"  # the findings' metric


def environment_findings(found: list[str] | tuple[str, ...], strict: bool = False) -> list[Finding]:
    """One finding naming what differs from the baseline's environment (`changes`; none when nothing does): a note,
    or with `strict` a regression."""
    if not found:
        return []
    if strict:
        return [Finding(ENVIRONMENT, "baseline", REGRESSED,
                        f"environment differs from the baseline's: {'; '.join(found)} (--bench-strict-env): run where "
                        "the baseline was measured, or save the baseline again here")]
    return [Finding(ENVIRONMENT, "baseline", PASSED,
                    f"environment differs from the baseline's: {'; '.join(found)}; speed and outputs may move with it")]

