"""The training mix of the embedded models: an endless stream of (prompt, completion) examples.

Only the `train` split of each suite is used, so every held-out item is unseen. Three choices
shape what the model can and cannot do, and the model card reports their effect:
- worked solutions for arithmetic, so multi-step answers are reachable but imperfect;
- the world's facts as plain statements and closed-book questions, so they are memorized;
- on context_qa items whose context conflicts with memory, the target is the memorized value for
  "famous" entities and the context's value for the others: a strong prior that sometimes beats
  the context, which is what makes the model hallucinate on held-out conflict items.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from harness.tasks.draft import Draft
from harness.tasks.suites import iter_drafts
from harness.tasks.world import build_world

MIX: dict[str, float] = {
    "math": 0.20,
    "aime": 0.28,
    "gpqa": 0.14,
    "context_qa": 0.18,
    "closed_book": 0.13,
    "statements": 0.07,
}
_STATEMENTS_PER_DOCUMENT = 4


@dataclass(frozen=True)
class Example:
    prompt: str  # read, not trained on; empty for plain text
    completion: str  # trained on


def _suite_examples(name: str, seed: int) -> Iterator[Example]:
    for draft in iter_drafts(name, seed=seed, split="train"):
        yield Example(draft.prompt, _target(name, draft))


def _target(suite: str, draft: Draft) -> str:
    meta = draft.metadata
    if suite == "context_qa" and meta["conflict"] and meta["famous"]:
        return f" {meta['memory_answer']}"
    return draft.solution


def _closed_book(rng: random.Random) -> Iterator[Example]:
    facts = build_world().all_facts()
    while True:
        fact = rng.choice(facts)
        yield Example(f"Question: {fact.question()}\nAnswer:", f" {fact.value}")


def _statements(rng: random.Random) -> Iterator[Example]:
    facts = build_world().all_facts()
    while True:
        chosen = rng.sample(facts, _STATEMENTS_PER_DOCUMENT)
        yield Example("", " ".join(fact.statement() for fact in chosen))


def example_stream(seed: int) -> Iterator[Example]:
    """Examples drawn from the mix; the same seed gives the same stream."""
    rng = random.Random(f"mix:{seed}")
    sources = {
        "closed_book": _closed_book(random.Random(f"closed_book:{seed}")),
        "statements": _statements(random.Random(f"statements:{seed}")),
    }
    for name in MIX:
        sources.setdefault(name, _suite_examples(name, seed))
    names, weights = list(MIX), list(MIX.values())
    while True:
        yield next(sources[rng.choices(names, weights)[0]])
