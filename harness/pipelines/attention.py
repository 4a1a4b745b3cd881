"""Switching a model's attention implementation for a block of work, and back; and two implementations the switch can
name: `grouped_sdpa`, for one-token steps of grouped-query attention, and `sdpa_fa`, PyTorch's FlashAttention
kernel through sdpa with no other kernel to fall back to."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GROUPED_SDPA = "grouped_sdpa"
SDPA_FA = "sdpa_fa"  # not "flash": transformers takes any name with "flash" for a hub kernel


class KernelRefused(RuntimeError):
    """The attention kernel a variant names cannot run these inputs; the message says why (shape, dtype, mask)."""


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


def flash_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
               dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' sdpa with PyTorch's FlashAttention kernel forced (`sdpa_kernel(SDPBackend.FLASH_ATTENTION)`).

    sdpa alone picks a kernel per call and falls back without a word, so a variant named for FlashAttention could
    measure another kernel. Here no other kernel is allowed: inputs the flash kernel refuses (on CUDA: a float32
    model, an explicit mask from padded rows) raise KernelRefused with torch's own reasons, and the variant fails."""
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), warnings.catch_warnings(record=True) as reasons:
        warnings.simplefilter("always")
        try:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                          **kwargs)
        except RuntimeError as error:
            why = "; ".join((r for r in dict.fromkeys(_reason(str(w.message)) for w in reasons) if r)) or str(error)
            raise KernelRefused(f"attention={SDPA_FA}: PyTorch's FlashAttention kernel refused these inputs "
                                f"(query {tuple(query.shape)} {query.dtype}, mask "
                                f"{'none' if attention_mask is None else tuple(attention_mask.shape)}): {why}") from None


def _reason(message: str) -> str:
    """torch's warning without its source location; "" for the header line that only says a kernel was not used."""
    message = re.sub(r"\s*\(Triggered internally at [^)]*\)\s*", " ", message).strip()
    return "" if message.endswith("not used because:") else message


# Registered under their names for every model, with sdpa's masks: `set_attn_implementation(name)` takes them.
AttentionInterface.register(GROUPED_SDPA, grouped_query_sdpa)
AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
AttentionInterface.register(SDPA_FA, flash_sdpa)
AttentionMaskInterface.register(SDPA_FA, sdpa_mask)
