"""Switching a model's attention implementation for a block of work, and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def attention_implementation(model, implementation: str) -> Iterator[None]:
    """The model attends with `implementation` inside the block (transformers' `set_attn_implementation`), then with
    the one it had, also when the block raises."""
    previous = model.config._attn_implementation
    if implementation == previous:
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
