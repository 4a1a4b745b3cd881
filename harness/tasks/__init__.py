"""Task suites: the embedded seeded generators and the loader for users' JSONL files."""

from harness.tasks.answers import is_correct
from harness.tasks.item import ANSWER_TYPES, SPLITS, TaskItem, split_of
from harness.tasks.jsonl import DatasetError, load_jsonl
from harness.tasks.suites import SUITES, Suite, generate_suite, get_suite


def check(item: TaskItem, response: str) -> bool:
    """Whether a response answers the item correctly, by its answer type's conventions."""
    return is_correct(response, item.answer, item.answer_type)


__all__ = [
    "ANSWER_TYPES", "SPLITS", "SUITES", "DatasetError", "Suite", "TaskItem",
    "check", "generate_suite", "get_suite", "load_jsonl", "split_of",
]
