"""Speed-profile models: published architectures with random weights, built here with no download.

`--bench-model random:llama-3.2-1b` measures speed and memory at a realistic scale on a machine that can
fetch nothing. Random weights say nothing about accuracy: quality then means fidelity to the reference
variant (the same outputs, item by item). The tokenizer is the embedded model's character tokenizer,
its vocabulary filled up to the architecture's size, so every id the model can emit decodes.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    Qwen2Config,
)

from harness.models.embedded.tokenizer import build_tokenizer

PREFIX = "random:"

# The shapes of the published configs (hidden size, layers, heads, vocabulary, rope); nothing else is taken.
_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}
PROFILES: dict[str, tuple[type[PretrainedConfig], dict]] = {
    "llama-3.2-1b": (LlamaConfig, dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                                       num_key_value_heads=8, head_dim=64, vocab_size=128256, rms_norm_eps=1e-5,
                                       tie_word_embeddings=True, max_position_embeddings=131072,
                                       rope_parameters={**_LLAMA3_ROPE, "factor": 32.0})),
    "llama-3.1-8b": (LlamaConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                       num_key_value_heads=8, head_dim=128, vocab_size=128256, rms_norm_eps=1e-5,
                                       tie_word_embeddings=False, max_position_embeddings=131072,
                                       rope_parameters={**_LLAMA3_ROPE, "factor": 8.0})),
    "qwen2.5-1.5b": (Qwen2Config, dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                       num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                       max_position_embeddings=32768,
                                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "qwen2.5-14b": (Qwen2Config, dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
                                      num_key_value_heads=8, vocab_size=152064, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                      max_position_embeddings=32768,
                                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # The embedded model's shape: for tests, and for the speed of the pipelines' own code.
    "tiny-llama": (LlamaConfig, dict(hidden_size=192, intermediate_size=512, num_hidden_layers=6, num_attention_heads=6,
                                     num_key_value_heads=2, head_dim=32, vocab_size=100, max_position_embeddings=512)),
}


class ProfileError(ValueError):
    """An unknown speed profile, with the ones there are."""


def is_profile(source: str) -> bool:
    return source.startswith(PREFIX)


def profile_name(source: str) -> str:
    name = source[len(PREFIX):]
    if name not in PROFILES:
        raise ProfileError(f"--bench-model {source}: no such speed profile; profiles: "
                           f"{', '.join(PREFIX + n for n in PROFILES)}")
    return name


def profile_config(source: str) -> PretrainedConfig:
    config_class, shape = PROFILES[profile_name(source)]
    return config_class(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def random_model(source: str, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """The architecture with seeded random weights, initialized where it will run (an 8B model never
    passes through CPU memory)."""
    config = profile_config(source)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


@cache
def saved_profile(source: str, dtype_name: str) -> Path:
    """The random model written once as safetensors, for the loads that must go through from_pretrained
    (bitsandbytes quantizes while loading). Kept for the session, in a temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix=f"harness-{profile_name(source)}-"))
    model = random_model(source, "cpu", getattr(torch, dtype_name))
    model.save_pretrained(directory)
    build_tokenizer(model.config.vocab_size).save_pretrained(directory)
    return directory


__all__ = ["PREFIX", "PROFILES", "ProfileError", "build_tokenizer", "is_profile", "profile_config", "profile_name", "random_model",
           "saved_profile"]
