"""Where a compiled decode step's time goes: the host's time to queue it against the GPU's time to run it.

    python -m research.studies.decode_study --model random:llama-3.2-1b --device cuda
    python -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --mode max-autotune
    python -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --option coordinate_descent_tuning=0
    python -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --batch 32 --batched-step-attention sdpa
    python -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --single-step-attention grouped_sdpa
    python -m research.studies.decode_study --model random:llama-3.2-1b --device cuda --batch 32 \
        --batched-step-attention eager --batched-step-attention grouped_sdpa --turns 2

One prompt (or `--batch` copies of it), greedy, with the static-cache loop of compile=on
(`harness.pipelines.static_greedy`). The loop reads nothing back while it decodes, so the host runs ahead of the
GPU: the time until the last step is queued ("queued") against the time until the GPU has run it ("done").
Queued well below done means the GPU is the bound, not Python; then only faster kernels help.

By default the step is compiled as compile=on compiles it (`static_greedy.COMPILE_CONFIG`). `--mode` compiles it
in a torch.compile mode instead; `--option KEY=VALUE` with these inductor options (CUDA graphs kept on), as
`torch.compile(options=...)`; `coordinate_descent_tuning=0` is the step as compile=on compiled it before it
turned batch-1 matrix-vector products into tuned Triton reductions. `--bandwidth` first measures what this GPU
reads per second (`harness.measure.roofline.measured_read_bandwidth`). The table names the attention the steps ran with: at
batch > 1 compile=on steps attend with grouped_sdpa where the model has sdpa (`static_greedy.BATCHED_STEP_ATTENTION`),
unless `--batched-step-attention` names another; `--single-step-attention` does the same for batch 1, whose steps keep
sdpa.
`grouped_sdpa` (`harness.pipelines.attention`) is sdpa without the copy of the key/value heads. Named more than
once, the step attentions are timed in turn, `--turns` times over, in one process: on one GPU lease, which studies
run in separate processes (or on separate leases) cannot promise. "CUDA graphs skipped" counts the compiled graphs
inductor ran without CUDA graphs while the row was timed; a step so run is queued kernel by kernel.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch._dynamo.utils import counters
from transformers import CompileConfig

from harness.measure.roofline import measured_read_bandwidth
from harness.models.loading import LoadSpec, default_dtype, load_model, resolve_device
from harness.pipelines import static_greedy
from harness.pipelines.attention import GROUPED_SDPA
from harness.tasks import generate_suite


@dataclass(frozen=True)
class StepTimes:
    queued_ms: float  # per step, until the host has queued the last one
    done_ms: float  # per step, until the GPU has run the last one

    @property
    def tokens_per_second(self) -> float:
        return 1e3 / self.done_ms


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(model, encoded, steps: int, device: str, repeats: int = 3) -> StepTimes:
    """The fastest of `repeats` decodes, after two untimed ones (the first compiles)."""
    runs = []
    for index in range(repeats + 2):
        _synchronize(device)
        start = time.perf_counter()
        static_greedy.greedy_static(model, encoded["input_ids"], encoded["attention_mask"], steps)
        queued = time.perf_counter() - start
        _synchronize(device)
        if index >= 2:
            runs.append((queued, time.perf_counter() - start))
    return StepTimes(1e3 * min(q for q, _ in runs) / steps, 1e3 * min(d for _, d in runs) / steps)


def _compile_config(mode: str | None, options: list[str]) -> CompileConfig:
    if mode is not None:
        return CompileConfig(mode=mode)
    # torch.compile takes a mode or options, not both: options start from compile=on's own.
    defaults = torch._inductor.config.get_config_copy()
    parsed = dict(static_greedy.COMPILE_CONFIG.options or {})
    for option in options:
        key, _, value = option.partition("=")
        kind = type(defaults[key])  # KeyError names an option inductor does not have
        parsed[key] = value.lower() in ("1", "true") if kind is bool else kind(value)
    return CompileConfig(mode=None, options=parsed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, a speed profile (random:<arch>) or a model directory")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda compiles the step; cpu runs it as Python")
    parser.add_argument("--steps", type=int, default=128, help="tokens decoded per run")
    parser.add_argument("--mode", help="compile the step in this torch.compile mode (reduce-overhead, max-autotune) instead")
    parser.add_argument("--option", action="append", default=[], help="an inductor option KEY=VALUE for the step's compile (repeatable)")
    parser.add_argument("--batch", type=int, default=1, help="rows decoded at once (copies of the prompt)")
    parser.add_argument("--attention", choices=("sdpa", "eager"), help="the attention implementation (default: the loaded one)")
    step_choices = ("eager", "sdpa", GROUPED_SDPA)
    parser.add_argument("--batched-step-attention", choices=step_choices, action="append",
                        help="what the compiled steps of a batch attend with where the model has sdpa "
                             "(default: static_greedy.BATCHED_STEP_ATTENTION's choice); repeat it to time each in turn")
    parser.add_argument("--single-step-attention", choices=step_choices, action="append",
                        help="the same for steps of one row (default: static_greedy.SINGLE_STEP_ATTENTION's, sdpa)")
    parser.add_argument("--turns", type=int, default=1,
                        help="time the step attentions named this many times, alternating, in this one process")
    parser.add_argument("--no-cudnn-attention", action="store_true", help="keep sdpa off cuDNN's fused kernel")
    parser.add_argument("--bandwidth", action="store_true", help="first measure the GPU's read bandwidth")
    parser.add_argument("--profile", action="store_true", help="then the GPU kernels of one more decode, by time (torch.profiler)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.bandwidth and device == "cuda":
        print(f"measured read bandwidth: {measured_read_bandwidth() / 1e12:.2f} TB/s")
    static_greedy.COMPILE_CONFIG = _compile_config(args.mode, args.option)
    loaded = load_model(LoadSpec(args.model, device, default_dtype(device), compile=True))
    if args.attention:
        loaded.model.set_attn_implementation(args.attention)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
        # The kernel is picked while the step is traced, and inductor's on-disk caches do not key on this flag: a
        # graph an earlier process compiled with cuDNN was replayed (research/gpu/batch32-attention/b32-no-cudnn.log).
        torch._inductor.config.force_disable_caches = True
    encoded = loaded.tokenizer([generate_suite("math", n=1, seed=2)[0].prompt] * args.batch, return_tensors="pt").to(device)
    named = args.batched_step_attention if args.batch > 1 else args.single_step_attention
    print("| model | batch | compile | queued ms/step | done ms/step | tokens/s | CUDA graphs skipped | study s |\n"
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for _ in range(args.turns):
        for step_attention in named or [None]:
            print(study_row(loaded.model, encoded, args, step_attention))
    if args.profile:
        print(kernel_table(loaded.model, encoded, args.steps, device))


def study_row(model, encoded, args: argparse.Namespace, step_attention: str | None) -> str:
    """One timing of the decode, its compiled steps attending with `step_attention` (None: compile=on's choice)."""
    if step_attention is not None:
        steps = static_greedy.BATCHED_STEP_ATTENTION if args.batch > 1 else static_greedy.SINGLE_STEP_ATTENTION
        steps["sdpa"] = step_attention
    device = model.device.type
    # Inductor counts each compiled graph it leaves to run without CUDA graphs; such steps are queued kernel by kernel.
    skipped_before = counters["inductor"]["cudagraph_skips"]
    started = time.perf_counter()
    times = time_steps(model, encoded, args.steps, device)
    compiled_as = args.mode or " ".join(f"{k}={v}" for k, v in static_greedy.COMPILE_CONFIG.options.items())
    compiled_as = compiled_as if device == "cuda" else "not compiled"  # decode_static compiles on a GPU only
    compiled_as += f", {static_greedy.step_attention(model, args.batch, device == 'cuda')}"
    compiled_as += " without cuDNN" if args.no_cudnn_attention else ""
    return (f"| {args.model} | {args.batch} | {compiled_as} | {times.queued_ms:.3f} | {times.done_ms:.3f} "
            f"| {args.batch * times.tokens_per_second:,.0f} | {counters['inductor']['cudagraph_skips'] - skipped_before} "
            f"| {time.perf_counter() - started:.0f} |")


def kernel_table(model, encoded, steps: int, device: str, rows: int = 20) -> str:
    """The kernels of one decode after the timed ones (nothing left to compile), longest total first."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as trace:
        static_greedy.greedy_static(model, encoded["input_ids"], encoded["attention_mask"], steps)
        _synchronize(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = trace.key_averages().table(sort_by=key, row_limit=rows)
    return table + ("\n\n" + kernel_breakdown(trace.key_averages(), steps) if device == "cuda" else "")


# Kernel names by what they do: inductor names its kernels after the ops they fuse (a matrix product fused with a
# norm is a product: it reads the weights), cuBLAS's are nvjet/gemm/gemv, attention's name their backend.
KERNEL_KINDS = (("attention", ("sdpa", "attention", "flash", "fmha", "cudnn")),
                ("matrix products", ("mm", "gemm", "gemv", "nvjet", "splitk")))


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    for kind, marks in KERNEL_KINDS:
        if any(mark in lowered for mark in marks):
            return kind
    return "other"


def kernel_breakdown(events, steps: int) -> str:
    """GPU time per decode step by kind of kernel, and the kernels launched per step: the step's time less their sum
    is the GPU waiting between kernels."""
    kinds: dict[str, list[float]] = {}
    for event in events:
        # kernels only: the compiled graph's own row holds every kernel it launched, counted again
        if event.self_device_time_total <= 0 or event.key.startswith(("## Call", "aten::")) or "Buffer" in event.key:
            continue
        entry = kinds.setdefault(kernel_kind(event.key), [0.0, 0])
        entry[0] += event.self_device_time_total / 1e3 / steps  # ms per step
        entry[1] += event.count / steps
    lines = ["| kernels | ms/step | launches/step |", "| --- | ---: | ---: |"]
    lines += [f"| {kind} | {ms:.3f} | {count:.0f} |" for kind, (ms, count) in sorted(kinds.items())]
    lines.append(f"| all | {sum(ms for ms, _ in kinds.values()):.3f} | {sum(c for _, c in kinds.values()):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
