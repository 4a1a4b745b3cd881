"""AIME / MATH / GPQA-style accuracy runner: greedy answers (decoding.generate_answers), scored per item.

Toggles read here: kv_cache, early_stop, batching. Attention and quantization act on the model
before it arrives (see harness.models.loading).
"""

from __future__ import annotations

import torch

from harness.pipelines.decoding import (
    GenerationSettings,
    count_forward_passes,
    generate_answers,
)
from harness.records import PipelineOutput
from harness.tasks import TaskItem, check
from harness.tasks.answers import extract_answer

# The eval pipeline's settings are those of its generation (decoding.GenerationSettings).
EvalSettings = GenerationSettings


@torch.no_grad()
def run_eval(model, tokenizer, items: list[TaskItem], settings: EvalSettings) -> PipelineOutput:
    """Greedy answers for every item, scored by the item's checker, with deterministic work counters."""
    with count_forward_passes(model) as passes:
        texts, totals = generate_answers(model, tokenizer, items, settings)
    scores = [1.0 if check(item, text) else 0.0 for item, text in zip(items, texts)]
    return PipelineOutput(
        quality={"accuracy": sum(scores) / len(items)},
        counters={**totals, **passes},
        item_ids=[item.id for item in items],
        item_scores=scores,
        item_outputs=texts,
        item_answers=[extract_answer(text, item.answer_type) or "" for item, text in zip(items, texts)],
    )
