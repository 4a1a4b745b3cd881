"""Users' JSONL task files: round trip, and a DatasetError naming file, line and field for each bad line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.tasks import DatasetError, TaskItem, check, generate_suite, load_jsonl


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _good(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": f"q{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "answer_type": "number", **extra}


def test_round_trip_of_generated_items(tmp_path: Path) -> None:
    items = [item for name in ("math", "aime", "gpqa", "context_qa") for item in generate_suite(name, 5, seed=3)]
    path = _write(tmp_path / "mixed.jsonl", [json.dumps(item.to_dict()) for item in items])
    loaded = load_jsonl(path)
    assert [item.to_dict() for item in loaded] == [item.to_dict() for item in items]
    assert all(isinstance(item, TaskItem) for item in loaded)
    assert all(check(item, item.solution) for item in loaded)


def test_defaults_for_optional_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.jsonl", [json.dumps({"id": "a", "prompt": "Capital?", "answer": "Oslo"})])
    (item,) = load_jsonl(str(path))  # a str path works too
    assert item == TaskItem(id="a", suite="mine", prompt="Capital?", answer="Oslo", answer_type="text")
    assert item.to_dict() == {"id": "a", "suite": "mine", "prompt": "Capital?", "answer": "Oslo", "answer_type": "text"}


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", ["", json.dumps(_good(0)), "   ", "", json.dumps(_good(1)), ""])
    assert [item.id for item in load_jsonl(path)] == ["q0", "q1"]

    path = _write(tmp_path / "u.jsonl", ["", json.dumps(_good(0)), "  ", "{oops"])
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert info.value.line == 4
    assert f"{path}:4" in str(info.value)


def _bad_cases() -> list[tuple[str, str, str | None, str]]:
    """(case id, bad line, field named or None, a word the problem must mention)."""
    good = _good(9)
    without_prompt = {k: v for k, v in good.items() if k != "prompt"}
    return [
        ("invalid-json", '{"id": "q9", "prompt": ', None, "JSON"),
        ("not-an-object", json.dumps([good]), None, "object"),
        ("string-line", json.dumps("just text"), None, "object"),
        ("missing-prompt", json.dumps(without_prompt), "prompt", "required"),
        ("empty-answer", json.dumps({**good, "answer": ""}), "answer", "non-empty"),
        ("blank-answer", json.dumps({**good, "answer": "   "}), "answer", "non-empty"),
        ("non-string-id", json.dumps({**good, "id": 9}), "id", "string"),
        ("non-string-solution", json.dumps({**good, "solution": 3}), "solution", "string"),
        ("unknown-answer-type", json.dumps({**good, "answer_type": "essay"}), "answer_type", "essay"),
        ("metadata-not-object", json.dumps({**good, "metadata": [1, 2]}), "metadata", "object"),
        ("unknown-field", json.dumps({**good, "difficulty": "hard"}), "difficulty", "known field"),
    ]


@pytest.mark.parametrize(("line", "field", "word"), [case[1:] for case in _bad_cases()], ids=[case[0] for case in _bad_cases()])
def test_bad_line_names_file_line_and_field(tmp_path: Path, line: str, field: str | None, word: str) -> None:
    # Two good lines and a blank one first, so the bad line is physical line 4.
    path = _write(tmp_path / "tasks.jsonl", [json.dumps(_good(0)), "", json.dumps(_good(1)), line, json.dumps(_good(2))])
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    error = info.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert error.path == path and error.line == 4 and error.field == field
    assert message.startswith(f"{path}:4")
    if field is not None:
        assert repr(field) in message
    assert word in message


def test_duplicate_id_names_earlier_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.jsonl", [json.dumps(_good(0)), "", json.dumps(_good(1)), json.dumps({**_good(5), "id": "q0"})])
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert info.value.line == 4 and info.value.field == "id"
    assert message.startswith(f"{path}:4")
    assert "'q0'" in message and "line 1" in message


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "only-blank-lines"])
def test_file_without_items_raises(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert str(path) in str(info.value)
    assert "no items" in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path)  # a directory is not a task file
