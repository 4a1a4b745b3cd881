"""The embedded seeded suites: gold answers check out, seeds and splits behave, suite-specific invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.tasks import (
    SPLITS,
    SUITES,
    TaskItem,
    check,
    generate_suite,
    get_suite,
    split_of,
)
from harness.tasks.world import ATTRIBUTE_VALUES

SEEDS = st.integers(0, 10**6)
FEW = settings(max_examples=25, deadline=None)
N = 8


def _context(item: TaskItem) -> str:
    head, _, _ = item.prompt.partition("\nQuestion:")
    assert head.startswith("Context: ")
    return head


def _perturbed(item: TaskItem) -> str:
    """A response that states a wrong answer in the format the suite's checker reads."""
    if item.answer_type in ("number", "integer"):
        return rf"\boxed{{{int(item.answer) + 1}}}"
    if item.answer_type == "choice":
        other = next(letter for letter in "ABCD" if letter != item.answer)
        return f"The answer is ({other})."
    assert item.answer_type == "text"
    return next(v for v in ATTRIBUTE_VALUES[item.metadata["attribute"]] if v != item.answer)


def test_suites_registry_matches_answer_types() -> None:
    assert {name: suite.answer_type for name, suite in SUITES.items()} == {
        "math": "number",
        "aime": "integer",
        "gpqa": "choice",
        "context_qa": "text",
    }


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", sorted(SUITES))
@FEW
@given(seed=SEEDS)
def test_gold_accepted_and_perturbed_rejected(name: str, split: str, seed: int) -> None:
    items = generate_suite(name, N, seed=seed, split=split)
    assert len(items) == N
    assert len({item.prompt for item in items}) == N
    assert len({item.id for item in items}) == N
    for item in items:
        assert item.suite == name
        assert item.answer_type == SUITES[name].answer_type
        assert split_of(item.prompt) == split
        assert check(item, item.answer), item
        assert item.solution is not None
        assert check(item, item.solution), item
        assert not check(item, _perturbed(item)), item


@pytest.mark.parametrize("name", sorted(SUITES))
@FEW
@given(seed=SEEDS)
def test_same_seed_same_items_different_seed_different_items(name: str, seed: int) -> None:
    first = [item.to_dict() for item in generate_suite(name, N, seed=seed)]
    again = [item.to_dict() for item in generate_suite(name, N, seed=seed)]
    assert first == again
    other = [item.to_dict()["prompt"] for item in generate_suite(name, N, seed=seed + 1)]
    assert [record["prompt"] for record in first] != other


@pytest.mark.parametrize("name", sorted(SUITES))
def test_train_and_test_prompts_never_overlap(name: str) -> None:
    train = {item.prompt for seed in range(3) for item in generate_suite(name, 100, seed=seed, split="train")}
    test = {item.prompt for seed in range(3) for item in generate_suite(name, 100, seed=seed, split="test")}
    assert len(train) > 100 and len(test) > 100
    assert not train & test
    assert all(split_of(p) == "train" for p in train)
    assert all(split_of(p) == "test" for p in test)


def test_split_of_is_deterministic_and_uses_both_splits() -> None:
    prompts = [f"Problem: What is {i} + 1?\nSolution:" for i in range(500)]
    splits = [split_of(p) for p in prompts]
    assert splits == [split_of(p) for p in prompts]
    share = splits.count("test") / len(splits)
    assert 0.12 < share < 0.28  # one bucket in five


@pytest.mark.parametrize("split", SPLITS)
@FEW
@given(seed=SEEDS)
def test_aime_answers_are_integers_0_to_999(split: str, seed: int) -> None:
    for item in generate_suite("aime", N, seed=seed, split=split):
        assert item.answer == str(int(item.answer))
        assert 0 <= int(item.answer) <= 999
        assert item.solution.rstrip().endswith(rf"\boxed{{{item.answer}}}")


@pytest.mark.parametrize("split", SPLITS)
@FEW
@given(seed=SEEDS)
def test_gpqa_choices(split: str, seed: int) -> None:
    for item in generate_suite("gpqa", N, seed=seed, split=split):
        choices = item.metadata["choices"]
        assert len(choices) == 4 and len(set(choices)) == 4
        assert item.answer in "ABCD" and len(item.answer) == 1
        assert choices["ABCD".index(item.answer)] == item.metadata["correct_choice"]
        for letter, choice in zip("ABCD", choices):
            assert f"({letter}) {choice}\n" in item.prompt


def test_gpqa_gold_letters_are_spread() -> None:
    letters = [item.answer for item in generate_suite("gpqa", 200, seed=0)]
    assert min(letters.count(letter) for letter in "ABCD") >= 25  # 50 expected per letter


@pytest.mark.parametrize("split", SPLITS)
@FEW
@given(seed=SEEDS)
def test_context_qa_conflicts(split: str, seed: int) -> None:
    for item in generate_suite("context_qa", N, seed=seed, split=split):
        meta = item.metadata
        assert item.answer in ATTRIBUTE_VALUES[meta["attribute"]]
        assert meta["memory_answer"] in ATTRIBUTE_VALUES[meta["attribute"]]
        if meta["conflict"]:
            assert item.answer != meta["memory_answer"]
        else:
            assert item.answer == meta["memory_answer"]
        context = _context(item)
        assert item.answer in context
        assert meta["entity"] in context


def test_context_qa_conflict_share() -> None:
    items = generate_suite("context_qa", 400, seed=0)
    share = sum(item.metadata["conflict"] for item in items) / len(items)
    assert 0.4 <= share <= 0.6


def test_unknown_suite_raises_naming_embedded_suites() -> None:
    with pytest.raises(ValueError) as info:
        generate_suite("mmlu", 4)
    message = str(info.value)
    assert "mmlu" in message
    for name in SUITES:
        assert name in message
    with pytest.raises(ValueError, match="embedded suites"):
        get_suite("nope")


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="split"):
        generate_suite("math", 4, split="validation")


def test_a_lengthened_context_keeps_the_question_and_its_answer_behind_more_facts() -> None:
    from harness.tasks.context_qa import lengthened_context

    item = generate_suite("context_qa", n=1, seed=0)[0]
    words = lambda text: len(text.split())  # noqa: E731
    longer = lengthened_context(item.prompt, 200, words, item.id)
    assert words(longer) >= 200 > words(item.prompt)
    assert longer.startswith("Context: ") and longer.endswith(item.prompt.removeprefix("Context: "))
    assert longer == lengthened_context(item.prompt, 200, words, item.id)  # seeded by the item



def test_an_exact_lengthened_context_has_the_length_asked_and_the_prompts_own_context_whole() -> None:
    from harness.tasks.context_qa import lengthened_context

    for item in generate_suite("context_qa", n=5, seed=0):
        exact = lengthened_context(item.prompt, 600, len, item.id, exact=True)
        assert len(exact) == 600 and exact.endswith(item.prompt.split("Context: ", 1)[1])
    short = generate_suite("context_qa", n=1, seed=0)[0].prompt
    assert lengthened_context(short, 10, len, "x", exact=True).endswith(short.split("Context: ", 1)[1])
