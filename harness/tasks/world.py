"""A fixed, invented knowledge base: the facts the embedded model memorizes in training.

The `gpqa` suite asks about these facts; the `context_qa` suite puts them (or conflicting
versions of them) in a context passage. The world is built from a constant seed, so it is the
same for every run, every machine and every model trained by the project's recipe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

_WORLD_SEED = 20261123
ENTITY_COUNT = 96
# Share of entities the training mix treats as "famous": their memorized facts outweigh a
# conflicting context, as a large model's strong priors do. See harness/models/embedded/corpus.py.
FAMOUS_SHARE = 0.5

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": ("red", "blue", "green", "gold", "white", "black", "pink", "gray", "brown", "violet", "orange", "teal"),
    "city": ("Tarn", "Oslo", "Vell", "Mora", "Kesh", "Dunn", "Pira", "Lome", "Asker", "Brin", "Cova", "Zeta"),
    "pet": ("cat", "dog", "owl", "fox", "hen", "goat", "frog", "crow", "mole", "duck", "lynx", "newt"),
}
_STATEMENTS = {
    "color": "The {entity} is {value}.",
    "city": "The {entity} lives in {value}.",
    "pet": "The {entity} keeps a {value}.",
}
_QUESTIONS = {
    "color": "What color is the {entity}?",
    "city": "Where does the {entity} live?",
    "pet": "What pet does the {entity} keep?",
}
_ONSETS = ("b", "bl", "d", "dr", "f", "g", "gr", "k", "kl", "m", "n", "p", "pl", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ai")
_CODAS = ("b", "ck", "d", "g", "k", "l", "m", "n", "p", "rp", "sk", "t", "x", "zz")


@dataclass(frozen=True)
class Fact:
    entity: str
    attribute: str
    value: str

    def statement(self, value: str | None = None) -> str:
        return _STATEMENTS[self.attribute].format(entity=self.entity, value=value or self.value)

    def question(self) -> str:
        return _QUESTIONS[self.attribute].format(entity=self.entity)


@dataclass(frozen=True)
class World:
    entities: tuple[str, ...]
    famous: frozenset[str]
    facts: dict[tuple[str, str], Fact]

    def fact(self, entity: str, attribute: str) -> Fact:
        return self.facts[(entity, attribute)]

    def all_facts(self) -> list[Fact]:
        return list(self.facts.values())


def _invent_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS))
    return sorted(names)


@lru_cache(maxsize=1)
def build_world() -> World:
    rng = random.Random(_WORLD_SEED)
    entities = _invent_names(rng, ENTITY_COUNT)
    rng.shuffle(entities)
    famous = frozenset(entities[: int(FAMOUS_SHARE * ENTITY_COUNT)])
    facts = {
        (entity, attribute): Fact(entity, attribute, rng.choice(values))
        for entity in entities
        for attribute, values in ATTRIBUTE_VALUES.items()
    }
    return World(entities=tuple(entities), famous=famous, facts=facts)
