"""attention=sdpa_fa against sdpa and eager: prefill time and agreement at long contexts, and what the kernel refuses.

    python -m research.studies.flash_attention_study --model random:llama-3.2-1b --device cuda

One forward pass over a batch of prompts (what scoring's teacher forcing and detection's feature pass do) is timed
per attention implementation, context length and batch: rows of equal length (no mask is passed, so the flash
kernel may run) and rows padded to the longest (a mask: on CUDA the flash kernel refuses it, and sdpa_fa says so).
Each time is the median of `--repeats` passes after a warm-up, synchronized. TFLOP/s counts the matrix products of
the weights (2 x parameters x tokens) and of attention (4 x layers x hidden x tokens x context / 2, causal).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.models.loading import LoadSpec, default_dtype, load_model
from harness.pipelines.attention import SDPA_FA, KernelRefused, attention_implementation

IMPLEMENTATIONS = ("eager", "sdpa", SDPA_FA)


def batch(vocab: int, rows: int, length: int, padded: bool, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(length * 1000 + rows)
    ids = torch.randint(3, vocab, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    if padded:  # every other row a quarter shorter, padded on the left
        mask[1::2, : length // 4] = 0
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def timed(model, inputs: dict, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        logits = model(**inputs).logits  # warm-up
        seconds = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            logits = model(**inputs).logits
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), logits.float()


def flops(model, rows: int, length: int) -> float:
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    attention = 4 * config.num_hidden_layers * config.hidden_size * rows * length * length / 2
    return 2 * parameters * rows * length + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:llama-3.2-1b")
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--lengths", type=int, nargs="+", default=(512, 1024, 2048))
    parser.add_argument("--rows", type=int, nargs="+", default=(1, 8))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    loaded = load_model(LoadSpec(args.model, args.device, default_dtype(args.device)))
    model, vocab = loaded.model, loaded.model.config.vocab_size
    print(f"{args.model} on {args.device} ({default_dtype(args.device)}), torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""))
    print("| context | rows | padded | attention | ms | TFLOP/s | max abs logit diff vs sdpa | outcome |")
    print("| ---: | ---: | --- | --- | ---: | ---: | ---: | --- |")
    for length in args.lengths:
        for rows in args.rows:
            for padded in ((False, True) if rows > 1 else (False,)):
                inputs = batch(vocab, rows, length, padded, args.device)
                reference = None
                for implementation in ("sdpa", *(i for i in IMPLEMENTATIONS if i != "sdpa")):
                    try:
                        with attention_implementation(model, implementation):
                            seconds, logits = timed(model, inputs, args.repeats, args.device)
                    except KernelRefused as refused:
                        print(f"| {length} | {rows} | {padded} | {implementation} | — | — | — | refused: "
                              f"{str(refused).split(': ', 2)[-1][:160]} |", flush=True)
                        continue
                    except torch.OutOfMemoryError:
                        print(f"| {length} | {rows} | {padded} | {implementation} | — | — | — | out of memory |", flush=True)
                        torch.cuda.empty_cache()
                        continue
                    real = inputs["attention_mask"].bool()
                    diff = 0.0 if reference is None else float((logits - reference)[real].abs().max())
                    reference = logits if reference is None else reference
                    print(f"| {length} | {rows} | {padded} | {implementation} | {1000 * seconds:.2f} | "
                          f"{flops(model, rows, length) / seconds / 1e12:.1f} | {diff:.3g} | ran |", flush=True)


if __name__ == "__main__":
    main()
