"""What a suite's item maker returns before the registry gives it an id and a split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Draft:
    prompt: str
    answer: str
    solution: str
    metadata: dict[str, Any] = field(default_factory=dict)
