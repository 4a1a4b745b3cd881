"""Users' own task files: one JSON object per line, in the TaskItem format, validated line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.tasks.item import ANSWER_TYPES, TaskItem

_REQUIRED = ("id", "prompt", "answer")
_OPTIONAL_STRINGS = ("suite", "solution")
_KNOWN_FIELDS = {*_REQUIRED, *_OPTIONAL_STRINGS, "answer_type", "metadata"}


class DatasetError(ValueError):
    """A task file that cannot be used, with the file, line and field at fault."""

    def __init__(self, path: Path, line: int, field: str | None, problem: str) -> None:
        where = f"{path}:{line}" + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.field = path, line, field


def _check_fields(record: dict[str, Any], path: Path, line: int) -> None:
    for name in _REQUIRED:
        if name not in record:
            raise DatasetError(path, line, name, "is required (each line needs id, prompt and answer)")
        if not isinstance(record[name], str) or not record[name].strip():
            raise DatasetError(path, line, name, f"must be a non-empty string, got {record[name]!r}")
    for name in _OPTIONAL_STRINGS:
        if name in record and not isinstance(record[name], str):
            raise DatasetError(path, line, name, f"must be a string, got {type(record[name]).__name__}")
    if record.get("answer_type", "text") not in ANSWER_TYPES:
        raise DatasetError(path, line, "answer_type", f"must be one of {', '.join(ANSWER_TYPES)}, got {record['answer_type']!r}")
    if not isinstance(record.get("metadata", {}), dict):
        raise DatasetError(path, line, "metadata", "must be a JSON object")
    unknown = sorted(set(record) - _KNOWN_FIELDS)
    if unknown:
        raise DatasetError(path, line, unknown[0], f"is not a known field (known: {', '.join(sorted(_KNOWN_FIELDS))})")


def _parse_line(text: str, path: Path, line: int) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(path, line, None, f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise DatasetError(path, line, None, f"must be a JSON object, got {type(record).__name__}")
    return record


def load_jsonl(path: str | Path) -> list[TaskItem]:
    """Every item of a JSONL task file; the first bad line raises a DatasetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    items: list[TaskItem] = []
    seen_ids: dict[str, int] = {}
    with path.open(encoding="utf-8-sig") as handle:  # a byte-order mark is not an error
        for line_number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            record = _parse_line(text, path, line_number)
            _check_fields(record, path, line_number)
            if record["id"] in seen_ids:
                raise DatasetError(path, line_number, "id", f"{record['id']!r} repeats line {seen_ids[record['id']]}")
            seen_ids[record["id"]] = line_number
            items.append(
                TaskItem(
                    id=record["id"],
                    suite=record.get("suite", path.stem),
                    prompt=record["prompt"],
                    answer=record["answer"],
                    answer_type=record.get("answer_type", "text"),
                    solution=record.get("solution"),
                    metadata=record.get("metadata", {}),
                )
            )
    if not items:
        raise DatasetError(path, 0, None, "holds no items")
    return items
