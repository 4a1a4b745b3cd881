"""What the pipelines share of decoding: batching plans, where each row's answer ends, and counting forward passes.

Pipelines import this module (and static_greedy, cache_api, attention), never each other.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from transformers import StoppingCriteria

from harness.tasks.answers import extract_boxed

_STATIC_BATCH = 8


_CHOICE_DONE = re.compile(r"answer is \(?[A-D]\)|answer:\s*\(?[A-D]\b", re.IGNORECASE)


def answer_complete(text: str, answer_type: str) -> bool:
    """Whether a response already holds a whole answer, so stopping now cannot cut it off."""
    if answer_type in ("number", "integer"):
        return extract_boxed(text) is not None
    if answer_type == "choice":
        return _CHOICE_DONE.search(text) is not None
    return "\n" in text.strip(" ")  # short text answers end with the line


class RowTracker(StoppingCriteria):
    """Records where each row's answer ends: at EOS, or with early_stop also once the answer is complete.

    Without early_stop nothing is stopped and the text is read up to the first EOS, so a stop rule
    that cuts answers shows as a quality loss of the early_stop variant against the reference.
    """

    def __init__(self, tokenizer, prompt_width: int, answer_types: list[str], stop: bool) -> None:
        self.tokenizer, self.prompt_width, self.answer_types, self.stop = tokenizer, prompt_width, answer_types, stop
        self.ends: list[int | None] = [None] * len(answer_types)  # new tokens up to and including the end

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_width :]
        for row, end in enumerate(self.ends):
            if end is not None:
                continue
            if new[row, -1].item() == self.tokenizer.eos_token_id:
                self.ends[row] = new.shape[1]
            elif self.stop and answer_complete(self.tokenizer.decode(new[row], skip_special_tokens=True), self.answer_types[row]):
                self.ends[row] = new.shape[1]
        finished = [end is not None for end in self.ends] if self.stop else [False] * len(self.ends)
        return torch.tensor(finished, dtype=torch.bool, device=input_ids.device)


def first_eos_ends(new: torch.Tensor, eos_token_id: int) -> list[int | None]:
    """Per row of generated tokens, the length up to and including the first EOS; None where there is none."""
    is_eos = (new == eos_token_id).cpu()
    return [int(row.nonzero()[0]) + 1 if row.any() else None for row in is_eos]


@contextmanager
def count_forward_passes(model: torch.nn.Module):
    """Counts forward calls, the tokens they process (prefill + decode + recomputation) and the key/value
    positions they attend to (rows x attended length: what a cached decode step reads, for the roofline)."""
    counts = {"forward_passes": 0, "processed_tokens": 0, "kv_positions_read": 0}

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counts["forward_passes"] += 1
        counts["processed_tokens"] += int(ids.numel()) if ids is not None else 0
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            counts["kv_positions_read"] += int(mask.numel())
        elif ids is not None:
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            past = cache.get_seq_length() if hasattr(cache, "get_seq_length") else 0
            counts["kv_positions_read"] += int(ids.shape[0] * (ids.shape[-1] + past))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


def plan_by_length(lengths: list[int], batching: str, token_budget: int) -> list[list[int]]:
    """Indices per batch: one each, fixed groups of 8, or length-sorted buckets of rows x longest <= token_budget."""
    if batching == "1":
        return [[i] for i in range(len(lengths))]
    if batching == "static8":
        return [list(range(i, min(i + _STATIC_BATCH, len(lengths)))) for i in range(0, len(lengths), _STATIC_BATCH)]
    if batching != "dynamic":
        raise ValueError(f"batching must be 1, static8 or dynamic, got {batching!r}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for index in order:
        # Sorted longest first, so a bucket's first row fixes its width.
        if buckets and (len(buckets[-1]) + 1) * lengths[buckets[-1][0]] <= token_budget:
            buckets[-1].append(index)
        else:
            buckets.append([index])
    return buckets

