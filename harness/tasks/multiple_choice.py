"""GPQA-style four-choice questions: recall of the world's facts, comparison and sums."""

from __future__ import annotations

import random

from harness.tasks.draft import Draft
from harness.tasks.world import ATTRIBUTE_VALUES, build_world

LETTERS = "ABCD"


def _question(stem: str, correct: str, distractors: list[str], rng: random.Random, reasoning: str = "") -> Draft:
    """Shuffle the choices with the item's own generator, so the gold letter is fixed by the seed."""
    choices = [correct, *distractors]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(correct)]
    lines = [f"Question: {stem}"] + [f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    prompt = "\n".join(lines) + "\nAnswer:"
    solution = f" {reasoning}The answer is ({letter})."
    return Draft(prompt, letter, solution, {"choices": choices, "correct_choice": correct})


def _recall(rng: random.Random) -> Draft:
    world = build_world()
    fact = world.fact(rng.choice(world.entities), rng.choice(tuple(ATTRIBUTE_VALUES)))
    others = [v for v in ATTRIBUTE_VALUES[fact.attribute] if v != fact.value]
    draft = _question(fact.question(), fact.value, rng.sample(others, 3), rng)
    draft.metadata.update(kind="recall", entity=fact.entity, attribute=fact.attribute)
    return draft


def _largest(rng: random.Random) -> Draft:
    numbers = rng.sample(range(10, 100), 4)
    largest = max(numbers)
    draft = _question("Which number is the largest?", str(largest), [str(n) for n in numbers if n != largest], rng)
    draft.metadata.update(kind="largest")
    return draft


def _sum(rng: random.Random) -> Draft:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    total = a + b
    distractors = rng.sample([total + d for d in (-11, -10, -2, -1, 1, 2, 10, 11)], 3)
    draft = _question(f"What is {a} + {b}?", str(total), [str(n) for n in distractors], rng, f"{a}+{b}={total}. ")
    draft.metadata.update(kind="sum")
    return draft


def make_gpqa(rng: random.Random) -> Draft:
    maker = rng.choices((_recall, _largest, _sum), weights=(0.6, 0.2, 0.2))[0]
    return maker(rng)
