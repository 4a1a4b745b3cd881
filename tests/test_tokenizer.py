"""The embedded models' character-level tokenizer: round trips, unknown characters, padding, saving, shipped copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from harness.models.embedded import REFERENCE_MODEL, SIBLING_MODEL
from harness.models.embedded.tokenizer import (
    CHARACTERS,
    SPECIAL_TOKENS,
    build_tokenizer,
)
from harness.tasks import SPLITS, SUITES, generate_suite

TEXT = st.text(alphabet=st.sampled_from(CHARACTERS), max_size=200)
# Anything outside the tokenizer's alphabet (surrogates cannot be encoded to UTF-8 at all).
UNKNOWN = st.characters(blacklist_characters=CHARACTERS, blacklist_categories=("Cs",))
MANY = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_vocabulary_is_specials_then_characters(tokenizer) -> None:
    assert len(tokenizer) == len(SPECIAL_TOKENS) + len(CHARACTERS)
    assert tokenizer.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)
    assert len(set(CHARACTERS)) == len(CHARACTERS)
    assert {tokenizer.convert_tokens_to_ids(c) for c in CHARACTERS}.isdisjoint({tokenizer.unk_token_id})


@MANY
@given(text=TEXT)
def test_round_trip(tokenizer, text: str) -> None:
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@MANY
@given(text=TEXT)
def test_one_token_per_character_after_bos(tokenizer, text: str) -> None:
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1:] == [tokenizer.convert_tokens_to_ids(c) for c in text]
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]


@pytest.mark.parametrize("text", ["<s>", "a</s>b", "<pad><unk>", "x<s>y</s>"])
def test_special_token_strings_are_plain_text(tokenizer, text: str) -> None:
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == 1 + len(text)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@settings(max_examples=100, deadline=None)
@given(known=TEXT, unknown=st.lists(UNKNOWN, min_size=1, max_size=5))
def test_unknown_characters_map_to_unk(tokenizer, known: str, unknown: list[str]) -> None:
    text = "".join(unknown) + known
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1 : 1 + len(unknown)] == [tokenizer.unk_token_id] * len(unknown)
    assert ids[1 + len(unknown) :] == tokenizer(known, add_special_tokens=False)["input_ids"]


def test_unknown_examples(tokenizer) -> None:
    assert tokenizer.convert_ids_to_tokens(tokenizer("é\tä")["input_ids"]) == ["<s>", "<unk>", "<unk>", "<unk>"]


def test_padding_is_on_the_left(tokenizer) -> None:
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["a", "abcd"], padding=True)
    pad, bos = tokenizer.pad_token_id, tokenizer.bos_token_id
    assert batch["input_ids"][0][:4] == [pad, pad, pad, bos]
    assert batch["attention_mask"] == [[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]]
    assert batch["input_ids"][1][0] == bos


def test_save_and_reload_keeps_settings(tokenizer, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.padding_side == "left"
    for name in ("pad", "eos", "bos", "unk"):
        assert getattr(reloaded, f"{name}_token") == getattr(tokenizer, f"{name}_token")
        assert getattr(reloaded, f"{name}_token_id") == getattr(tokenizer, f"{name}_token_id")
    assert (reloaded.pad_token, reloaded.eos_token, reloaded.bos_token) == ("<pad>", "</s>", "<s>")
    text = "Question: 12 + 7 = ?\nAnswer: <s> é"
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded(["a", "abc"], padding=True)["input_ids"] == tokenizer(["a", "abc"], padding=True)["input_ids"]


def _suite_prompts() -> list[str]:
    return [item.prompt for name in SUITES for split in SPLITS for item in generate_suite(name, 10, seed=3, split=split)]


@pytest.mark.parametrize("directory", [REFERENCE_MODEL, SIBLING_MODEL], ids=["reference", "sibling"])
def test_shipped_tokenizer_matches_build_tokenizer(tokenizer, directory: Path) -> None:
    shipped = AutoTokenizer.from_pretrained(directory)
    assert shipped.get_vocab() == tokenizer.get_vocab()
    assert shipped.padding_side == "left"
    assert (shipped.pad_token_id, shipped.bos_token_id, shipped.eos_token_id, shipped.unk_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    )
    prompts = _suite_prompts()
    assert shipped(prompts)["input_ids"] == tokenizer(prompts)["input_ids"]
    assert shipped(prompts, padding=True)["input_ids"] == tokenizer(prompts, padding=True)["input_ids"]
