"""Decode and compute efficiency: how close a case runs to the memory-bandwidth limit of its GPU (decode), and to
its bf16 matrix throughput (prefill: scoring's teacher forcing, detection's feature pass).

At small batch every decode step reads all the weights and the KV cache once, so a step cannot take less
than bytes / bandwidth. The share of that limit a case reaches is

    (forward passes x weight bytes + KV positions read x KV bytes per position) / round time / peak bandwidth

counted over the whole round: prefill, Python and the pipeline's own work count against it, which is the
point. The counters come from the pipeline (`forward_passes`, `kv_positions_read`), the bytes from the
loaded model, the bandwidth from the GPU's data sheet. Data sheets promise more than any kernel reads, so the
share is also given of the bandwidth measured on the GPU itself: a sum over a tensor far larger than its L2
cache, the fastest of a few runs (4.03-4.09 TB/s over 1 GB measured on the H200, against the data
sheet's 4.8).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch

# Peak memory bandwidth, bytes/s, from the vendors' data sheets; matched on the device name, longest first.
PEAK_BANDWIDTH = {
    "h200": 4.8e12,
    "h100 nvl": 3.9e12,
    "h100 pcie": 2.0e12,
    "h100": 3.35e12,  # SXM
    "gh200": 4.0e12,
    "a100-sxm4-80gb": 2.039e12,
    "a100 80gb pcie": 1.935e12,
    "a100": 1.555e12,  # 40GB
    "l40s": 0.864e12,
    "l4": 0.3e12,
    "a10g": 0.6e12,
    "a10": 0.6e12,
    "rtx 4090": 1.008e12,
    "rtx 3090": 0.936e12,
}


# Dense bf16 matrix throughput, FLOP/s, from the vendors' data sheets (without sparsity); matched as PEAK_BANDWIDTH is.
PEAK_BF16_FLOPS = {
    "h200": 989e12,
    "h100 nvl": 835e12,
    "h100 pcie": 756e12,
    "h100": 989e12,  # SXM
    "a100": 312e12,
}


@dataclass(frozen=True)
class DecodeEfficiency:
    tokens_per_second: float
    bytes_per_second: float  # weights and KV cache read, per second of round
    peak_bytes_per_second: float
    gpu: str
    measured_bytes_per_second: float | None = None  # what a read-only kernel reaches on this GPU

    @property
    def share(self) -> float:
        return self.bytes_per_second / self.peak_bytes_per_second

    @property
    def measured_share(self) -> float | None:
        return self.bytes_per_second / self.measured_bytes_per_second if self.measured_bytes_per_second else None

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share, "measured_share": self.measured_share}


@dataclass(frozen=True)
class ComputeEfficiency:
    """The weights' matrix products of a round, per second, against the GPU's dense bf16 peak. Attention's own
    products are left out, so the share is a lower bound (for the 1B profile at 2,048 tokens, 4 x layers x hidden x context / 2 per token
    comes to 5.4% of the weights' 2 x parameters)."""

    flops_per_second: float
    peak_flops_per_second: float
    gpu: str

    @property
    def share(self) -> float:
        return self.flops_per_second / self.peak_flops_per_second

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share}


def _by_gpu(table: dict[str, float], gpu_name: str) -> float | None:
    name = gpu_name.lower()
    for key in sorted(table, key=len, reverse=True):
        if key in name:
            return table[key]
    return None


def peak_bandwidth(gpu_name: str) -> float | None:
    return _by_gpu(PEAK_BANDWIDTH, gpu_name)


def peak_bf16_flops(gpu_name: str) -> float | None:
    return _by_gpu(PEAK_BF16_FLOPS, gpu_name)


@functools.cache
def measured_read_bandwidth(device: int = 0, gigabytes: float = 1.0, repeats: int = 10) -> float | None:
    """Bytes per second the GPU reads: a bf16 sum over `gigabytes`, timed by CUDA events, fastest of `repeats`
    after one untimed run. Measured once per process (about 20 ms); None where the GPU has no room left for it."""
    try:
        data = torch.ones(int(gigabytes * 1e9) // 2, dtype=torch.bfloat16, device=f"cuda:{device}")
    except torch.cuda.OutOfMemoryError:
        return None
    data.sum(dtype=torch.float32)
    fastest = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        data.sum(dtype=torch.float32)
        end.record()
        end.synchronize()
        fastest = min(fastest, start.elapsed_time(end) / 1e3)
    size = data.numel() * data.element_size()
    del data
    return size / fastest


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights a forward pass reads: every parameter (and quantization state), counted once even
    where tied; the embedding table is read in full only where it doubles as the output projection."""
    seen, total = set(), 0
    embedding = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    tied = embedding is not None and model.get_output_embeddings() is not None and \
        model.get_output_embeddings().weight is embedding
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen or (tensor is embedding and not tied):
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def kv_bytes_per_position(model: torch.nn.Module) -> int:
    """Bytes of keys and values one cached position holds, over all layers."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 2
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


def decode_efficiency(model: torch.nn.Module, counters: dict[str, int], round_seconds: float, gpu_name: str,
                      measured_bandwidth: float | None = None) -> DecodeEfficiency | None:
    """None off the GPU, for a GPU whose data-sheet bandwidth is not known, or for a case that counts no forward
    passes."""
    peak = peak_bandwidth(gpu_name)
    passes = counters.get("forward_passes", 0)
    if peak is None or not passes or round_seconds <= 0:
        return None
    read = passes * weight_bytes(model) + counters.get("kv_positions_read", 0) * kv_bytes_per_position(model)
    return DecodeEfficiency(counters.get("generated_tokens", 0) / round_seconds, read / round_seconds, peak, gpu_name,
                            measured_bandwidth)


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters a token is multiplied by: every floating weight of two or more dimensions, the input embedding
    (a lookup) only where it doubles as the output projection."""
    embedding = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = embedding is not None and output is not None and output.weight is embedding
    seen, total = set(), 0
    for tensor in model.parameters():
        if id(tensor) in seen or tensor.dim() < 2 or not tensor.is_floating_point() or (tensor is embedding and not tied):
            continue
        seen.add(id(tensor))
        total += tensor.numel()
    return total


def compute_efficiency(model: torch.nn.Module, counters: dict[str, int], round_seconds: float,
                       gpu_name: str) -> ComputeEfficiency | None:
    """2 x matmul parameters x processed tokens per second of round, against the GPU's bf16 peak; None off a known
    GPU, for a model that is not bf16 (a quantized one's packed weights do not count as parameters), or for a case
    that counts no processed tokens.

    Where the counters say how many positions went through the output projection (`head_tokens`: teacher forcing
    keeps the logits of its scored positions only), the projection is counted for those alone; otherwise for
    every processed token, which overstates the products of a pass that keeps few logits (by 15% for the 1B
    profile's teacher forcing at 116 positions a row, 33 of them kept)."""
    peak = peak_bf16_flops(gpu_name)
    tokens = counters.get("processed_tokens", 0)
    if peak is None or not tokens or round_seconds <= 0 or model.dtype != torch.bfloat16:
        return None
    products = matmul_parameters(model) * tokens
    if "head_tokens" in counters:
        head = model.get_output_embeddings().weight.numel()
        products -= head * (tokens - counters["head_tokens"])
    return ComputeEfficiency(2 * products / round_seconds, peak, gpu_name)


def efficiency_figures(model: torch.nn.Module, counters: dict[str, int], seconds: float, gpu_name: str,
                       measured_bandwidth: float | None = None) -> dict[str, dict]:
    """The work in `counters`, done in `seconds`, against its limit: work that generates tokens (decode) against the
    memory bandwidth ("decode"), work that generates none (prefill: teacher forcing, a feature pass) against the bf16
    peak ("compute"); {} where the GPU or the counters allow neither."""
    if counters.get("generated_tokens"):
        figures = decode_efficiency(model, counters, seconds, gpu_name, measured_bandwidth)
        return {"decode": figures.to_dict()} if figures is not None else {}
    figures = compute_efficiency(model, counters, seconds, gpu_name)
    return {"compute": figures.to_dict()} if figures is not None else {}


__all__ = ["PEAK_BANDWIDTH", "PEAK_BF16_FLOPS", "ComputeEfficiency", "DecodeEfficiency", "compute_efficiency",
           "decode_efficiency", "efficiency_figures", "kv_bytes_per_position", "measured_read_bandwidth",
           "matmul_parameters", "peak_bandwidth", "peak_bf16_flops", "weight_bytes"]
