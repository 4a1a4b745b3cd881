"""pytest-xdist workers and GPUs: which GPUs a worker gets, pinning them, and which cases share a worker.

One worker per GPU (or per `--bench-gpus-per-worker` GPUs, for a model split by a device map). A worker
sees only its own GPUs: `CUDA_VISIBLE_DEVICES` is narrowed to them before CUDA initializes, so that
device 0 inside the worker is its GPU and nothing else can allocate on the others. Workers are never
doubled up on a GPU: two workers timing their kernels on one GPU slow each other down, and the figures
would say nothing of either, so more workers than GPUs is an error, not a round-robin.

Pure functions where they can be; pytest and torch stay out of this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
WORKER_ENV = "PYTEST_XDIST_WORKER"  # set by pytest-xdist in each worker before pytest starts there
# xdist's distribution modes that keep every variant of a case function on one worker, so that the case's
# reference is measured once, where its variants are judged against it: loadgroup by the xdist_group mark
# each bench item gets (one group per case function), loadscope by module, loadfile by file.
GROUPING_MODES = ("loadgroup", "loadscope", "loadfile")


class WorkerGpuError(ValueError):
    """Workers and GPUs that do not fit together, with what to change."""


def worker_index(worker_id: str) -> int:
    """The index of an xdist worker id: 'gw3' -> 3."""
    match = re.fullmatch(r"gw(\d+)", worker_id.strip())
    if match is None:
        raise WorkerGpuError(f"{WORKER_ENV}={worker_id!r} is not an xdist worker id such as gw0")
    return int(match.group(1))


def parse_visible_devices(value: str) -> list[str]:
    """The entries of a set `CUDA_VISIBLE_DEVICES`, as CUDA reads them: indices or UUIDs (GPU-..., MIG-...),
    comma-separated; an empty value hides every GPU, and CUDA stops at the first empty or negative entry."""
    entries = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def visible_gpus(env: Mapping[str, str], count_gpus: Callable[[], int | None]) -> list[str] | None:
    """The GPUs this process may use, as entries for `CUDA_VISIBLE_DEVICES`. Unset: every GPU the driver
    counts (`count_gpus`, asked without initializing CUDA); None when they cannot be counted."""
    if VISIBLE_DEVICES in env:
        return parse_visible_devices(env[VISIBLE_DEVICES])
    count = count_gpus()
    return None if count is None else [str(index) for index in range(count)]


def worker_gpus(visible: list[str], index: int, workers: int, per_worker: int = 1) -> list[str]:
    """The GPUs of worker `index` of `workers`: the `per_worker` GPUs from position index * per_worker."""
    if per_worker < 1:
        raise WorkerGpuError(f"--bench-gpus-per-worker must be at least 1, got {per_worker}")
    needed = workers * per_worker
    if needed > len(visible):
        shown = ",".join(visible) if visible else "none"
        fits = len(visible) // per_worker
        fix = (f"run -n {fits} (or -n auto): workers sharing a GPU time each other's kernels" if fits else
               "run on CPU with --bench-device cpu, or make the GPUs visible")
        raise WorkerGpuError(f"{workers} xdist workers x {per_worker} GPU(s) each need {needed} GPUs, but "
                             f"{len(visible)} are visible ({VISIBLE_DEVICES}: {shown}); {fix}")
    if not 0 <= index < workers:
        raise WorkerGpuError(f"xdist worker index {index} is outside 0..{workers - 1}")
    return visible[index * per_worker:(index + 1) * per_worker]


def pin(env: MutableMapping[str, str], gpus: list[str]) -> None:
    """Narrow the process's GPUs to `gpus`. Effective only before CUDA initializes in this process."""
    env[VISIBLE_DEVICES] = ",".join(gpus)


def nvml_gpu_count() -> int | None:
    """How many GPUs the driver has, from NVML, which (unlike a CUDA call) leaves CUDA uninitialized, so the
    worker can still be pinned afterwards. None where NVML does not answer."""
    try:
        import pynvml  # shipped with torch's CUDA builds as nvidia-ml-py

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:  # no NVML (no driver, a CPU build): the caller says what to set instead
        return None


def auto_worker_count(visible: list[str] | None, per_worker: int) -> int:
    """`-n auto` for bench cases: one worker per `per_worker` GPUs, at least one. With no GPU to count, one
    worker: bench cases side by side on one CPU time each other."""
    if not visible:
        return 1
    return max(1, len(visible) // per_worker)


def group_name(function: str, params: Mapping[str, object]) -> str:
    """The xdist group of a bench item: its case function and parameters other than the variant. Every variant
    of a case runs on one worker, so its reference is measured once there and judges them all; cases of
    other functions go elsewhere (grouping by model would put every case on one worker: a session has one)."""
    shown = ",".join(f"{name}={value}" for name, value in sorted(params.items()) if name != "variant")
    name = function + (f"({shown})" if shown else "")
    # xdist finds the group after the last '@' of a node id, and only past its last ']': neither may be in the name.
    return re.sub(r"[\[\]@]", "_", name)


# --- where this process stands (duck-typed on pytest's config: xdist is optional) ---------------------------


def is_worker(config) -> bool:
    """An xdist worker: it runs cases and sends their results to the controller."""
    return hasattr(config, "workerinput")


def is_controller(config) -> bool:
    """The xdist controller: it hands cases to workers, runs none, and merges their results."""
    return not is_worker(config) and config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def worker_total(config) -> int:
    """How many processes run cases: xdist's workers, or this one alone."""
    if is_worker(config):
        return int(config.workerinput["workercount"])
    if is_controller(config):
        # --tx specs may carry a count ("2*popen"), as -n N writes N plain "popen" specs.
        return sum(int(spec.split("*", 1)[0]) if "*" in spec else 1 for spec in config.getoption("tx"))
    return 1
