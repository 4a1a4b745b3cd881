"""Models larger than one GPU: accelerate's device map with a memory limit per GPU, and the layout it chose.

`--bench-device-map auto --bench-max-memory 0=70GiB,1=70GiB` loads through `from_pretrained(device_map=...,
max_memory=...)`: accelerate places whole decoder layers on the GPUs and moves activations between them.
A split run is another machine as far as timings go, so its device class says how many GPUs it spans
(`cuda-h200x2`) and its baselines live apart from one-GPU runs. Offloading to CPU or disk is refused: its
timings measure the bus, not the optimization.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass

import torch

# The strategies from_pretrained takes as a string (transformers' integrations.accelerate._get_device_map).
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"\d+(\.\d+)?\s*(GiB|MiB|KiB|GB|MB|KB)", re.IGNORECASE)
OFFLOADED = ("cpu", "disk")


class PlacementError(ValueError):
    """A device map setting that cannot be used here, with what to change."""


@dataclass(frozen=True)
class Placement:
    """How one model is spread over GPUs; hashable, since it is part of the model cache's key."""

    device_map: str  # one of STRATEGIES
    max_memory: tuple[tuple[int, str], ...] = ()  # (GPU index, size such as "70GiB"); empty: all visible GPUs, no limit

    def max_memory_dict(self) -> dict[int, str] | None:
        """The `max_memory` argument of from_pretrained; None leaves accelerate to use every visible GPU."""
        return dict(self.max_memory) if self.max_memory else None

    def gpu_count(self, visible: int) -> int:
        """How many GPUs the map may use: those given a memory limit, or every GPU visible here."""
        return len(self.max_memory) if self.max_memory else visible

    def gpu_indices(self, visible: int) -> tuple[int, ...]:
        """The GPUs the map may use, by index among the visible ones."""
        return tuple(gpu for gpu, _ in self.max_memory) if self.max_memory else tuple(range(visible))

    def to_dict(self, visible: int) -> dict:
        """The fingerprint's record of the setting (the layout each model got is in its cases' metadata)."""
        return {"device_map": self.device_map, "max_memory": {str(gpu): size for gpu, size in self.max_memory},
                "gpus": self.gpu_count(visible)}


def parse_max_memory(text: str) -> tuple[tuple[int, str], ...]:
    """`0=70GiB,1=70GiB` -> ((0, "70GiB"), (1, "70GiB")). GPUs by index among the visible ones, each once."""
    pairs: list[tuple[int, str]] = []
    for part in (p.strip() for p in text.split(",")):
        gpu, sep, size = (s.strip() for s in part.partition("="))
        if not sep or not gpu.isdigit() or not _SIZE.fullmatch(size):
            hint = " (CPU offload is not benchmarked: give GPUs only)" if gpu.lower() in OFFLOADED else ""
            raise PlacementError(f"--bench-max-memory {text}: {part!r} is not GPU=SIZE{hint}; write e.g. "
                                 "0=70GiB,1=70GiB (GPU index among the visible ones, size in GiB, MiB, GB or MB)")
        if any(index == int(gpu) for index, _ in pairs):
            raise PlacementError(f"--bench-max-memory {text}: GPU {gpu} is given twice")
        pairs.append((int(gpu), size.replace(" ", "")))
    return tuple(pairs)


def placement_from_options(device_map: str | None, max_memory: str | None) -> Placement | None:
    """The session's placement from its options; None without --bench-device-map (one device, as before)."""
    if device_map is None:
        if max_memory:
            raise PlacementError("--bench-max-memory limits what a device map puts on each GPU: add "
                                 "--bench-device-map auto")
        return None
    if device_map not in STRATEGIES:
        raise PlacementError(f"--bench-device-map {device_map}: give one of {', '.join(STRATEGIES)}")
    return Placement(device_map, parse_max_memory(max_memory) if max_memory else ())


def check_placement(placement: Placement, device: str, visible: int, accelerate_installed: bool | None = None) -> None:
    """Refuse a placement that cannot run here: not on CUDA, without accelerate, or naming unseen GPUs."""
    if device != "cuda":
        raise PlacementError(f"--bench-device-map spreads a model over GPUs, but this run is on {device}; drop "
                             "--bench-device-map, or run with --bench-device cuda on a machine with GPUs")
    if accelerate_installed is None:
        accelerate_installed = importlib.util.find_spec("accelerate") is not None
    if not accelerate_installed:
        raise PlacementError("--bench-device-map needs accelerate, which places the layers: pip install 'accelerate>=1.0'")
    unseen = sorted(gpu for gpu, _ in placement.max_memory if gpu >= visible)
    if unseen:
        raise PlacementError(f"--bench-max-memory names GPU {', '.join(map(str, unseen))}, but {visible} GPU(s) are "
                             f"visible here (0..{visible - 1}; under xdist, the worker's share: "
                             "--bench-gpus-per-worker)")


def layout_of(model) -> dict[str, int] | None:
    """Modules per device of a model loaded with a device map ({"cuda:0": 17, "cuda:1": 16}).

    transformers 5.17 leaves `hf_device_map` unset when the map puts the whole model on one GPU: the layout
    is then counted from where the parameter tensors are."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        counts = Counter(_device_name(device) for device in device_map.values())
    elif isinstance(model, torch.nn.Module):
        counts = Counter(str(parameter.device) for parameter in model.parameters())
    else:
        return None
    return dict(sorted(counts.items())) or None


def _device_name(device) -> str:
    if isinstance(device, int):
        return f"cuda:{device}"
    return str(device)


def offloaded_modules(layout: dict[str, int]) -> int:
    """How many modules the map put off the GPUs (CPU or disk)."""
    return sum(count for device, count in layout.items() if device in OFFLOADED)
