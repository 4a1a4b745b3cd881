"""The item every suite produces and every pipeline consumes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

ANSWER_TYPES = ("number", "integer", "choice", "text")
SPLITS = ("train", "test")

# One prompt in five belongs to the held-out split. The split is a function of
# the prompt text alone, so no training item can ever equal a held-out item.
_TEST_BUCKETS = 5


@dataclass(frozen=True)
class TaskItem:
    """One question: what the model reads, what counts as right, and how to check it."""

    id: str
    suite: str
    prompt: str
    answer: str
    answer_type: str
    # A worked completion in the format the embedded model is trained on; optional for users' items.
    solution: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {self.answer_type!r}")

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "suite": self.suite,
            "prompt": self.prompt,
            "answer": self.answer,
            "answer_type": self.answer_type,
        }
        if self.solution is not None:
            record["solution"] = self.solution
        if self.metadata:
            record["metadata"] = self.metadata
        return record


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, fixed by its hash."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return "test" if digest[0] % _TEST_BUCKETS == 0 else "train"
