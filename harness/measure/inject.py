"""Regressions put in on purpose, to measure whether the gate catches them (`--bench-inject`).

`pytest --benchmark --bench-inject SPEC` (repeatable) turns one on for the run; without that option
nothing here acts. Each one breaks what a real change could break, where it would break it:

| spec | what it does |
| --- | --- |
| `slowdown=F` / `slowdown=F@CASE` | every optimized variant (or the case CASE) runs F longer: after each call of its pipeline, a busy wait of F times the call (its CPU time on a CPU) |
| `disable=TOGGLE` | the optimization is silently off: the pipeline gets TOGGLE's reference value while the case says otherwise |
| `early-stop-cut=S` | eval's early stop fires as soon as `\\boxed{` holds one digit, on a share S of the answers, cutting the number |
| `early-stop-cut=@ITEM_ID` | the same cut on the answer of item ITEM_ID alone (where it writes `\\boxed{` and a digit) |
| `stale-cache` | every cached decode step (DynamicCache: generate with use_cache) reads the cache one write stale: it attends to its own new key and value, but the newest cached slot still holds the position before it; nothing changes without a cache |
| `search-worse-rollout` | the search returns the runner-up: the best-rewarded of the rollouts that scored below the best it evaluated (an item whose rollouts all score alike keeps its answer) |
| `topk-flip` | scoring's top-k approximation shrinks every score 50-fold, so a DIFFERENT pair can read SAME |
| `topk-shift=F` | scoring's top-k approximation multiplies every score by 1+F: a top-k that shifts scores while the decisions may stay |
| `teacher-forcing-shift` | scoring's teacher forcing reads one position off, on both sides of a pair: each continuation token is scored against the next position's distribution (`logits[:, -K:]` for `logits[:, -K-1:-1]`, K - 1 positions), so scores move while the decisions may stay |
| `quantize=nf4` | the session's model is loaded 4-bit where it should be unquantized |
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from unittest.mock import patch

from harness import toggles as toggle_registry

_TOPK_SHRINK = 0.02


class InjectionError(ValueError):
    """A --bench-inject spec that does not parse; the message lists the ones that do."""


@dataclass(frozen=True)
class Injections:
    slowdowns: dict[str, float] = field(default_factory=dict)  # case id (or "*": every optimized variant) -> F
    disabled: tuple[str, ...] = ()
    early_stop_cut: float = 0.0
    early_stop_cut_item: str | None = None
    stale_cache: bool = False
    search_worse_rollout: bool = False
    topk_flip: bool = False
    topk_shift: float = 0.0
    teacher_forcing_shift: bool = False
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


_USAGE = ("slowdown=F, slowdown=F@CASE_ID, disable=TOGGLE, early-stop-cut=S, early-stop-cut=@ITEM_ID, stale-cache, "
          "search-worse-rollout, topk-flip, topk-shift=F, teacher-forcing-shift or quantize=nf4|int8")


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
        elif name == "early-stop-cut" and value.startswith("@") and len(value) > 1:
            injections = replace(injections, early_stop_cut_item=value[1:])
        elif name == "early-stop-cut":
            injections = replace(injections, early_stop_cut=_fraction(spec, value, 1.0))
        elif name == "stale-cache" and not value:
            injections = replace(injections, stale_cache=True)
        elif name == "search-worse-rollout" and not value:
            injections = replace(injections, search_worse_rollout=True)
        elif name == "topk-flip" and not value:
            injections = replace(injections, topk_flip=True)
        elif name == "topk-shift":
            injections = replace(injections, topk_shift=_fraction(spec, value, 10.0))
        elif name == "teacher-forcing-shift" and not value:
            injections = replace(injections, teacher_forcing_shift=True)
        elif name == "quantize" and value in ("int8", "nf4"):
            injections = replace(injections, quantize=value)
        else:
            raise InjectionError(f"--bench-inject {spec}: not an injection; one of {_USAGE}")
    return injections


def slowed(run: Callable[[], object], fraction: float, cpu_time: bool = False) -> Callable[[], object]:
    """`run`, followed by a busy wait of `fraction` of its own time: the CPU stays as busy as real work keeps it.

    `cpu_time`: the wait spins until the process's CPU time has grown by `fraction` of the call's, so that the
    slowdown is `fraction` more work whatever the machine's load, as a real regression would be (on a GPU the
    call's wall time is its work's, and the wait is timed by wall clock)."""
    if fraction <= 0:
        return run
    clock = time.process_time if cpu_time else time.perf_counter

    def slow_run():
        start = clock()
        result = run()
        until = clock() + fraction * (clock() - start)
        while clock() < until:
            pass
        return result

    return slow_run


def _in_share(text: str, share: float) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class _Marked(str):
    """The answer type of the item that early-stop-cut=@ITEM_ID cuts: equal to the plain type everywhere, told
    apart only by the cutting stop rule (which sees a row's text and answer type, not its item)."""


@contextmanager
def _early_stop_cut(share: float, item_id: str | None) -> Iterator[None]:
    from harness.pipelines import decoding

    honest, honest_batch = decoding.answer_complete, decoding._generate_batch

    def cutting(text: str, answer_type: str) -> bool:
        opened = text.rfind("\\boxed{")
        if opened >= 0 and (isinstance(answer_type, _Marked) or _in_share(text[:opened], share)):
            return text[opened + len("\\boxed{"):].strip()[:1].isdigit()
        return honest(text, answer_type)

    def marking(model, tokenizer, batch, settings):
        # the batch's stop rule gets the marked type; the pipeline scores the texts with its own items
        batch = [replace(item, answer_type=_Marked(item.answer_type)) if item.id == item_id else item for item in batch]
        return honest_batch(model, tokenizer, batch, settings)

    # The stop rule (decoding.RowTracker) and the batch loop read these module globals when they run.
    with patch.object(decoding, "answer_complete", cutting), patch.object(decoding, "_generate_batch", marking):
        yield


def _stale_newest(states):
    """A decode step's keys or values, its own last, with the newest cached slot before it still holding the
    position before that: what the step reads when the previous step's write has not landed yet."""
    import torch

    return torch.cat([states[..., :-2, :], states[..., -3:-2, :], states[..., -1:, :]], dim=-2)


@contextmanager
def _stale_cache() -> Iterator[None]:
    from transformers.cache_utils import DynamicLayer

    honest = DynamicLayer.update

    def stale(self, key_states, value_states, *args, **kwargs):
        decoding = self.get_seq_length() > 1 and key_states.shape[-2] == 1  # a decode step, not the prefill
        keys, values = honest(self, key_states, value_states, *args, **kwargs)
        # The cache itself stays right (each write lands a step late); only what the step reads is stale.
        return (_stale_newest(keys), _stale_newest(values)) if decoding else (keys, values)

    with patch.object(DynamicLayer, "update", stale):
        yield


@contextmanager
def _search_worse_rollout() -> Iterator[None]:
    from harness.pipelines import search

    honest = search.search_item

    def worse(model, tokenizer, item, settings, reward=search.answer_reward):
        rewarded: list[tuple[float, str]] = []

        def recorded(item, text):
            rewarded.append((reward(item, text), text))
            return rewarded[-1][0]

        result = honest(model, tokenizer, item, settings, recorded)
        lower = [pair for pair in rewarded if pair[0] < result.reward]
        if not lower:
            return result
        value, text = max(lower, key=lambda pair: pair[0])  # the first of equal rewards, as the search keeps them
        return replace(result, text=text, reward=value)

    with patch.object(search, "search_item", worse):
        yield


@contextmanager
def _topk_scaled(factor: float) -> Iterator[None]:
    from harness.pipelines import scoring

    honest = scoring.score_rows

    def scaled(reference, candidate, method, topk):
        rows = honest(reference, candidate, method, topk)
        if method == "topk_delta":
            rows = [replace(row, score=row.score * factor) for row in rows]
        return rows

    with patch.object(scoring, "score_rows", scaled):
        yield


@contextmanager
def _teacher_forcing_shift() -> Iterator[None]:
    from harness.pipelines import scoring

    honest = scoring.teacher_force

    def shifted(model, tokenizer, prompts, conts):
        forced = honest(model, tokenizer, prompts, conts)
        # target t against the distribution that predicts t + 1; the last target has none beside it
        return scoring.ForcedBatch(forced.log_probs[:, 1:], forced.targets[:, :-1])

    with patch.object(scoring, "teacher_force", shifted):
        yield


@contextmanager
def patched_pipelines(injections: Injections) -> Iterator[None]:
    """The injections that act inside a pipeline, for the time of one case."""
    with ExitStack() as stack:
        if injections.early_stop_cut or injections.early_stop_cut_item:
            stack.enter_context(_early_stop_cut(injections.early_stop_cut, injections.early_stop_cut_item))
        if injections.stale_cache:
            stack.enter_context(_stale_cache())
        if injections.search_worse_rollout:
            stack.enter_context(_search_worse_rollout())
        if injections.topk_flip:
            stack.enter_context(_topk_scaled(_TOPK_SHRINK))
        if injections.topk_shift:
            stack.enter_context(_topk_scaled(1.0 + injections.topk_shift))
        if injections.teacher_forcing_shift:
            stack.enter_context(_teacher_forcing_shift())
        yield


__all__ = ["InjectionError", "Injections", "parse_injections", "patched_pipelines", "slowed"]
