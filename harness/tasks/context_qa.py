"""RAG-style questions answered from a context passage, half of whose asked facts conflict with memory.

Gold is always the context's value. On conflict items the embedded model sometimes answers
with the value it memorized instead: a real hallucination, labelled by comparing the answer
with the context (`metadata["memory_answer"]` is what memory would say).
"""

from __future__ import annotations

import random

from harness.tasks.draft import Draft
from harness.tasks.world import ATTRIBUTE_VALUES, build_world

CONFLICT_SHARE = 0.5
_DISTRACTOR_FACTS = 2


def make_context_qa(rng: random.Random) -> Draft:
    world = build_world()
    attribute = rng.choice(tuple(ATTRIBUTE_VALUES))
    entity = rng.choice(world.entities)
    fact = world.fact(entity, attribute)
    conflict = rng.random() < CONFLICT_SHARE
    context_value = rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != fact.value]) if conflict else fact.value

    others = rng.sample([e for e in world.entities if e != entity], _DISTRACTOR_FACTS)
    statements = [world.fact(e, rng.choice(tuple(ATTRIBUTE_VALUES))).statement() for e in others]
    statements.insert(rng.randint(0, len(statements)), fact.statement(context_value))

    prompt = f"Context: {' '.join(statements)}\nQuestion: {fact.question()}\nAnswer:"
    metadata = {
        "conflict": conflict,
        "memory_answer": fact.value,
        "entity": entity,
        "attribute": attribute,
        "famous": entity in world.famous,
    }
    return Draft(prompt, context_value, f" {context_value}", metadata)


def lengthened_context(prompt: str, tokens: int, count_tokens, seed: str, exact: bool = False) -> str:
    """A context_qa prompt with facts of other entities put at the front of its context, until `count_tokens` of
    it is at least `tokens`: the same question and answer at a long context, where attention matters.

    `exact`: then cut characters from the front of those facts until it is at most `tokens` long, exactly `tokens`
    for a character tokenizer (the embedded models' and the speed profiles'): rows of one length need no padding.
    The added facts are cut, never the prompt's own context."""
    world, rng = build_world(), random.Random(seed)
    head, rest = prompt.split("Context: ", 1)
    extra: list[str] = []
    while count_tokens(head + "Context: " + " ".join(extra) + " " + rest) < tokens:
        extra.append(world.fact(rng.choice(world.entities), rng.choice(tuple(ATTRIBUTE_VALUES))).statement())
    added = " ".join(extra) + " "
    while exact and added and count_tokens(head + "Context: " + added + rest) > tokens:
        added = added[1:]  # only the added facts are cut: a prompt longer than `tokens` as it came stays whole
    return head + "Context: " + added + rest
