"""How steady callgrind's instruction counts are for a real pipeline round, and what a 25% slowdown adds to them.

    mkdir -p .bench-callgrind && valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=.bench-callgrind/callgrind.out.%p \\
        python research/studies/instruction_counts.py

One eval round of the embedded model (gpqa, 1 item, the cache on, fp32, one torch thread) is counted 3 times, then
3 times with the slowdown injection the gate study uses (a busy wait of 25% of the round's CPU time after it), each
round through harness.measure.timing's InstructionCounter, as `--bench-timer instructions` does.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.measure.inject import slowed  # noqa: E402
from harness.measure.timing import InstructionCounter  # noqa: E402
from harness.models.loading import LoadSpec, ModelCache  # noqa: E402
from harness.pipelines.eval import EvalSettings, run_eval  # noqa: E402
from harness.tasks import SUITES, generate_suite  # noqa: E402


def main() -> None:
    reason = InstructionCounter.unavailable_reason()
    if reason:
        raise SystemExit(reason)
    Path(InstructionCounter.OUT_DIR).mkdir(exist_ok=True)
    torch.set_num_threads(1)
    loaded = ModelCache().get(LoadSpec("embedded", "cpu", "float32"))
    items = generate_suite("gpqa", n=1, seed=0)
    settings = EvalSettings.from_variant({"kv_cache": "on"}, SUITES["gpqa"].max_new_tokens)

    def run():
        return run_eval(loaded.model, loaded.tokenizer, items, settings)

    run()  # warm-up
    counter = InstructionCounter()
    for label, call in (("as is", run), ("slowed 25%", slowed(run, 0.25, cpu_time=True))):
        counts = []
        for _ in range(3):
            counter.start()
            call()
            counts.append(counter.stop())
        spread = (max(counts) - min(counts)) / statistics.median(counts)
        print(f"{label}: median {statistics.median(counts):,.0f} instructions, spread (max-min)/median {100 * spread:.2f}%, "
              f"rounds {', '.join(f'{c:,}' for c in counts)}", flush=True)


if __name__ == "__main__":
    main()
