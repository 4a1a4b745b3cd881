"""Switching a model's attention implementation for a block of work, and back; and `grouped_sdpa`, an implementation
for one-token steps of grouped-query attention that the switch can name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GROUPED_SDPA = "grouped_sdpa"


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


def grouped_query_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs) -> tuple[torch.Tensor, None]:
    """sdpa for a one-token step with fewer key/value heads than query heads, without copying the key/value heads
    up to the query's. With a mask (a static cache always has one), transformers' sdpa copies each layer's cache
    to every query head before the call when compiled (it packs the heads as here only when not compiled). Here
    the query heads that share a key/value head become its query positions, [batch, kv_heads, groups, dim], and
    the step's mask, one row over the cache for all heads, applies to each of them alike. Steps of several tokens,
    masks per head and position biases go to transformers' sdpa."""
    groups = getattr(module, "num_key_value_groups", 1)
    per_head_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] != 1
    if query.shape[2] != 1 or groups == 1 or per_head_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    packed = query.reshape(batch, heads // groups, groups, dim)
    output = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling)
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


# Registered under its name for every model, with sdpa's masks: `set_attn_implementation("grouped_sdpa")` takes it.
AttentionInterface.register(GROUPED_SDPA, grouped_query_sdpa)
AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
