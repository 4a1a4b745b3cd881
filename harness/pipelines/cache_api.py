"""The KV cache's names across transformers 5.x: `past_key_values` in the versions before the rename, `cache` since.

Passing the old name to a newer version works but warns that it goes away in 6.0; passing the new one to an
older version fails. So the name is read from the model's own forward signature.
"""

from __future__ import annotations

import inspect

from transformers.cache_utils import Cache


def cache_keyword(model) -> str:
    """The keyword the model's forward (and generate) takes its cache by."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def last_logits(model, count: int) -> dict:
    """The forward's argument that computes the logits of the last `count` positions only, where it takes one
    (`logits_to_keep`); empty for a forward without it, which then computes them all."""
    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def output_cache(output) -> Cache | None:
    """The cache a forward or generate output carries, under whichever name this version gives it."""
    cache = getattr(output, "cache", None)  # a field of the outputs since the rename
    return cache if cache is not None else getattr(output, "past_key_values", None)


__all__ = ["cache_keyword", "last_logits", "output_cache"]
