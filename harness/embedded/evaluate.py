"""Held-out accuracy of an embedded model per suite: the table of its model card.

    python -m harness.embedded.evaluate                      # the reference model, 200 items a suite
    python -m harness.embedded.evaluate --model harness/embedded/models/sibling
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.answers import extract_answer, normalize_text
from harness.tasks import SUITES, TaskItem, check, generate_suite

CARD_SEED = 0  # the held-out items the model card reports
SELECTION_SEED = 1  # other held-out items, used to choose a training checkpoint


@dataclass(frozen=True)
class SuiteScore:
    suite: str
    n: int
    accuracy: float
    # context_qa only: what the model answered on items whose context conflicts with memory
    conflict_n: int = 0
    faithful: float | None = None
    hallucinated: float | None = None


@torch.no_grad()
def greedy_responses(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions, batched with left padding, longest prompts first."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    responses: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True).to(device)
        output = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for index, text in zip(chunk, texts):
            responses[index] = text
    return responses


def _conflict_breakdown(items: list[TaskItem], responses: list[str]) -> dict:
    conflicts = [(item, r) for item, r in zip(items, responses) if item.metadata.get("conflict")]
    if not conflicts:
        return {}
    answers = [extract_answer(r, "text") for _, r in conflicts]
    faithful = sum(a == normalize_text(item.answer) for (item, _), a in zip(conflicts, answers))
    memory = sum(a == normalize_text(item.metadata["memory_answer"]) for (item, _), a in zip(conflicts, answers))
    n = len(conflicts)
    return {"conflict_n": n, "faithful": faithful / n, "hallucinated": memory / n}


def score_suite(model, tokenizer, suite: str, n: int, seed: int, batch_size: int = 64) -> SuiteScore:
    items = generate_suite(suite, n, seed=seed, split="test")
    responses = greedy_responses(model, tokenizer, [i.prompt for i in items], SUITES[suite].max_new_tokens, batch_size)
    accuracy = sum(check(item, r) for item, r in zip(items, responses)) / n
    return SuiteScore(suite, n, accuracy, **_conflict_breakdown(items, responses))


def evaluate(model, tokenizer, n: int, seed: int = CARD_SEED) -> list[SuiteScore]:
    was_training = model.training
    model.eval()
    try:
        return [score_suite(model, tokenizer, suite, n, seed) for suite in SUITES]
    finally:
        model.train(was_training)


def format_table(scores: list[SuiteScore]) -> str:
    lines = [
        "| suite | held-out items | accuracy (greedy, exact match) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {s.suite} | {s.n} | {s.accuracy:.3f} |" for s in scores]
    for s in scores:
        if s.conflict_n:
            lines.append(
                f"\n{s.suite} conflict subset ({s.conflict_n} items whose context contradicts memory): "
                f"faithful to the context {s.faithful:.3f}, answered from memory (hallucinated) {s.hallucinated:.3f}, "
                f"other {1 - s.faithful - s.hallucinated:.3f}"
            )
    return "\n".join(lines)


def _parse_args() -> argparse.Namespace:
    from harness.embedded import REFERENCE_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REFERENCE_MODEL, help="local model directory")
    parser.add_argument("--n", type=int, default=200, help="held-out items per suite")
    parser.add_argument("--seed", type=int, default=CARD_SEED)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = _parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device)
    print(format_table(evaluate(model, tokenizer, args.n, args.seed)))


if __name__ == "__main__":
    main()
