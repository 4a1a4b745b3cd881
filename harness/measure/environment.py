"""What differs between the environment a baseline was measured in and this run's, and whether it is the same machine.

The fingerprint (models.fingerprint) records the versions and the hardware of every measurement. A change of torch,
transformers, bitsandbytes, CUDA or the GPU driver can move speed and even outputs; a change of CPU model or generation
moves speedups by itself (bitsandbytes' nf4 variants lost 24-47% of theirs from one CPU model to another). Each change
is named in the verdict and every report; with --bench-strict-env it fails the case.
"""

from __future__ import annotations

from typing import Any

from harness.gate.policy import PASSED, REGRESSED, Finding

# The fingerprint keys compared, with the words a message uses for them.
COMPARED = {
    "torch": "torch",
    "transformers": "transformers",
    "bitsandbytes": "bitsandbytes",
    "cuda": "CUDA",
    "driver": "GPU driver",
    "gpu": "GPU",
    "cpu": "CPU",
    "cpu_arch": "CPU generation",
    "checkpoint": "checkpoint",
}
ENVIRONMENT = "environment"  # the findings' metric


def changes(run: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """'torch 2.13.0 -> 3.0', one per compared key whose value differs; a key either side lacks is not compared."""
    found = []
    for key, words in COMPARED.items():
        before, now = saved.get(key), run.get(key)
        if before is not None and now is not None and before != now:
            found.append(f"{words} {before} -> {now}")
    return found


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


def same_machine(run: dict[str, Any], saved: dict[str, Any]) -> bool:
    """Whether a CPU run's speedups can be held to a baseline's factor: the same CPU model and generation, where both
    know them. The calibration workload does not decide it: the 2-core VM ran it in 10.2-19.3 ms from run to run, and
    speedups moved less between those speeds than the factor allows; it scales absolute times instead. A GPU run's
    device class already names its GPU."""
    if run.get("device_class", "cpu") != "cpu":
        return True
    return not any(run.get(key) and saved.get(key) and run[key] != saved[key] for key in ("cpu", "cpu_arch"))
