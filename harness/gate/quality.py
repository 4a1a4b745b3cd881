"""The quality rules: on one device class, greedy inference is deterministic, so per-item outputs are evidence.

No I/O here: records in, findings out. `harness.gate.verdict` assembles them with the speed and counter rules.

Against the baseline (the same variant, same device class):

- outputs: every item's output and per-item score equal the baseline's, and per-item values (scoring's pair
  scores) lie within the baseline tolerance. One changed item fails and is named. A/A runs, two CPU generations
  and two GPU models reproduced every output of the embedded model (docs/verdict.md); random weights turn on any
  rounding, so for speed profiles this is reported, not judged.
- the quality metric is reported; it never reads "improved": with the same outputs it cannot move, and changed
  outputs are a regression until accepted.

Against the session reference, by the fidelity class of the toggles that differ (the loosest judges):

- exact (kv_cache in fp32): every output identical;
- answer-preserving (early_stop; batching in fp32): every extracted answer identical;
- tolerance (attention kernels, compile; exact and batching outside fp32): at least `min_agreement` of the
  outputs identical, and a net loss within `quality_budget`;
- budgeted (quantization, topk): a net loss within the toggle's budget, counted on the fixed items (MLPerf's
  "99% of the reference" on a fixed data set, not a significance test: the outputs have no sampling noise, so
  a loss of one item more than the budget fails with certainty, and the smallest catchable loss is stated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness import toggles as toggle_registry
from harness.gate.policy import EPS, GatePolicy
from harness.records import PASSED, REGRESSED, CaseRecord, Finding, PipelineOutput
from harness.toggles import value_of

_FP32_NAMES = frozenset({"float32", "fp32", "torch.float32"})
_NAMED = 5  # items named in a message; the rest are counted


# --- formatting ------------------------------------------------------------------------------------


def fmt_value(value: float) -> str:
    if 0.0 <= value <= 1.0:
        text = f"{value:.3f}"
        return text[:-1] if text.endswith("0") else text
    return f"{value:.4g}"


def _points(value: float, unit_interval: bool) -> str:
    return f"{100 * value:.1f} pts" if unit_interval else f"{value:.4g}"


def _clip(text: str, width: int = 40) -> str:
    text = text.replace("\n", "\\n")
    return repr(text if len(text) <= width else "..." + text[-width:])


def _named(changes: list[str]) -> str:
    more = f"; and {len(changes) - _NAMED} more" if len(changes) > _NAMED else ""
    return "; ".join(changes[:_NAMED]) + more


# --- classes ---------------------------------------------------------------------------------------


def differing_toggles(record: CaseRecord) -> list[str]:
    names = list(record.variant) + [t for t in record.reference_variant if t not in record.variant]
    return [t for t in names if record.variant.get(t) != record.reference_variant.get(t)]


def quantized(record: CaseRecord) -> str | None:
    """The quantization of the weights a record ran, or None when they were not quantized."""
    weights = record.metadata.get("weights")
    loaded = weights.get("quantization", "none") if isinstance(weights, dict) else "none"
    asked = value_of(record.variant, "quantization")
    return next((q for q in (loaded, asked) if q != "none"), None)


def full_precision(record: CaseRecord) -> bool:
    return str(record.metadata.get("dtype")) in _FP32_NAMES and not quantized(record)


def _class_of(record: CaseRecord, toggle: str) -> str:
    if toggle not in record.fidelity:
        raise ValueError(f"{record.case_id}: toggle {toggle!r} differs from the reference but has no fidelity class")
    stored = record.fidelity[toggle]
    if stored not in toggle_registry.FIDELITY_CLASSES:
        raise ValueError(f"{record.case_id}: toggle {toggle!r} has unknown fidelity class {stored!r}")
    if full_precision(record):
        return stored
    registered = toggle_registry.TOGGLES.get(toggle)
    if registered is not None and registered.fidelity == stored:
        return registered.fidelity_in(False)
    return toggle_registry.TOLERANCE if stored == toggle_registry.EXACT else stored


def fidelity_class(record: CaseRecord) -> str | None:
    """The contract a variant owes the reference: the loosest class among the toggles that differ (None for the
    reference itself). Outside fp32 with unquantized weights, a toggle takes its registered low-precision class."""
    if record.is_reference:
        return None
    classes = [_class_of(record, toggle) for toggle in differing_toggles(record)]
    return max(classes, key=toggle_registry.FIDELITY_CLASSES.index)


def budget_of(record: CaseRecord, policy: GatePolicy) -> float:
    """The net loss a variant may show against the reference: its budgeted toggles' largest budget, or the
    tolerance budget."""
    budgets = [toggle_registry.TOGGLES[t].budget for t in differing_toggles(record)
               if t in toggle_registry.TOGGLES and _class_of(record, t) == toggle_registry.BUDGETED]
    return max(budgets, default=policy.quality_budget)


# --- per-item pairing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paired:
    """The items two outputs share, by id, in the current output's order."""

    ids: list[str]
    current: PipelineOutput
    compared: PipelineOutput

    @classmethod
    def of(cls, current: PipelineOutput, compared: PipelineOutput) -> Paired:
        known = set(compared.item_ids)
        return cls([i for i in current.item_ids if i in known], current, compared)

    def comparable(self) -> bool:
        return bool(self.ids) and 2 * len(self.ids) >= len(self.current.item_ids)

    def column(self, side: PipelineOutput, name: str) -> dict[str, object]:
        values = getattr(side, name)
        return dict(zip(side.item_ids, values)) if values else {}

    def changed(self, name: str, equal=lambda a, b: a == b) -> list[tuple[str, object, object]]:
        """(id, before, after) for each shared item whose `name` column differs; [] when a side lacks it."""
        after, before = self.column(self.current, name), self.column(self.compared, name)
        if not after or not before:
            return []
        return [(i, before[i], after[i]) for i in self.ids if not equal(before[i], after[i])]


def _not_comparable(metric: str, against: str, paired: Paired) -> Finding:
    fix = "re-save the baseline" if against == "baseline" else "run the reference on the same items"
    return Finding(metric, against, REGRESSED, f"{metric} not comparable with the {against}: only {len(paired.ids)}/"
                                               f"{len(paired.current.item_ids)} items shared, the item set changed ({fix})")


def answers(output: PipelineOutput) -> str:
    """The column that holds a pipeline's answers: the extracted ones where it extracts them, else the outputs."""
    return "item_answers" if output.item_answers else "item_outputs"


# --- the budget rule -------------------------------------------------------------------------------


def _is_binary(scores: Sequence[float]) -> bool:
    return all(s in (0.0, 1.0) for s in scores)


def allowed_items(budget: float, items: int) -> int:
    """How many items a budget lets a 0/1 metric lose, net, on `items` items; one more is the smallest loss caught."""
    return math.floor(budget * items + EPS)


def smallest_catchable_loss(budget: float, items: int) -> float:
    """The smallest net loss, as a share of the items, that a budget of `budget` fails on `items` items."""
    return (allowed_items(budget, items) + 1) / items


def budget_finding(metric: str, against: str, current: CaseRecord, compared: CaseRecord, budget: float) -> Finding:
    """The net loss of the quality metric on the shared items must stay within `budget` (points of the metric).

    For 0/1 item scores the loss is counted in items: lost minus gained, against floor(budget x items). For other
    metrics (AUC, reward) the metric's own drop is held against the budget."""
    paired = Paired.of(current.output, compared.output)
    if not paired.comparable():
        return _not_comparable(metric, against, paired)
    after, before = paired.column(current.output, "item_scores"), paired.column(compared.output, "item_scores")
    moved = f"{metric} {fmt_value(compared.quality)} -> {fmt_value(current.quality)}"
    unit = 0.0 <= current.quality <= 1.0 and 0.0 <= compared.quality <= 1.0
    if _is_binary(list(after.values())) and _is_binary(list(before.values())):
        lost = [i for i in paired.ids if before[i] == 1.0 and after[i] == 0.0]
        gained = [i for i in paired.ids if before[i] == 0.0 and after[i] == 1.0]
        n, allowed = len(paired.ids), allowed_items(budget, len(paired.ids))
        net = len(lost) - len(gained)
        message = (f"{moved} ({len(lost)} lost, {len(gained)} gained: net {net} of {n} items; budget "
                   f"{_points(budget, True)} = {allowed} item(s), so {allowed + 1} lost fail)")
        if lost:
            message += f"; lost: {', '.join(lost[:_NAMED])}" + (" ..." if len(lost) > _NAMED else "")
        return Finding(metric, against, REGRESSED if net > allowed else PASSED, message)
    drop = compared.quality - current.quality
    message = f"{moved} ({'-' if drop > 0 else '+'}{_points(abs(drop), unit)}; budget {_points(budget, unit)})"
    return Finding(metric, against, REGRESSED if drop > budget + EPS else PASSED, message)


# --- against the baseline --------------------------------------------------------------------------


def outputs_changed(current: CaseRecord, baseline: CaseRecord) -> list[str]:
    """The shared items whose output or per-item score differs from the baseline's, described."""
    paired = Paired.of(current.output, baseline.output)
    changes = [f"{i}: {_clip(str(a))} -> {_clip(str(b))}" for i, a, b in paired.changed("item_outputs")]
    seen = {c.split(":", 1)[0] for c in changes}
    changes += [f"{i}: score {a:g} -> {b:g}" for i, a, b in
                paired.changed("item_scores", lambda a, b: abs(a - b) <= EPS) if i not in seen]
    return changes


def baseline_findings(current: CaseRecord, baseline: CaseRecord, policy: GatePolicy,
                      changes: list[str] | None = None) -> list[Finding]:
    """The same variant must reproduce its baseline: every output, every per-item score, every value.
    `changes` is `outputs_changed(current, baseline)` where the caller has it already."""
    paired = Paired.of(current.output, baseline.output)
    if not paired.comparable():
        return [_not_comparable("outputs", "baseline", paired)]
    changes = outputs_changed(current, baseline) if changes is None else changes
    n = len(paired.ids)
    quality = Finding(current.quality_metric, "baseline", PASSED,
                      f"{current.quality_metric} {fmt_value(baseline.quality)} -> {fmt_value(current.quality)}")
    if current.quality_metric != baseline.quality_metric:
        quality = Finding(current.quality_metric, "baseline", REGRESSED,
                          f"{current.quality_metric} not comparable: the baseline gates {baseline.quality_metric} "
                          "(re-save the baseline)")
    if not changes:
        findings = [Finding("outputs", "baseline", PASSED, f"outputs as in the baseline on all {n} items"), quality]
    elif current.metadata.get("random_weights"):
        findings = [Finding("outputs", "baseline", PASSED,
                            f"{len(changes)}/{n} outputs differ from the baseline (first: {changes[0]}); random weights "
                            "turn on any rounding, so outputs are reported, not judged"), quality]
    else:
        findings = [Finding("outputs", "baseline", REGRESSED,
                            f"outputs changed vs the baseline on {len(changes)}/{n} items ({_named(changes)}): the same "
                            "variant must reproduce its baseline; re-record it if the change is meant"), quality]
    return findings + value_findings(current, baseline, "baseline", policy.value_tolerances["baseline"])


def value_findings(current: CaseRecord, compared: CaseRecord, against: str, tolerance) -> list[Finding]:
    """Per-item values (scoring's pair scores) within `tolerance` of the compared side's."""
    paired = Paired.of(current.output, compared.output)
    if not current.output.item_values or not compared.output.item_values:
        return []
    drifted = paired.changed("item_values", tolerance.allows)
    if not drifted:
        return [Finding("values", against, PASSED, f"per-item values within {tolerance} of the {against}'s")]
    described = [f"{i} {a:.4g} -> {b:.4g} ({b - a:+.4g})" for i, a, b in drifted]
    return [Finding("values", against, REGRESSED, f"values drifted beyond {tolerance} of the {against}'s on "
                                                  f"{len(drifted)}/{len(paired.ids)} items: {_named(described)}")]


# --- against the reference -------------------------------------------------------------------------


def reference_findings(current: CaseRecord, reference: CaseRecord, policy: GatePolicy,
                       against: str = "reference") -> list[Finding]:
    """The contract of the variant's fidelity class, checked against the reference (or a one-toggle neighbour)."""
    cls = fidelity_class(current)
    toggles = ", ".join(differing_toggles(current))
    paired = Paired.of(current.output, reference.output)
    if not paired.comparable():
        return [_not_comparable("fidelity", against, paired)]
    n = len(paired.ids)
    differing = paired.changed("item_outputs")
    agreement = (n - len(differing)) / n
    summary = f"agreement {n - len(differing)}/{n} ({100 * agreement:.1f}%) with the {against}"
    where = "" if full_precision(current) else f" (dtype {current.metadata.get('dtype', 'unknown')}" + (
        f", {quantized(current)} weights)" if quantized(current) else ")")
    values = value_findings(current, reference, against, policy.value_tolerances[cls])

    if cls == toggle_registry.EXACT:
        if differing:
            named = _named([f"{i}: {_clip(str(a))} -> {_clip(str(b))}" for i, a, b in differing])
            return [Finding("fidelity", against, REGRESSED, f"fidelity: {toggles} is exact in fp32 but {len(differing)}/"
                                                            f"{n} outputs differ from the {against} ({named})"), *values]
        return [Finding("fidelity", against, PASSED, f"fidelity (exact): {summary}"), *values]
    if cls == toggle_registry.ANSWER:
        column = answers(current.output)
        changed = paired.changed(column) if column == answers(reference.output) else paired.changed("item_outputs")
        if changed:
            named = _named([f"{i}: {_clip(str(a), 16)} -> {_clip(str(b), 16)}" for i, a, b in changed])
            return [Finding("fidelity", against, REGRESSED, f"fidelity: {toggles} must preserve every answer, but "
                                                            f"{len(changed)}/{n} differ from the {against}: {named}"),
                    *values]
        return [Finding("fidelity", against, PASSED, f"fidelity (answer-preserving): all {n} answers as the "
                                                     f"{against}'s; {summary}"), *values]
    if current.metadata.get("random_weights"):
        # Random weights put near-ties everywhere: any rounding turns tokens. Reported, not judged.
        return [Finding("fidelity", against, PASSED, f"fidelity ({cls}{where}): {summary}; random weights turn on "
                                                     "any rounding, so only exact toggles are judged")]
    findings = []
    if cls == toggle_registry.TOLERANCE and agreement < policy.min_agreement:
        first = f" (first: item {differing[0][0]})" if differing else ""
        findings.append(Finding("fidelity", against, REGRESSED, f"fidelity: {toggles} is tolerance-class{where} but only "
                                                                f"{summary}, below {100 * policy.min_agreement:.0f}%{first}"))
    else:
        findings.append(Finding("fidelity", against, PASSED, f"fidelity ({cls}{where}): {summary}"))
    findings.append(budget_finding(current.quality_metric, against, current, reference, budget_of(current, policy)))
    return findings + values


def power_finding(current: CaseRecord, policy: GatePolicy) -> Finding:
    """A note of the smallest loss this case can catch: what a green run rules out."""
    n = len(current.output.item_ids)
    if not n:
        return Finding("power", "reference", PASSED, "no items: quality is not judged")
    one = f"1 of {n} items ({100 / n:.1f} pts)"
    parts = [f"vs the baseline, one changed output: {one}"]
    cls = fidelity_class(current)
    binary = _is_binary(current.output.item_scores)
    if cls in (toggle_registry.EXACT, toggle_registry.ANSWER):
        parts.append(f"vs the reference ({cls}), one changed {'output' if cls == toggle_registry.EXACT else 'answer'}: "
                     f"{one}")
    elif cls is not None:
        budget = budget_of(current, policy)
        caught = (f"a net loss of {allowed_items(budget, n) + 1} items ({100 * smallest_catchable_loss(budget, n):.1f} pts)"
                  if binary else f"a drop over {_points(budget, 0.0 <= current.quality <= 1.0)}")
        parts.append(f"vs the reference ({cls}, budget {_points(budget, True)}), {caught}")
    if current.metadata.get("random_weights"):
        parts = [f"random weights: outputs are reported, not judged, but for exact toggles ({one})"]
    return Finding("power", "reference" if cls else "baseline", PASSED, "smallest loss caught: " + "; ".join(parts))


def decision_findings(current: CaseRecord, compared: CaseRecord, against: str) -> list[Finding]:
    """For pipelines whose outputs are decisions: every changed decision is a regression, named."""
    if not current.output.decisions:
        return []
    changed = Paired.of(current.output, compared.output).changed("item_outputs")
    if changed:
        named = "; ".join(f"{i} {a} -> {b}" for i, a, b in changed)
        return [Finding("decisions", against, REGRESSED, f"decision changed vs the {against}: {named}")]
    return [Finding("decisions", against, PASSED, f"decisions unchanged vs the {against}")]


__all__ = [
    "allowed_items",
    "baseline_findings",
    "budget_finding",
    "budget_of",
    "decision_findings",
    "differing_toggles",
    "fidelity_class",
    "outputs_changed",
    "power_finding",
    "reference_findings",
    "smallest_catchable_loss",
    "value_findings",
]
