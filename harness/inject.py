"""Regressions put in on purpose, to measure whether the gate catches them (`gate_study inject`).

`pytest --benchmark --bench-inject SPEC` (repeatable) turns one on for the run; without that option
nothing here acts. Each one breaks what a real change could break, where it would break it:

| spec | what it does |
| --- | --- |
| `slowdown=F` / `slowdown=F@CASE` | every optimized variant (or the case CASE) runs F longer: after each call of its pipeline, a busy wait of F times the call |
| `disable=TOGGLE` | the optimization is silently off: the pipeline gets TOGGLE's reference value while the case says otherwise |
| `early-stop-cut=S` | eval's early stop fires as soon as `\\boxed{` holds one digit, on a share S of the answers, cutting the number |
| `topk-flip` | scoring's top-k approximation shrinks every score 50-fold, so a DIFFERENT pair can read SAME |
| `quantize=nf4` | the session's model is loaded 4-bit where it should be unquantized |
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

from harness import toggles as toggle_registry

_TOPK_SHRINK = 0.02


class InjectionError(ValueError):
    """A --bench-inject spec that does not parse; the message lists the ones that do."""


@dataclass(frozen=True)
class Injections:
    slowdowns: dict[str, float] = field(default_factory=dict)  # case id (or "*": every optimized variant) -> F
    disabled: tuple[str, ...] = ()
    early_stop_cut: float = 0.0
    topk_flip: bool = False
    quantize: str | None = None

    @property
    def active(self) -> bool:
        return self != Injections()

    def slowdown_of(self, case_id: str, is_reference: bool) -> float:
        if case_id in self.slowdowns:
            return self.slowdowns[case_id]
        return 0.0 if is_reference else self.slowdowns.get("*", 0.0)

    def pipeline_variant(self, variant: dict[str, str]) -> dict[str, str]:
        """The variant the pipeline is handed: disabled toggles back at their reference value."""
        return {name: toggle_registry.get_toggle(name).reference if name in self.disabled else value
                for name, value in variant.items()}

    def quantization(self, asked: str) -> str:
        return self.quantize if self.quantize and asked == "none" else asked


_USAGE = "slowdown=F, slowdown=F@CASE_ID, disable=TOGGLE, early-stop-cut=S, topk-flip or quantize=nf4|int8"


def _fraction(spec: str, text: str, upper: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= upper:
        raise InjectionError(f"--bench-inject {spec}: {text!r} must be a number in (0, {upper:g}]")
    return value


def parse_injections(specs: list[str]) -> Injections:
    injections = Injections()
    for spec in specs:
        name, _, value = spec.partition("=")
        if name == "slowdown":
            fraction, _, case_id = value.partition("@")
            slowdowns = {**injections.slowdowns, (case_id or "*"): _fraction(spec, fraction, 10.0)}
            injections = replace(injections, slowdowns=slowdowns)
        elif name == "disable":
            try:
                toggle_registry.get_toggle(value)
            except toggle_registry.ToggleError as error:
                raise InjectionError(f"--bench-inject {spec}: {error}") from None
            injections = replace(injections, disabled=(*injections.disabled, value))
        elif name == "early-stop-cut":
            injections = replace(injections, early_stop_cut=_fraction(spec, value, 1.0))
        elif name == "topk-flip" and not value:
            injections = replace(injections, topk_flip=True)
        elif name == "quantize" and value in ("int8", "nf4"):
            injections = replace(injections, quantize=value)
        else:
            raise InjectionError(f"--bench-inject {spec}: not an injection; one of {_USAGE}")
    return injections


def slowed(run: Callable[[], object], fraction: float) -> Callable[[], object]:
    """`run`, followed by a busy wait of `fraction` of its own time: the CPU stays as busy as real work keeps it."""
    if fraction <= 0:
        return run

    def slow_run():
        start = time.perf_counter()
        result = run()
        until = time.perf_counter() + fraction * (time.perf_counter() - start)
        while time.perf_counter() < until:
            pass
        return result

    return slow_run


def _in_share(text: str, share: float) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@contextmanager
def _early_stop_cut(share: float) -> Iterator[None]:
    from harness.pipelines import eval as eval_pipeline

    honest = eval_pipeline.answer_complete

    def cutting(text: str, answer_type: str) -> bool:
        opened = text.rfind("\\boxed{")
        if opened >= 0 and _in_share(text[:opened], share):
            return text[opened + len("\\boxed{"):].strip()[:1].isdigit()
        return honest(text, answer_type)

    eval_pipeline.answer_complete = cutting
    try:
        yield
    finally:
        eval_pipeline.answer_complete = honest


@contextmanager
def _topk_flip() -> Iterator[None]:
    from harness.pipelines import scoring

    honest = scoring.score_rows

    def shrunk(reference, candidate, method, topk):
        rows = honest(reference, candidate, method, topk)
        if method == "topk_delta":
            rows = [replace(row, score=row.score * _TOPK_SHRINK) for row in rows]
        return rows

    scoring.score_rows = shrunk
    try:
        yield
    finally:
        scoring.score_rows = honest


@contextmanager
def patched_pipelines(injections: Injections) -> Iterator[None]:
    """The injections that act inside a pipeline, for the time of one case."""
    with ExitStack() as stack:
        if injections.early_stop_cut:
            stack.enter_context(_early_stop_cut(injections.early_stop_cut))
        if injections.topk_flip:
            stack.enter_context(_topk_flip())
        yield


__all__ = ["InjectionError", "Injections", "parse_injections", "patched_pipelines", "slowed"]
