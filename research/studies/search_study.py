"""Figures of the search pipeline that a bench case cannot show on its own.

    python -m research.studies.search_study speedup --suite aime --n 4 --rounds 3
        naive search vs kv_cache + batched rollouts on the same run: time, the same tree, counters
        (`--compile`: also with compile=on, rollouts in the static-cache loop compiled into CUDA graphs)
    python -m research.studies.search_study budget --suite aime --n 200 --budgets 5 10 20
        search accuracy vs greedy accuracy on the same items, per rollout budget and reward

Both print a Markdown table and write it as JSON with `--json PATH`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace

from scipy import stats

from harness.models.loading import LoadSpec, default_dtype, load_model
from harness.pipelines.decoding import answer_complete
from harness.pipelines.eval import EvalSettings, run_eval
from harness.pipelines.search import (
    FORMAT_BONUS,
    SearchSettings,
    answer_reward,
    search_item,
    total_counters,
)
from harness.tasks import SUITES, TaskItem, check, generate_suite

_SAME_WORK = ("rollouts", "expansions", "nodes", "max_depth", "prompt_tokens", "generated_tokens", "padded_steps")


def format_reward(item: TaskItem, text: str) -> float:
    """A reward that does not know the answer: only whether a complete answer was written."""
    return FORMAT_BONUS * float(answer_complete(text, item.answer_type))


REWARDS = {"answer_key": answer_reward, "format_only": format_reward}


# --- speedup: same work, done faster ------------------------------------------------------------


@dataclass
class SpeedupFigures:
    suite: str
    items: int
    rollouts: int
    seconds: dict[str, list[float]]  # per side (naive, fast, and with --compile compiled), each round
    speedups: dict[str, float]  # median naive / median of the side
    same_trees: dict[str, bool]  # per side: the naive search's tree and answers, node for node
    counters: dict[str, dict[str, int]]


def _tree_signature(result) -> list[tuple]:
    signature, stack = [], [result.root]
    while stack:
        node = stack.pop()
        signature.append((tuple(node.token_ids), node.visits, round(node.value, 9)))
        stack.extend(node.children)
    return signature + [(result.text, result.reward)]


def _timed_search(model, tokenizer, items, settings):
    start = time.perf_counter()
    results = [search_item(model, tokenizer, item, settings) for item in items]
    return time.perf_counter() - start, results


def speedup(model, tokenizer, suite: str, n: int, rollouts: int, rounds: int, compiled: bool = False) -> SpeedupFigures:
    items = generate_suite(suite, n, seed=0)
    naive = SearchSettings(SUITES[suite].max_new_tokens, num_rollouts=rollouts)
    sides = {"naive": naive, "fast": replace(naive, kv_cache=True, batching="dynamic")}
    if compiled:
        sides["compiled"] = replace(sides["fast"], compile=True)
    for settings in sides.values():  # warm-up; the compiled side's records its CUDA graphs for every batch size
        _timed_search(model, tokenizer, items if settings.compile else items[:1], settings)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, list] = {}
    for _ in range(rounds):  # interleaved, so drift in the machine's speed hits every side alike
        for name, settings in sides.items():
            elapsed, results[name] = _timed_search(model, tokenizer, items, settings)
            seconds[name].append(elapsed)
    naive_signature = [_tree_signature(r) for r in results["naive"]]
    return SpeedupFigures(
        suite, n, rollouts, seconds,
        {name: statistics.median(seconds["naive"]) / statistics.median(times) for name, times in seconds.items()},
        {name: [_tree_signature(r) for r in side] == naive_signature for name, side in results.items()},
        {name: total_counters(side) for name, side in results.items()},
    )


def speedup_table(figures: SpeedupFigures) -> str:
    names = list(figures.seconds)
    lines = [
        f"search on {figures.items} {figures.suite} items, {figures.rollouts} rollouts each; "
        "naive = no cache, one rollout per call; fast = kv_cache + batched rollouts; "
        "compiled = fast with compile=on (rollouts in the static-cache loop, CUDA graphs)",
        "",
        "| | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
        f"| median seconds ({len(figures.seconds['naive'])} rounds) | "
        + " | ".join(f"{statistics.median(figures.seconds[n]):.2f}" for n in names) + " |",
        "| speedup over naive | " + " | ".join(f"{figures.speedups[n]:.2f}x" for n in names) + " |",
        "| the naive tree and answers | " + " | ".join("same" if figures.same_trees[n] else "differ" for n in names) + " |",
    ]
    for counter, naive_value in figures.counters["naive"].items():
        cells = []
        for name in names:
            value = figures.counters[name][counter]
            cells.append(f"{value}" + (" (differs!)" if counter in _SAME_WORK and value != naive_value else ""))
        lines.append(f"| {counter} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- budget: does search beat greedy? -----------------------------------------------------------


@dataclass
class BudgetRow:
    reward: str
    rollouts: int
    search_accuracy: float
    greedy_accuracy: float
    gained: int  # items search got right and greedy wrong
    lost: int
    p_value: float  # exact McNemar (binomial on the discordant items)


def _mcnemar_p(gained: int, lost: int) -> float:
    return 1.0 if gained + lost == 0 else float(stats.binomtest(gained, gained + lost, 0.5).pvalue)


def budget(model, tokenizer, suite: str, n: int, budgets: list[int], rewards: list[str], first: int = 0) -> list[BudgetRow]:
    items = generate_suite(suite, first + n, seed=0)[first:]
    greedy_scores = run_eval(model, tokenizer, items, EvalSettings(SUITES[suite].max_new_tokens, kv_cache=True,
                                                            early_stop=True, batching="dynamic")).item_scores
    greedy = [score == 1.0 for score in greedy_scores]
    rows = []
    for reward_name in rewards:
        for rollouts in budgets:
            settings = SearchSettings(SUITES[suite].max_new_tokens, num_rollouts=rollouts, kv_cache=True,
                                      batching="dynamic", early_stop=True)
            correct = [check(item, search_item(model, tokenizer, item, settings, REWARDS[reward_name]).text) for item in items]
            gained = sum(c and not g for c, g in zip(correct, greedy))
            lost = sum(g and not c for c, g in zip(correct, greedy))
            rows.append(BudgetRow(reward_name, rollouts, sum(correct) / n, sum(greedy) / n, gained, lost, _mcnemar_p(gained, lost)))
            print(budget_table([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def budget_table(rows: list[BudgetRow]) -> str:
    lines = ["| reward | rollouts | search accuracy | greedy accuracy | gained | lost | McNemar p |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.reward} | {r.rollouts} | {r.search_accuracy:.3f} | {r.greedy_accuracy:.3f} | "
                     f"{r.gained} | {r.lost} | {r.p_value:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=("speedup", "budget"))
    parser.add_argument("--suite", default="aime", choices=tuple(SUITES))
    parser.add_argument("--n", type=int, default=None, help="items (default: 4 for speedup, 200 for budget)")
    parser.add_argument("--first", type=int, default=0, help="budget: skip this many items (to split a run into parts)")
    parser.add_argument("--rollouts", type=int, default=10, help="speedup: rollouts per item")
    parser.add_argument("--rounds", type=int, default=3, help="speedup: timed rounds of each")
    parser.add_argument("--compile", action="store_true", help="speedup: also time compile=on (a CUDA device)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=tuple(REWARDS))
    parser.add_argument("--model", default="embedded", help="embedded, a model directory or a speed profile (random:<arch>)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="fp32 on cpu, bf16 on cuda")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    loaded = load_model(LoadSpec(args.model, args.device, default_dtype(args.device), "none"))
    if args.study == "speedup":
        figures = speedup(loaded.model, loaded.tokenizer, args.suite, args.n or 4, args.rollouts, args.rounds, args.compile)
        print(speedup_table(figures))
        result = asdict(figures)
    else:
        rows = budget(loaded.model, loaded.tokenizer, args.suite, args.n or 200, args.budgets, args.rewards, args.first)
        print(budget_table(rows))
        result = [asdict(r) for r in rows]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
