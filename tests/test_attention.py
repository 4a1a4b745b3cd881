"""attention=sdpa_fa: PyTorch's FlashAttention kernel through sdpa, with no silent fallback to another kernel."""

from __future__ import annotations

import pytest
import torch

from harness.models.loading import LoadSpec, load_model
from harness.pipelines.attention import (
    SDPA_FA,
    KernelRefused,
    attention_implementation,
    flash_sdpa,
)
from harness.pipelines.eval import EvalSettings, run_eval
from harness.tasks import generate_suite


class _Attention(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 1


def test_inputs_the_flash_kernel_refuses_fail_with_torchs_reason_not_another_kernel() -> None:
    query, key = torch.randn(1, 4, 16, 32), torch.randn(1, 4, 16, 32)
    value = torch.randn(1, 4, 16, 48)  # a value width the flash kernel does not take; the math kernel would
    with pytest.raises(KernelRefused, match="sdpa_fa.*refused.*same last dimension"):
        flash_sdpa(_Attention(), query, key, value, None)


def test_the_flash_kernel_answers_as_sdpa_does_on_the_embedded_model(monkeypatch) -> None:
    from harness.pipelines import attention

    loaded = load_model(LoadSpec("embedded", "cpu", "float32", "none"))
    items = generate_suite("math", n=4, seed=0)
    settings = EvalSettings(max_new_tokens=24, kv_cache=True, batching="static8")  # padded rows: a mask every step
    sdpa = run_eval(loaded.model, loaded.tokenizer, items, settings)
    kernels = []  # which sdpa kernels each call through sdpa_fa allowed: the flash one alone, or it is no flash run
    forward = attention.sdpa_attention_forward

    def recording(*args, **kwargs):
        kernels.append(torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled())
        return forward(*args, **kwargs)

    monkeypatch.setattr(attention, "sdpa_attention_forward", recording)
    with attention_implementation(loaded.model, SDPA_FA):
        flash = run_eval(loaded.model, loaded.tokenizer, items, settings)
    assert kernels and all(kernels)  # every layer's attention went through sdpa_fa, with the flash kernel forced
    assert loaded.model.config._attn_implementation != SDPA_FA  # switched back
    assert flash.item_outputs == sdpa.item_outputs
