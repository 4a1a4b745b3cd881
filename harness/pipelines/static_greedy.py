"""Decoding with a static KV cache and the one-token step compiled into CUDA graphs (compile=on).

Greedy for eval and scoring; search samples its rollouts with it through seeded noise among the logits processors.

transformers' `generate` compiles the same step for a static cache, but its loop asks the GPU after every step
whether all rows have finished. The host then waits out each step before it queues the next, and at batch 1 a
1B model spends more of its step in that wait and generate's Python than in reading its weights. This loop
queues every step without reading anything back, unless a stopping criterion has to look at the tokens
(early_stop), and keeps every tensor the compiled step sees at one shape: the attention mask spans the whole
cache from the start, and the cache itself is reused from call to call, so the CUDA graphs are recorded once.

It runs the model's own forward (transformers' attention, cache and masks); only the loop around it is ours.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import (
    CompileConfig,
    LogitsProcessorList,
    StaticCache,
    StoppingCriteria,
)

from harness.pipelines.attention import GROUPED_SDPA, attention_implementation
from harness.pipelines.cache_api import cache_keyword, last_logits
from harness.pipelines.phases import timed_phase
from harness.records import DECODE_STEPS

# The cache's length is rounded up to this, so that prompts of nearby lengths share one compiled shape.
CACHE_LENGTH_STEP = 128
# torch.compile with CUDA graphs (what mode="reduce-overhead" sets), and inductor's coordinate-descent tuning, which
# also turns batch-1 matrix-vector products into Triton reductions tuned for bandwidth: on the 1B profile on an
# H200, 739 tokens/s at batch 1 against 616 without it (research/gpu/decode-options/). torch.compile takes a mode or
# options, not both.
COMPILE_CONFIG = CompileConfig(mode=None, options={"triton.cudagraphs": True, "coordinate_descent_tuning": True})
# The attention of compiled steps of more than one row, where the model was loaded with sdpa. The static cache always
# passes a mask, and with a mask transformers' sdpa path expands the key/value heads to the query's before the call,
# copying each layer's cache twice a step; compiled, eager attention does not. Batch-32 steps of the 1B profile on an
# H200: 1.95 ms eager against 2.35 ms sdpa (research/gpu/batch32-attention/). At batch 1 sdpa was faster (739 tokens/s
# against 713), so single rows keep it (SINGLE_STEP_ATTENTION). The prefill keeps the loaded attention too.
# attention.GROUPED_SDPA avoids the copy within sdpa. Timed in one process on an H100, turn for turn, its batch-32
# steps took 1.996 and 1.981 ms against eager's 2.155 and 2.158, so batched steps take it; at batch 1 it tied sdpa
# (1.495 against 1.499 ms), so single rows keep sdpa (research/gpu/h100/grouped-same-process.log).
BATCHED_STEP_ATTENTION = {"sdpa": GROUPED_SDPA}
SINGLE_STEP_ATTENTION: dict[str, str] = {}


def cache_length(tokens: int) -> int:
    return -(-tokens // CACHE_LENGTH_STEP) * CACHE_LENGTH_STEP


def _reused_cache(model, rows: int, length: int) -> StaticCache:
    """One static cache per (rows, length), kept on the model: new tensors each call would make the CUDA
    graphs record again, as their addresses are part of the graph."""
    caches = model.__dict__.setdefault("_harness_static_caches", {})
    cache = caches.get((rows, length))
    if cache is None:
        cache = caches[(rows, length)] = StaticCache(config=model.config, max_cache_len=length)
    else:
        cache.reset()
    return cache


def _forward_arguments(model, cache: StaticCache, start: torch.Tensor) -> dict:
    """The cache under the name this transformers version takes, and, where the forward still takes
    `cache_position` (versions before the cache tracked its own length), where the new tokens go."""
    parameters = inspect.signature(model.forward).parameters
    arguments = {cache_keyword(model): cache, "use_cache": True}
    if "cache_position" in parameters:
        arguments["cache_position"] = start
    return arguments | last_logits(model, 1)  # the prefill's logits at the last position only


def _pick(logits: torch.Tensor, seen: torch.Tensor | None, processors: LogitsProcessorList | None) -> torch.Tensor:
    """The next token of each row, [rows, 1]: as generate, processors see fp32 logits, and fp32 keeps a bf16 argmax."""
    scores = logits[:, -1].float()
    if processors is not None:
        scores = processors(seen, scores)
    return scores.argmax(-1, keepdim=True)


def _greedy_step(model):
    """The one-token forward and the argmax of its fp32 logits, compiled into one set of CUDA graphs and kept on the
    model. Outside the graph the argmax was a kernel of its own (27 us of a 1.35 ms step of the 1B profile at batch
    1), after a copy of the logits to fp32.

    The graph holds the class's forward; the model's forward pre-hooks (the pipelines' counters) run before it,
    eagerly, as `model(...)` runs them. Traced into the graph, a hook's Python state would become a guard, and every
    step would compile again until dynamo gave up and ran the step eagerly."""
    compiled = model.__dict__.get("_harness_greedy_step")
    if compiled is None:
        forward = type(model).forward

        def greedy(**inputs) -> torch.Tensor:
            return _pick(forward(model, **inputs).logits, None, None)

        compiled = model.__dict__["_harness_greedy_step"] = torch.compile(greedy, **COMPILE_CONFIG.to_dict())

    def step(**inputs) -> torch.Tensor:
        _run_forward_pre_hooks(model, inputs)
        return compiled(**inputs)

    return step


def _run_forward_pre_hooks(model, inputs: dict) -> None:
    for key, hook in model._forward_pre_hooks.items():
        changed = hook(model, (), inputs) if key in model._forward_pre_hooks_with_kwargs else hook(model, ())
        if changed is not None:
            raise RuntimeError(f"a forward pre-hook on the model changes its inputs ({hook!r}); compile=on's greedy step "
                               "runs hooks that only observe them")


@dataclass
class StaticDecode:
    tokens: torch.Tensor  # prompt and continuation, [rows, width + steps]
    first_logits: torch.Tensor  # the raw next-token logits after the prompt, [rows, vocab], fp32


@torch.no_grad()
def decode_static(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  stopping: StoppingCriteria | None = None, processors: LogitsProcessorList | None = None,
                  compiled: bool | None = None) -> StaticDecode:
    """Decode `max_new_tokens` steps, fewer only where `stopping` says every row is done, each token the argmax of
    the step's fp32 logits after `processors` (none: greedy; seeded Gumbel noise among them: sampling), as generate
    with do_sample=False and these logits processors. Rows are left-padded; EOS does not stop a row (as generate
    with eos_token_id=None): the caller reads each answer up to its end. The step is compiled on a GPU (CUDA graphs
    are what it is for) and runs as plain Python elsewhere, unless `compiled` says otherwise."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    rows, width = input_ids.shape
    device = input_ids.device
    compiled = device.type == "cuda" if compiled is None else compiled
    length = cache_length(width + max_new_tokens)
    cache = _reused_cache(model, rows, length)
    # Ones beyond the prompt: causality hides the positions not yet written, and the mask keeps one shape.
    mask = torch.ones(rows, length, dtype=attention_mask.dtype, device=device)
    mask[:, :width] = attention_mask
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    tokens = torch.empty(rows, width + max_new_tokens, dtype=input_ids.dtype, device=device)
    tokens[:, :width] = input_ids

    start = torch.arange(width, device=device)
    # The prefill runs eagerly: its shape changes with the prompt.
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   **_forward_arguments(model, cache, start)).logits
    first_logits = logits[:, -1].float()
    # Greedy and compiled, the argmax joins the step's graph: the logits never leave it.
    fused = compiled and processors is None and not model._forward_hooks  # forward hooks would see no logits
    step = _greedy_step(model) if fused else model.get_compiled_call(COMPILE_CONFIG) if compiled else model.__call__
    # The step's inputs, updated in place: the compiled step sees the same tensors every time.
    token, position, at = _pick(logits, tokens[:, :width], processors), positions[:, -1:] + 1, start[-1:] + 1
    arguments = _forward_arguments(model, cache, at)
    done = 0
    with attention_implementation(model, step_attention(model, rows, compiled)), timed_phase(DECODE_STEPS, device) as work:
        while True:
            tokens[:, width + done] = token[:, 0]
            done += 1
            if done == max_new_tokens or (stopping is not None and bool(stopping(tokens[:, : width + done], None).all())):
                break
            if compiled:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are read: their buffers may be reused
            output = step(input_ids=token, attention_mask=mask, position_ids=position, **arguments)
            position += 1
            at += 1
            token.copy_(output if fused else _pick(output.logits, tokens[:, : width + done], processors))
        # every step reads the weights once and, through the mask, the whole cache of every row
        work.update(forward_passes=done - 1, generated_tokens=rows * (done - 1), kv_positions_read=(done - 1) * rows * length)
    return StaticDecode(tokens[:, : width + done], first_logits)


def step_attention(model, rows: int, compiled: bool) -> str:
    """The attention implementation the compiled one-token steps run with (BATCHED_STEP_ATTENTION for several rows,
    SINGLE_STEP_ATTENTION for one); uncompiled steps keep the loaded one."""
    loaded = model.config._attn_implementation
    steps = BATCHED_STEP_ATTENTION if rows > 1 else SINGLE_STEP_ATTENTION
    return steps.get(loaded, loaded) if compiled else loaded


def greedy_static(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  stopping: StoppingCriteria | None = None, compiled: bool | None = None) -> torch.Tensor:
    """Prompt and greedy continuation, [rows, width + steps] (see `decode_static`)."""
    return decode_static(model, input_ids, attention_mask, max_new_tokens, stopping, compiled=compiled).tokens


__all__ = ["BATCHED_STEP_ATTENTION", "SINGLE_STEP_ATTENTION", "CACHE_LENGTH_STEP", "COMPILE_CONFIG", "StaticDecode", "cache_length", "decode_static",
           "greedy_static", "step_attention"]
