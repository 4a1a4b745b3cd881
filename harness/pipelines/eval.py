"""AIME / MATH / GPQA-style accuracy runner: greedy `generate`, answer extraction, per-item results.

Toggles read here: kv_cache, early_stop, batching. Attention and quantization act on the model
before it arrives (see harness.models.loading).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StoppingCriteriaList

from harness.pipelines.decoding import (
    RowTracker,
    count_forward_passes,
    first_eos_ends,
    plan_by_length,
)
from harness.pipelines.progress import advance
from harness.pipelines.static_greedy import greedy_static
from harness.records import PipelineOutput
from harness.tasks import TaskItem, check
from harness.tasks.answers import extract_answer
from harness.toggles import is_on, value_of


@dataclass(frozen=True)
class EvalSettings:
    max_new_tokens: int
    kv_cache: bool = False
    early_stop: bool = False
    batching: str = "1"  # "1", "static8" or "dynamic"
    token_budget: int = 2048  # dynamic batching: rows x (longest prompt + max_new_tokens) per bucket
    compile: bool = False  # a static KV cache, and the decoding step compiled with CUDA graphs (static_greedy)

    @classmethod
    def from_variant(cls, variant: dict[str, str], max_new_tokens: int, **overrides) -> EvalSettings:
        return cls(
            max_new_tokens=max_new_tokens,
            kv_cache=is_on(variant, "kv_cache"),
            early_stop=is_on(variant, "early_stop"),
            batching=value_of(variant, "batching"),
            compile=is_on(variant, "compile"),
            **overrides,
        )


def plan_batches(items: list[TaskItem], tokenizer, settings: EvalSettings) -> list[list[int]]:
    """Item indices per generate call; a row's length is its prompt plus max_new_tokens."""
    lengths = [len(tokenizer(item.prompt)["input_ids"]) + settings.max_new_tokens for item in items]
    return plan_by_length(lengths, settings.batching, settings.token_budget)


def _generate_batch(model, tokenizer, batch: list[TaskItem], settings: EvalSettings) -> tuple[list[str], dict[str, int]]:
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


def _decode(model, tokenizer, encoded, tracker: RowTracker | None, settings: EvalSettings) -> torch.Tensor:
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


@torch.no_grad()
def run_eval(model, tokenizer, items: list[TaskItem], settings: EvalSettings) -> PipelineOutput:
    """Greedy answers for every item, scored by the item's checker, with deterministic work counters."""
    texts: list[str] = [""] * len(items)
    totals = {"generated_tokens": 0, "padded_steps": 0, "prompt_tokens": 0}
    with count_forward_passes(model) as passes:
        for batch in plan_batches(items, tokenizer, settings):
            batch_texts, counters = _generate_batch(model, tokenizer, [items[i] for i in batch], settings)
            for index, text in zip(batch, batch_texts):
                texts[index] = text
            for name, value in counters.items():
                totals[name] += value
            advance(len(batch))
    scores = [1.0 if check(item, text) else 0.0 for item, text in zip(items, texts)]
    return PipelineOutput(
        quality={"accuracy": sum(scores) / len(items)},
        counters={**totals, **passes},
        item_ids=[item.id for item in items],
        item_scores=scores,
        item_outputs=texts,
        item_answers=[extract_answer(text, item.answer_type) or "" for item, text in zip(items, texts)],
    )
