"""Held-out accuracy of an embedded model per suite: the table of its model card.

    python -m research.embedded.evaluate                      # the reference model, 200 items a suite
    python -m research.embedded.evaluate --model harness/models/embedded/models/sibling
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.pipelines.eval import EvalSettings, run_eval
from harness.tasks import SUITES, TaskItem, generate_suite
from harness.tasks.answers import extract_answer, normalize_text

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


def _conflict_breakdown(items: list[TaskItem], responses: list[str]) -> dict:
    conflicts = [(item, r) for item, r in zip(items, responses) if item.metadata.get("conflict")]
    if not conflicts:
        return {}
    answers = [extract_answer(r, "text") for _, r in conflicts]
    faithful = sum(a == normalize_text(item.answer) for (item, _), a in zip(conflicts, answers))
    memory = sum(a == normalize_text(item.metadata["memory_answer"]) for (item, _), a in zip(conflicts, answers))
    n = len(conflicts)
    return {"conflict_n": n, "faithful": faithful / n, "hallucinated": memory / n}


def score_suite(model, tokenizer, suite: str, n: int, seed: int, token_budget: int = 8192) -> SuiteScore:
    """Greedy accuracy through the eval pipeline, with every optimization that keeps the answers."""
    items = generate_suite(suite, n, seed=seed, split="test")
    settings = EvalSettings(SUITES[suite].max_new_tokens, kv_cache=True, early_stop=True, batching="dynamic",
                            token_budget=token_budget)
    output = run_eval(model, tokenizer, items, settings)
    return SuiteScore(suite, n, output.quality["accuracy"], **_conflict_breakdown(items, output.item_outputs))


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


def model_card(model_dir: Path, name: str, scores: list[SuiteScore], command: str) -> str:
    """The model card: what the model is, how it was trained, and the table a run just produced."""
    log = json.loads((model_dir / "training_log.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    settings = log["settings"]
    mix = ", ".join(f"{k} {v:.0%}" for k, v in log["mix"].items())
    stopped = f" (time limit {settings['time_limit']:.0f} s reached)" if log["steps_trained"] < settings["steps"] else ""
    return f"""# Embedded {name} model

A `LlamaForCausalLM` trained by this project's recipe on its own task suites, shipped so that
`pytest --benchmark` measures real accuracy on a machine with no network. Weights: `model.safetensors` (fp32).

| | |
| --- | --- |
| architecture | Llama: {config["num_hidden_layers"]} layers, hidden {config["hidden_size"]}, MLP {config["intermediate_size"]}, {config["num_attention_heads"]} heads / {config["num_key_value_heads"]} KV heads (grouped-query), RoPE, {config["max_position_embeddings"]} positions |
| parameters | {log["parameters"]:,} |
| tokenizer | character level, {config["vocab_size"]} tokens (`<pad>`, `<s>`, `</s>`, `<unk>`, newline, printable ASCII) |
| training | seed {settings["seed"]}, {log["steps_trained"]} steps of batch {settings["batch_size"]}{stopped}, AdamW lr {settings["learning_rate"]}, warm-up {settings["warmup_steps"]}, cosine; {log["train_seconds"]:.0f} s on {log["device"]} with torch {log["torch"]}; checkpoint kept: step {log["selected_step"]} |
| data mix | {mix} (train split of each suite only; held-out prompts never seen) |
| recipe | `python -m research.embedded.train --output DIR --seed {settings["seed"]} --steps {settings["steps"]} --eval-every {settings["eval_every"]} --time-limit {settings["time_limit"]:.0f}` |

## Held-out accuracy

Greedy decoding, fp32, exact match by each suite's checker, on held-out items (seed {CARD_SEED}; checkpoints
were chosen on other held-out items, seed {SELECTION_SEED}). Produced by `{command}`:

{format_table(scores)}

On conflict items, answering from memory is taught for "famous" entities (half the world's entities), as a
large model's strong priors beat its context; the rates above are measured, not assumed. Every evaluation
made during training is in `training_log.json`.
"""


def _parse_args() -> argparse.Namespace:
    from harness.models.embedded import REFERENCE_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REFERENCE_MODEL, help="local model directory")
    parser.add_argument("--n", type=int, default=200, help="held-out items per suite")
    parser.add_argument("--seed", type=int, default=CARD_SEED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--card", metavar="NAME", help="also write the model card README.md, titled NAME")
    return parser.parse_args()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = _parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(args.device)
    scores = evaluate(model, tokenizer, args.n, args.seed)
    print(format_table(scores))
    if args.card:
        command = f"python -m research.embedded.evaluate --model {args.model} --n {args.n} --seed {args.seed}"
        (args.model / "README.md").write_text(model_card(args.model, args.card, scores, command))


if __name__ == "__main__":
    main()
