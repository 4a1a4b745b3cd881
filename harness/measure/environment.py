"""What differs between the environment a baseline was measured in and this run's, and whether it is the same machine.

The fingerprint (models.fingerprint) records the versions and the hardware of every measurement. A change of torch,
transformers, bitsandbytes, CUDA or the GPU driver can move speed and even outputs; a change of CPU model or generation
moves speedups by itself (bitsandbytes' nf4 variants lost 24-47% of theirs from one CPU model to another). Each change
is named in the verdict and every report; with --bench-strict-env it fails the case.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness.measure.machine_speed import FINGERPRINT_KEY as CALIBRATION_KEY
from harness.measure.machine_speed import calibration_seconds
from harness.models.placement import Placement

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


def changes(run: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """'torch 2.13.0 -> 3.0', one per compared key whose value differs; a key either side lacks is not compared."""
    found = []
    for key, words in COMPARED.items():
        before, now = saved.get(key), run.get(key)
        if before is not None and now is not None and before != now:
            found.append(f"{words} {before} -> {now}")
    return found


def same_machine(run: dict[str, Any], saved: dict[str, Any]) -> bool:
    """Whether a CPU run's speedups can be held to a baseline's factor: the same CPU model and generation, where both
    know them. The calibration workload does not decide it: the 2-core VM ran it in 10.2-19.3 ms from run to run, and
    speedups moved less between those speeds than the factor allows; it scales absolute times instead. A GPU run's
    device class already names its GPU."""
    if run.get("device_class", "cpu") != "cpu":
        return True
    return not any(run.get(key) and saved.get(key) and run[key] != saved[key] for key in ("cpu", "cpu_arch"))


# --- the fingerprint ---------------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gpu_driver() -> str | None:
    """The NVIDIA driver version, from NVML (through torch) where it answers."""
    try:
        import pynvml  # shipped with torch's CUDA builds as nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: the fingerprint says so with None
        return None


def device_class(device: str, gpus: int = 1) -> str:
    """'cpu' or 'cuda-<gpu slug>', with 'x<N>' for a model split over N GPUs ('cuda-h200x2'): absolute times
    compare only within one class, and a split run times the links between GPUs as well."""
    if device != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(0).lower().replace("nvidia", "")
    slug = "cuda-" + re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"{slug}x{gpus}" if gpus > 1 else slug


@functools.cache  # read once: the fingerprint is taken again for every case
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo; empty where there is none (not Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block ends here
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"): speedups are only comparable on one."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_arch() -> str:
    """The CPU's generation and widest vector unit ("family 6 model 207, amx"): a VM may show one model name for
    several generations, whose kernels (bitsandbytes', oneDNN's) do not speed up alike; "" where unknown."""
    info = _cpuinfo()
    if "cpu family" not in info or "model" not in info:
        return ""
    flags = set(info.get("flags", "").split())
    widest = next((name for flag, name in (("amx_tile", "amx"), ("avx512f", "avx512"), ("avx2", "avx2")) if flag in flags), "")
    return f"family {info['cpu family']} model {info['model']}" + (f", {widest}" if widest else "")


def fingerprint(device: str, placement: Placement | None = None) -> dict:
    """The environment a measurement was taken in: versions and hardware, no paths or secrets; with a device
    map, its setting and the GPUs it spans (the device class says how many)."""
    visible = torch.cuda.device_count() if device == "cuda" else 0
    gpus = placement.gpu_count(visible) if placement is not None else 1
    facts = {
        "device_class": device_class(device, gpus),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_arch": cpu_arch(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # torch sets its own pool; OpenMP libraries beside it (bitsandbytes' CPU kernels) take this, or every core
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }
    if device == "cpu":
        facts[CALIBRATION_KEY] = calibration_seconds()
    if device == "cuda":
        facts.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, gpu_count=torch.cuda.device_count(),
                     driver=_gpu_driver())
        if placement is not None:
            facts["placement"] = placement.to_dict(visible)
    return facts

