"""Timing and memory of a pipeline run: warm-up, timed rounds, CUDA synchronization, peak memory.

The round timer is passed in (the plugin hands pytest-benchmark's fixture over), so there is one
clock and pytest-benchmark's JSON holds the same rounds this module reports. Judging is not done here.
"""

from __future__ import annotations

import gc
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.progress import WARM_UP
from harness.records import PipelineOutput, Speed

# timer(target, rounds, earlier, setup) -> seconds of every round, `earlier` (rounds already timed by the same
# clock) first; `setup` runs untimed before each round; target's result is kept by the caller.
RoundTimer = Callable[[Callable[[], object], int, list[float], Callable[[], None]], list[float]]
# progress(index, total): called before the warm-up (index WARM_UP) and before timed round index of total.
RoundHook = Callable[[int, int], None]

# Seconds of timed rounds a variant gets by default (see MeasureSettings.rounds_after).
DEFAULT_MIN_TIME = 10.0


class SpeedProbe:
    """A fixed piece of work timed just before every round: an index of how fast the machine is right then.

    A shared CPU's speed drifts by tens of percent over minutes (other tenants, memory traffic): measured
    here, a neighbour streaming memory on the other core made a variant's rounds 32-55% slower and this
    probe 42% slower. Dividing each round by its probe leaves 7-10% of that, so a speedup measured minutes
    after its reference, or a time measured on another day, stays comparable. The probe is the same work
    in every case of every session, whatever the model under test: 16 cached decode steps, batch 8, of a
    randomly initialized model of the embedded model's shape (Llama, 2.4M parameters, fp32).
    """

    def __init__(self, steps: int = 16, batch: int = 8, prompt: int = 48) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(hidden_size=192, intermediate_size=512, num_hidden_layers=6, num_attention_heads=6,
                             num_key_value_heads=2, head_dim=32, vocab_size=100, max_position_embeddings=512)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.model = LlamaForCausalLM(config).eval()
            self.prompt = torch.randint(3, 100, (batch, prompt))
        self.steps = steps
        self.seconds: list[float] = []
        self()  # the first call pays for lazy initialization; it is not kept
        self.seconds.clear()

    @torch.inference_mode()
    def __call__(self) -> None:
        start = time.perf_counter()
        output = self.model(self.prompt, use_cache=True)
        token = output.logits[:, -1:].argmax(-1)
        for _ in range(self.steps):
            output = self.model(token, past_key_values=output.past_key_values, use_cache=True)
            token = output.logits[:, -1:].argmax(-1)
        self.seconds.append(time.perf_counter() - start)


@dataclass(frozen=True)
class MeasureSettings:
    rounds: int = 3  # at least this many timed rounds ...
    min_time: float = 0.0  # ... and more, until the timed rounds add up to this many seconds ...
    max_rounds: int = 25  # ... but never more than this
    device: str = "cpu"

    def rounds_after(self, first_seconds: float) -> int:
        """How many rounds to time after a first one that took `first_seconds`.

        A 1-second round on a shared 2-core CPU varies by 5-15% from one round to the next, a 30-second
        one by ~2%: a time budget gives a fast variant the rounds that make its median as steady as a
        slow one's, which is what lets the gate tell a 25% slowdown from noise.
        """
        wanted = math.ceil(self.min_time / first_seconds) if first_seconds > 0 else self.rounds
        return min(max(self.rounds, wanted), max(self.rounds, self.max_rounds)) - 1


def _nothing() -> None:
    return None


def perf_counter_timer(target: Callable[[], object], rounds: int, earlier: list[float] | None = None,
                       setup: Callable[[], None] = _nothing) -> list[float]:
    """The fallback clock, for use outside pytest."""
    seconds = list(earlier or [])
    for _ in range(rounds):
        setup()
        start = time.perf_counter()
        target()
        seconds.append(time.perf_counter() - start)
    return seconds


def _process_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _no_progress(index: int, total: int) -> None:
    return None


def measure(
    run: Callable[[], PipelineOutput],
    warm_up: Callable[[], object],
    settings: MeasureSettings,
    timer: RoundTimer = perf_counter_timer,
    progress: RoundHook | None = None,
    probe: SpeedProbe | None = None,
) -> tuple[PipelineOutput, Speed]:
    """Warm up, then time full runs: a first round sizes the rest (`MeasureSettings.rounds_after`); the
    output is the last round's. With a `probe`, it is timed (untimed by `timer`) before every round.

    `progress` (e.g. CaseProgress.start_round) is told which round starts. Timed rounds mark
    themselves, since the timer owns the round loop: the mark (one bar redraw) is inside the round.
    """
    on_cuda = settings.device == "cuda"
    mark_round = progress or _no_progress
    planned = [settings.rounds]  # known once the first round has been timed
    mark_round(WARM_UP, planned[0])
    warm_up()
    outputs: list[PipelineOutput] = []

    def one_round() -> PipelineOutput:
        mark_round(len(outputs) + 1, planned[0])  # one output per round so far
        output = run()
        if on_cuda:
            torch.cuda.synchronize()  # the round ends when the GPU's work does
        outputs.append(output)
        return output

    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    gc.collect()  # the garbage of earlier cases is not this case's to collect
    setup = probe or _nothing
    if probe is not None:
        probe.seconds.clear()
    if settings.rounds == 1:  # one round asked for: nothing to size
        round_seconds = timer(one_round, 1, [], setup)
    else:
        first = perf_counter_timer(one_round, 1, setup=setup)
        planned[0] = 1 + settings.rounds_after(first[0])
        round_seconds = timer(one_round, planned[0] - 1, first, setup)
    if not outputs:
        raise RuntimeError("the round timer ran no round")
    if any(o.item_outputs != outputs[-1].item_outputs for o in outputs):
        raise RuntimeError("outputs differ between rounds of the same variant: the pipeline is not deterministic")
    output = outputs[-1]
    if on_cuda:
        peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    else:
        peak, kind = _process_peak_rss_bytes(), "cpu_process_peak_rss"
    speed = Speed(
        round_seconds=[float(s) for s in round_seconds],
        items_per_round=len(output.item_ids),
        tokens_per_round=int(output.counters.get("generated_tokens", 0)),
        peak_memory_bytes=int(peak),
        memory_kind=kind,
        probe_seconds=[float(s) for s in probe.seconds] if probe is not None else [],
    )
    return output, speed
