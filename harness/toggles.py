"""The registry of optimization toggles and the variant matrices built from them.

A variant maps each toggle a case sweeps to one value. The reference variant holds every toggle
at its reference value (the first in `values`). Nothing here knows about pytest.
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass

# Fidelity classes, strictest first: what a variant owes the reference variant (the gate's rules: harness.gate.quality).
EXACT, ANSWER, TOLERANCE, BUDGETED = "exact", "answer-preserving", "tolerance", "budgeted"
FIDELITY_CLASSES = (EXACT, ANSWER, TOLERANCE, BUDGETED)
MATRICES = ("ablation", "leave-one-out", "full", "all-on")


@dataclass(frozen=True)
class Toggle:
    name: str
    values: tuple[str, ...]  # reference value first
    optimized: str  # the value "all on" uses
    fidelity: str  # EXACT / ANSWER / TOLERANCE / BUDGETED in fp32 with unquantized weights
    pipelines: frozenset[str]
    description: str
    # The class in any other dtype or with quantized weights, where kernels round differently from one shape to
    # another; None: the same class.
    low_precision: str | None = None
    budget: float = 0.0  # BUDGETED: the net loss of the quality metric allowed against the reference, in points

    def fidelity_in(self, full_precision: bool) -> str:
        return self.fidelity if full_precision or self.low_precision is None else self.low_precision

    @property
    def reference(self) -> str:
        return self.values[0]


_ALL = frozenset({"eval", "search", "detection", "scoring"})

TOGGLES: dict[str, Toggle] = {
    t.name: t
    for t in (
        Toggle("kv_cache", ("off", "on"), "on", EXACT, frozenset({"eval", "scoring", "search"}),
               "reuse past keys and values while decoding",
               low_precision=TOLERANCE),
        Toggle("early_stop", ("off", "on"), "on", ANSWER, frozenset({"eval", "scoring", "search"}),
               "stop at EOS / a completed answer"),
        Toggle("topk", ("full", "50", "30", "10"), "50", BUDGETED, frozenset({"detection", "scoring"}),
               "score over the top-k tokens instead of the full vocabulary", budget=0.01),
        Toggle("batching", ("1", "static8", "dynamic"), "dynamic", ANSWER, _ALL,
               "one item at a time, fixed batches of 8, or length-sorted buckets under a token budget",
               low_precision=TOLERANCE),
        Toggle("attention", ("eager", "sdpa", "flash_attention_2", "sdpa_fa"), "sdpa", TOLERANCE, _ALL,
               "attention implementation (sdpa_fa: PyTorch's FlashAttention kernel forced through sdpa)"),
        Toggle("quantization", ("none", "int8", "nf4"), "nf4", BUDGETED, _ALL, "bitsandbytes weight quantization",
               budget=0.02),
        Toggle("compile", ("off", "on"), "on", TOLERANCE, frozenset({"eval", "scoring", "search"}),
               "static KV cache + torch.compile"),
    )
}


class ToggleError(ValueError):
    """An unknown toggle or value, with the ones that exist."""


def get_toggle(name: str) -> Toggle:
    if name not in TOGGLES:
        known = "; ".join(f"{t.name} ({t.description})" for t in TOGGLES.values())
        raise ToggleError(f"unknown toggle {name!r}; the toggles are: {known}")
    return TOGGLES[name]


def check_variant(variant: dict[str, str]) -> None:
    for name, value in variant.items():
        toggle = get_toggle(name)
        if value not in toggle.values:
            raise ToggleError(f"toggle {name!r} has no value {value!r}; values: {', '.join(toggle.values)}")


def check_applicable(case: str, pipeline: str, toggles, field: str = "toggles") -> None:
    """Refuse a case that sweeps a toggle its pipeline does not read: each such variant would run the reference
    again under another name, and its speedup and fidelity would be noise passed off as a measurement.
    A pipeline the registry does not name (a user's own) is not checked: nothing here says what it reads."""
    if not any(pipeline in toggle.pipelines for toggle in TOGGLES.values()):
        return
    for name in toggles:
        readers = get_toggle(name).pipelines
        if pipeline not in readers:
            raise ToggleError(f"{case} sweeps {name}, which the {pipeline} pipeline does not read "
                              f"({name} is read by: {', '.join(sorted(readers))}): drop it from the case's {field}")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def unavailable_reason(variant: dict[str, str], device: str) -> str | None:
    """Why this variant cannot run here, saying what to install or change; None when it can."""
    quantization = variant.get("quantization", "none")
    if quantization != "none" and not _installed("bitsandbytes"):
        return f"quantization={quantization} needs bitsandbytes: pip install 'pytest-llm-harness[quant]'"
    if variant.get("attention") == "flash_attention_2":
        if device != "cuda":
            return "attention=flash_attention_2 needs a CUDA device (--bench-device cuda)"
        if not _installed("flash_attn"):
            return "attention=flash_attention_2 needs the flash_attn package"
    if variant.get("compile") == "on" and device != "cuda":
        return "compile=on (static cache + CUDA graphs) needs a CUDA device (--bench-device cuda)"
    if variant.get("compile") == "on" and variant.get("kv_cache", "on") == "off":
        return "compile=on compiles decoding for a static KV cache: it needs kv_cache=on"
    if variant.get("compile") == "on" and quantization != "none":
        return "compile=on with bitsandbytes quantization is not supported by torch.compile; drop one of them"
    return None


def value_of(variant: dict[str, str], name: str) -> str:
    """A toggle's value in a variant: the toggle's reference value where the variant does not sweep it."""
    return variant.get(name, get_toggle(name).reference)


def is_on(variant: dict[str, str], name: str) -> bool:
    return value_of(variant, name) == "on"


def reference_variant(toggles: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {name: get_toggle(name).reference for name in toggles}


def _all_on(toggles: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {name: (get_toggle(name).optimized if get_toggle(name).optimized in values else values[-1])
            for name, values in toggles.items()}


def variants(toggles: dict[str, tuple[str, ...]], matrix: str) -> list[dict[str, str]]:
    """The variants of a matrix, reference first, without repeats.

    `toggles` maps each swept toggle to the values to try (a subset of its registry values;
    the reference value is always included).
    """
    if matrix not in MATRICES:
        raise ToggleError(f"unknown matrix {matrix!r}; matrices: {', '.join(MATRICES)}")
    swept = {name: (get_toggle(name).reference, *(v for v in values if v != get_toggle(name).reference))
             for name, values in toggles.items()}
    for name, values in swept.items():
        for value in values:
            check_variant({name: value})
    reference = reference_variant(swept)
    all_on = _all_on(swept)
    if matrix == "ablation":
        chosen = [reference]
        chosen += [{**reference, name: value} for name, values in swept.items() for value in values[1:]]
        chosen.append(all_on)
    elif matrix == "leave-one-out":
        chosen = [reference, all_on] + [{**all_on, name: reference[name]} for name in swept]
    elif matrix == "all-on":  # a quick gate: what the optimizations add up to, against the reference
        chosen = [reference, all_on]
    else:
        chosen = [dict(zip(swept, combo)) for combo in itertools.product(*swept.values())]
    chosen += exact_singles(swept)
    unique: list[dict[str, str]] = []
    for variant in chosen:
        if variant not in unique:
            unique.append(variant)
    return unique


def exact_singles(swept: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
    """The reference with one exact toggle on, for each exact toggle swept: in every matrix, so that the exact rule
    (every output equal to the reference's) is checked on a pair that differs in that toggle alone. In a variant that
    also holds looser toggles, the loosest class judges it, and the exact contract would go unchecked."""
    reference = reference_variant(swept)
    return [{**reference, name: values[1]} for name, values in swept.items()
            if get_toggle(name).fidelity == EXACT and len(values) > 1]


def variant_label(variant: dict[str, str], reference: dict[str, str]) -> str:
    """'kv_cache=on,batching=dynamic', or 'reference' when nothing differs."""
    changed = [f"{name}={value}" for name, value in variant.items() if value != reference[name]]
    return ",".join(changed) or "reference"


def fidelity_of(variant: dict[str, str], reference: dict[str, str]) -> dict[str, str]:
    return {name: get_toggle(name).fidelity for name, value in variant.items() if value != reference[name]}
