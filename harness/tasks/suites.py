"""The registry of embedded suites and the seeded, split-aware generator over them."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from harness.tasks.arithmetic import make_aime, make_math
from harness.tasks.context_qa import make_context_qa
from harness.tasks.draft import Draft
from harness.tasks.item import SPLITS, TaskItem, split_of
from harness.tasks.multiple_choice import make_gpqa

# Rejection sampling gives up after this many draws per requested item: a suite whose
# space is nearly exhausted should fail loudly, not loop.
_MAX_DRAWS_PER_ITEM = 200


@dataclass(frozen=True)
class Suite:
    name: str
    answer_type: str
    max_new_tokens: int
    make: Callable[[random.Random], Draft]
    description: str


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("math", "number", 64, make_math, "MATH-style multi-step arithmetic, answer in \\boxed{N}"),
        Suite("aime", "integer", 96, make_aime, "AIME-style three- or four-step problems answered modulo 1000 (integers 0..999)"),
        Suite("gpqa", "choice", 40, make_gpqa, "GPQA-style four-choice questions, seeded shuffled choices"),
        Suite("context_qa", "text", 16, make_context_qa, "RAG-style questions, half with contexts that conflict with memory"),
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; embedded suites: {', '.join(SUITES)}") from None


def iter_drafts(name: str, seed: int = 0, split: str = "test") -> Iterator[Draft]:
    """An endless seeded stream of one suite's drafts that belong to `split` (repeats possible)."""
    suite = get_suite(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{name}:{split}:{seed}")
    # Checked above, not inside the generator, so a bad argument fails at the call.
    return (draft for draft in iter(lambda: suite.make(rng), None) if split_of(draft.prompt) == split)


def generate_suite(name: str, n: int, seed: int = 0, split: str = "test") -> list[TaskItem]:
    """`n` distinct items of one suite and split, the same for the same arguments on any machine."""
    suite = get_suite(name)
    items: list[TaskItem] = []
    seen: set[str] = set()
    drafts = iter_drafts(name, seed, split)
    for _ in range(_MAX_DRAWS_PER_ITEM * max(n, 1)):
        if len(items) == n:
            break
        draft = next(drafts)
        if draft.prompt in seen:
            continue
        seen.add(draft.prompt)
        items.append(
            TaskItem(
                id=f"{name}-{split}-{seed}-{len(items)}",
                suite=name,
                prompt=draft.prompt,
                answer=draft.answer,
                answer_type=suite.answer_type,
                solution=draft.solution,
                metadata=draft.metadata,
            )
        )
    if len(items) < n:
        raise RuntimeError(f"suite {name!r} could not produce {n} distinct {split} items (got {len(items)})")
    return items
