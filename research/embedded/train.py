"""The recipe that trains the embedded models (fixed seeds; CPU or CUDA).

    python -m research.embedded.train --output runs/reference --seed 0
    python -m research.embedded.train --output runs/sibling --seed 1

Every `--eval-every` steps the model is scored on held-out items (seed SELECTION_SEED, not the
items the model card reports); with `--select` the checkpoint kept is the latest one that meets
the most accuracy targets, so the shipped model has room to move both ways. The training log,
with every evaluation, is written next to the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from harness.models.embedded.tokenizer import build_tokenizer
from research.embedded.corpus import MIX, Example, example_stream
from research.embedded.evaluate import SELECTION_SEED, SuiteScore, evaluate

IGNORE_INDEX = -100
_DATA_WORKERS = 3
# Checkpoints are chosen on 100-item estimates: demand this much room inside each target first.
_SELECTION_MARGIN = 0.04


@dataclass(frozen=True)
class TrainSettings:
    output: Path
    seed: int = 0
    steps: int = 12000
    batch_size: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 300
    weight_decay: float = 0.01
    eval_every: int = 1000
    eval_items: int = 100
    select: bool = True
    device: str = "auto"
    time_limit: float = 0.0  # seconds; stop early (and still select and save) once passed; 0 = none


def model_config(tokenizer) -> LlamaConfig:
    """A small Llama (2.4M parameters, ~9.6 MB in fp32) with grouped-query attention."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def encode_batch(examples: list[Example], tokenizer, device: torch.device) -> dict[str, torch.Tensor]:
    """BOS + prompt + completion + EOS, right-padded; loss only on the completion and EOS."""
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    rows = [p + c + [tokenizer.eos_token_id] for p, c in zip(prompts, completions)]
    width = max(len(r) for r in rows)
    input_ids = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]
    labels = [[IGNORE_INDEX] * len(p) + r[len(p) :] + [IGNORE_INDEX] * (width - len(r)) for p, r in zip(prompts, rows)]
    attention_mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return {
        "input_ids": torch.tensor(input_ids, device=device),
        "attention_mask": torch.tensor(attention_mask, device=device),
        "labels": torch.tensor(labels, device=device),
    }


class _Batches(torch.utils.data.IterableDataset):
    """Encoded training batches; each data-loader worker draws from its own seeded stream."""

    def __init__(self, seed: int, batch_size: int) -> None:
        self.seed, self.batch_size = seed, batch_size

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        stream = example_stream(self.seed if worker is None else self.seed * 1000 + worker.id)
        tokenizer = build_tokenizer()
        while True:
            yield encode_batch(list(islice(stream, self.batch_size)), tokenizer, torch.device("cpu"))


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def targets_met(scores: list[SuiteScore], margin: float = 0.0) -> int:
    """How many of the model card's three accuracy targets a checkpoint meets, `margin` inside each bound."""
    by_suite = {s.suite: s for s in scores}
    accuracies = [s.accuracy for s in scores]
    high = any(a >= 0.90 + margin for a in accuracies)
    middle = sum(0.30 + margin <= a <= 0.85 - margin for a in accuracies) >= 2
    qa = by_suite.get("context_qa")
    mixed = qa is not None and qa.conflict_n > 0 and min(qa.faithful, qa.hallucinated) >= 0.2 + margin
    return int(high) + int(middle) + int(mixed)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(settings: TrainSettings) -> dict:
    device = _resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(model_config(tokenizer)).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.98), weight_decay=settings.weight_decay
    )
    # Workers keep a GPU fed; on CPU they would only take cores from the model.
    workers = _DATA_WORKERS if device.type == "cuda" else 0
    batches = iter(torch.utils.data.DataLoader(_Batches(settings.seed, settings.batch_size), batch_size=None, num_workers=workers))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    evaluations: list[dict] = []
    # Ranked by targets met with a safety margin, then without, then by later step.
    best: tuple[tuple[int, int, int], dict] | None = None
    started = time.perf_counter()

    for step in range(1, settings.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step - 1, settings)
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with autocast:
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} elapsed {time.perf_counter() - started:.0f}s", flush=True)
        out_of_time = settings.time_limit > 0 and time.perf_counter() - started > settings.time_limit
        if step % settings.eval_every == 0 or step == settings.steps or out_of_time:
            scores = evaluate(model, tokenizer, settings.eval_items, seed=SELECTION_SEED)
            rank = (targets_met(scores, _SELECTION_MARGIN), targets_met(scores), step)
            evaluations.append({"step": step, "loss": loss.item(), "rank": rank, "scores": [asdict(s) for s in scores]})
            print(json.dumps(evaluations[-1]), flush=True)
            if best is None or rank >= best[0]:
                best = (rank, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        if out_of_time:
            break

    elapsed = time.perf_counter() - started
    selected_step = step
    if settings.select and best is not None:
        model.load_state_dict(best[1])
        selected_step = best[0][2]
    log = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "mix": MIX,
        "steps_trained": step,
        "selected_step": selected_step,
        "train_seconds": round(elapsed, 1),
        "evaluations": evaluations,
    }
    _save(model, tokenizer, settings.output, log)
    return log


def _save(model, tokenizer, output: Path, log: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu", dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(output)  # safetensors
    tokenizer.save_pretrained(output)
    (output / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")


def _parse_args() -> TrainSettings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainSettings(output=Path("."))
    parser.add_argument("--output", type=Path, required=True)
    for name in ("seed", "steps", "batch_size", "warmup_steps", "eval_every", "eval_items"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--time-limit", type=float, default=defaults.time_limit, help="seconds of training at most")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--no-select", dest="select", action="store_false", help="keep the last checkpoint")
    parser.add_argument("--device", default=defaults.device)
    return TrainSettings(**vars(parser.parse_args()))


if __name__ == "__main__":
    train(_parse_args())
