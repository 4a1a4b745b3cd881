"""What the pipelines share of decoding: batching plans, where each row's answer ends, and counting forward passes.

Pipelines import this module (and static_greedy, cache_api, attention), never each other.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from harness.pipelines.progress import advance
from harness.pipelines.static_greedy import greedy_static
from harness.tasks import TaskItem
from harness.tasks.answers import extract_boxed
from harness.toggles import is_on, value_of

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


def decoding_toggles(variant: dict[str, str]) -> dict[str, bool | str]:
    """The decoding toggles a variant sets, as the settings fields every decoding pipeline names alike."""
    return {"kv_cache": is_on(variant, "kv_cache"), "early_stop": is_on(variant, "early_stop"),
            "batching": value_of(variant, "batching"), "compile": is_on(variant, "compile")}


# --- greedy answers to task items --------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated: greedy, with or without the KV cache, early stopping, batching and compile."""

    max_new_tokens: int
    kv_cache: bool = False
    early_stop: bool = False
    batching: str = "1"  # "1", "static8" or "dynamic"
    token_budget: int = 2048  # dynamic batching: rows x (longest prompt + max_new_tokens) per bucket
    compile: bool = False  # a static KV cache, and the decoding step compiled with CUDA graphs (static_greedy)

    @classmethod
    def from_variant(cls, variant: dict[str, str], max_new_tokens: int, **overrides) -> GenerationSettings:
        return cls(max_new_tokens=max_new_tokens, **decoding_toggles(variant), **overrides)


def plan_batches(items: list[TaskItem], tokenizer, settings: GenerationSettings) -> list[list[int]]:
    """Item indices per generate call; a row's length is its prompt plus max_new_tokens."""
    lengths = [len(tokenizer(item.prompt)["input_ids"]) + settings.max_new_tokens for item in items]
    return plan_by_length(lengths, settings.batching, settings.token_budget)


def _generate_batch(model, tokenizer, batch: list[TaskItem], settings: GenerationSettings) -> tuple[list[str], dict[str, int]]:
    encoded = tokenizer([item.prompt for item in batch], return_tensors="pt", padding=True).to(model.device)
    width = encoded["input_ids"].shape[1]
    # Only early stopping needs a look at every step; without it every row runs to the limit, and where its
    # answer ends (the first EOS) is read afterwards, with no GPU sync per step to slow a compiled decode.
    tracker = RowTracker(tokenizer, width, [item.answer_type for item in batch], stop=True) if settings.early_stop else None
    output = _decode(model, tokenizer, encoded, tracker, settings)
    new = output[:, width:]
    steps = new.shape[1]
    ends = tracker.ends if tracker else first_eos_ends(new, tokenizer.eos_token_id)
    generated = [ends[row] if settings.early_stop and ends[row] else steps for row in range(len(batch))]
    texts = [tokenizer.decode(new[row, : ends[row] or steps], skip_special_tokens=True) for row in range(len(batch))]
    counters = {
        "generated_tokens": sum(generated),
        "padded_steps": steps * len(batch) - sum(generated),
        "prompt_tokens": int(encoded["attention_mask"].sum()),
    }
    return texts, counters


def _decode(model, tokenizer, encoded, tracker: RowTracker | None, settings: GenerationSettings) -> torch.Tensor:
    """Greedy tokens, prompt included: transformers' generate, or with compile=on the static-cache loop whose step
    is compiled into CUDA graphs."""
    if settings.compile:
        if not settings.kv_cache:
            raise ValueError("compile=on needs kv_cache=on: the static cache it compiles for is a KV cache")
        return greedy_static(model, encoded["input_ids"], encoded["attention_mask"], settings.max_new_tokens, tracker)
    return model.generate(
        **encoded,
        do_sample=False,
        max_new_tokens=settings.max_new_tokens,
        use_cache=settings.kv_cache,
        eos_token_id=tokenizer.eos_token_id if settings.early_stop else None,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([tracker] if tracker else []),
    )


def generate_answers(model, tokenizer, items: list[TaskItem], settings: GenerationSettings) -> tuple[list[str], dict[str, int]]:
    """Each item's greedy answer text, in item order, with the generation's work counters; progress per batch."""
    texts: list[str] = [""] * len(items)
    totals = {"generated_tokens": 0, "padded_steps": 0, "prompt_tokens": 0}
    for batch in plan_batches(items, tokenizer, settings):
        batch_texts, counters = _generate_batch(model, tokenizer, [items[i] for i in batch], settings)
        for index, text in zip(batch, batch_texts):
            texts[index] = text
        for name, value in counters.items():
            totals[name] += value
        advance(len(batch))
    return texts, totals
