"""MaxEnt-TS: token-level soft-value tree search over a causal LM, rewarded on the generated answer.

The search targets pi*(x) ~ p(x) exp(lambda r(x)). Each iteration selects a leaf (prior-weighted
Boltzmann policy over soft values, or UCT), expands its top-k next tokens, rolls each new child out
by sampling, rewards only the text generated after the prompt, and backs the reward up with the soft
(log-sum-exp) value over visited children. The answer is the best sequence actually observed.

Toggles read here, each a separate code path over the same work:
- kv_cache: nodes keep their path's cache; rollouts resume from the parent's cache (rolled back with
  `crop` afterwards) and a node's expansion reuses it; off recomputes every prefix from scratch.
- batching: how the rollouts of one expansion are grouped into `generate` calls, as eval groups items:
  "1" one rollout a call, "static8" groups of 8 in order, "dynamic" buckets of rows x row length within
  `token_budget` (eval's `plan_by_length`). Only one expansion's rollouts are ever batched: the next leaf is
  chosen from the values they back up. Siblings have equal lengths (no padding), so "dynamic" sorts nothing
  and differs from "static8" only in where it cuts: with expansion_k <= 8 and short rows both make one call.
- early_stop: rollouts stop at EOS or a completed answer instead of running to the depth limit.
- compile (needs kv_cache): rollouts decode in the static-cache loop of `static_greedy`, its step compiled into
  CUDA graphs, instead of generate's. A rollout prefills its path into the static cache in one forward pass
  rather than resuming the parent's cache (the `recomputed_tokens` counter shows it); nodes keep no caches.

Sampling is made independent of the schedule: every rollout draws its Gumbel noise from its own seed
and position, so batched, sequential, cached and recomputed searches build the same tree (in fp32).

One piece past 400 lines: the tree, its policy, expansion and the cached, batched rollouts are one algorithm
whose parts share the node and cache structures.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import Cache

from harness.pipelines.cache_api import cache_keyword, output_cache
from harness.pipelines.decoding import (
    RowTracker,
    answer_complete,
    count_forward_passes,
    decoding_toggles,
    first_eos_ends,
    plan_by_length,
)
from harness.pipelines.progress import advance
from harness.pipelines.static_greedy import decode_static
from harness.records import PipelineOutput
from harness.tasks import TaskItem, check
from harness.tasks.answers import extract_answer

# reward(item, generated_text) -> float; only the text after the prompt is ever passed in.
Reward = Callable[[TaskItem, str], float]

FORMAT_BONUS = 0.1
BATCHINGS = ("1", "static8", "dynamic")


def answer_reward(item: TaskItem, text: str) -> float:
    """1 for a correct answer, plus a small bonus for a complete, well-formed one (e.g. a closed \\boxed{})."""
    return float(check(item, text)) + FORMAT_BONUS * float(answer_complete(text, item.answer_type))


@dataclass(frozen=True)
class SearchSettings:
    max_new_tokens: int  # depth limit, counted after the prompt
    num_rollouts: int = 10
    soft_lambda: float = 1.0  # lambda of pi* ~ p exp(lambda r): higher trusts the reward more than the model
    expansion_k: int = 3
    rollout_temperature: float = 0.8
    rollout_top_k: int = 50
    rollout_top_p: float = 0.9
    # None: roll out to the depth limit. A character-level model needs the whole answer length; a
    # 50-token cap (the original's default for word pieces) would never reach a boxed answer here.
    rollout_max_new_tokens: int | None = None
    use_uct: bool = False
    c_uct: float = 1.0
    seed: int = 0
    kv_cache: bool = False
    batching: str = "1"  # "1", "static8" or "dynamic", grouping the rollouts of one expansion
    token_budget: int = 2048  # dynamic batching: rows x (path + steps to run) per call, as in eval
    early_stop: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}")
        if self.compile and not self.kv_cache:
            raise ValueError("compile=on needs kv_cache=on: the static cache it compiles for is a KV cache")

    @property
    def resumes_caches(self) -> bool:
        """Whether rollouts resume their parent's cache; with compile they fill a static cache of their own."""
        return self.kv_cache and not self.compile

    @classmethod
    def from_variant(cls, variant: dict[str, str], max_new_tokens: int, **overrides) -> SearchSettings:
        return cls(max_new_tokens=max_new_tokens, **decoding_toggles(variant), **overrides)


@dataclass(eq=False)
class Node:
    token_ids: list[int]  # the whole path, prompt included
    log_prob: float  # log p(last token | parent's path) under the model; 0 for the root
    depth: int  # tokens after the prompt
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0  # soft value; an unvisited node counts as reward 0
    terminal: bool = False  # EOS, depth limit, or (early_stop) a complete answer: nothing to expand
    logits: torch.Tensor | None = None  # next-token logits after the path, once a forward pass saw it
    cache: Cache | None = None  # kv_cache: keys/values of the whole path, in row `cache_row`
    cache_row: int = 0


@dataclass
class SearchResult:
    root: Node
    text: str  # the best generated text observed
    reward: float
    counters: dict[str, int]


# --- tree policy -----------------------------------------------------------------------------


def soft_value(node: Node, soft_lambda: float) -> float:
    """(1/lambda) log sum_c q(c) exp(lambda V(c)) over visited children, q = prior renormalized over them.

    Unvisited children are left out: counting them at 0 inflates V by about log(k)/lambda.
    """
    visited = [c for c in node.children if c.visits > 0]
    log_q = torch.tensor([c.log_prob for c in visited], dtype=torch.float64)
    log_q = log_q - torch.logsumexp(log_q, 0)
    values = torch.tensor([c.value for c in visited], dtype=torch.float64)
    return float(torch.logsumexp(log_q + soft_lambda * values, 0)) / soft_lambda


def backup(leaf: Node, reward: float, soft_lambda: float) -> None:
    """Count one rollout from `leaf`: its value is the reward, each ancestor's the soft value of its children."""
    leaf.visits += 1
    leaf.value = reward if not any(c.visits for c in leaf.children) else soft_value(leaf, soft_lambda)
    node = leaf.parent
    while node is not None:
        node.visits += 1
        node.value = soft_value(node, soft_lambda)
        node = node.parent


def select_child(node: Node, settings: SearchSettings, rng: random.Random) -> Node:
    if settings.use_uct:
        explore = math.log(node.visits + 1)
        return max(node.children, key=lambda c: c.value + settings.c_uct * math.sqrt(explore / (c.visits + 1)))
    # p~(c) exp(lambda V(c)); the prior's normalization cancels in the draw
    weights = torch.tensor([c.log_prob + settings.soft_lambda * c.value for c in node.children], dtype=torch.float64)
    probabilities = torch.softmax(weights, 0).tolist()
    draw, cumulative = rng.random(), 0.0
    for child, probability in zip(node.children, probabilities):
        cumulative += probability
        if draw < cumulative:
            return child
    return node.children[-1]


def select_leaf(root: Node, settings: SearchSettings, rng: random.Random) -> Node:
    node = root
    while node.children:
        node = select_child(node, settings, rng)
    return node


# --- model calls ------------------------------------------------------------------------------


class GumbelNoise(LogitsProcessor):
    """Adds per-rollout Gumbel noise so greedy decoding samples from the warped distribution.

    argmax(logits/T + G) with G ~ Gumbel(0, 1) is a draw from softmax(logits/T). Keying G by the
    rollout's own seed and the position makes the draw the same whether the rollout runs alone or
    beside its siblings, with or without a cache.
    """

    def __init__(self, seeds: list[int], steps: int, vocab_size: int, start: int, device: torch.device) -> None:
        noise = []
        for seed in seeds:
            # Drawn where the model runs: on a GPU, steps x a 128k vocabulary drawn on the host costs more than
            # the rollout. The draw is then the device's generator's (the same on every GPU, not the CPU's).
            generator = torch.Generator(device=device).manual_seed(seed)
            uniform = torch.rand((steps, vocab_size), generator=generator, dtype=torch.float64, device=device)
            noise.append(-torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-12))))
        self.noise = torch.stack(noise).to(dtype=torch.float32)
        self.start = start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.start
        return scores + self.noise[:, step, : scores.shape[1]]


def _rollout_seed(settings: SearchSettings, item: TaskItem, rollout: int) -> int:
    digest = hashlib.sha256(f"{settings.seed}:{item.id}:{rollout}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@torch.no_grad()
def _prefill_root(model, tokenizer, item: TaskItem, settings: SearchSettings) -> Node:
    ids = tokenizer(item.prompt)["input_ids"]
    output = model(input_ids=torch.tensor([ids], device=model.device), use_cache=settings.resumes_caches)
    root = Node(token_ids=list(ids), log_prob=0.0, depth=0)
    root.logits = output.logits[0, -1].float()
    root.cache = output_cache(output) if settings.resumes_caches else None
    return root


def _resume_cache(parent: Node, rows: int) -> Cache:
    """A cache of the parent's path for `rows` rollouts: its own cache when one row resumes it in place,
    else a copy with the parent's row repeated (caches mutate in place, so branches must not share one)."""
    if rows == 1 and parent.cache.layers[0].keys.shape[0] == 1:
        return parent.cache
    cache = copy.deepcopy(parent.cache)
    cache.batch_select_indices(torch.tensor([parent.cache_row] * rows, device=parent.cache.layers[0].keys.device))
    return cache


@dataclass
class Rollout:
    text: str  # generated after the prompt: the child's path and its continuation, up to EOS
    generated_tokens: int  # tokens sampled after the child, up to its end


@dataclass
class Samples:
    sequences: torch.Tensor  # the children's paths and their continuations, [rows, width + steps run]
    first_logits: torch.Tensor  # each child's raw next-token logits, [rows, vocab]
    ends: list[int | None]  # per row, the new tokens after the prompt up to and including the answer's end
    cache: Cache | None  # generate's cache of the rows, to keep for the children (kv_cache without compile)


def _sample_with_generate(model, tokenizer, input_ids, cache, steps, warpers, tracker, settings) -> Samples:
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        **{cache_keyword(model): cache},
        use_cache=settings.kv_cache,
        do_sample=False,  # the Gumbel noise does the sampling, keyed per rollout
        max_new_tokens=steps,
        logits_processor=LogitsProcessorList(warpers),
        stopping_criteria=StoppingCriteriaList([tracker]),
        eos_token_id=tokenizer.eos_token_id if settings.early_stop else None,
        pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    return Samples(output.sequences, output.logits[0], tracker.ends, output_cache(output) if settings.kv_cache else None)


def _sample_static(model, tokenizer, input_ids, steps, warpers, tracker, settings) -> Samples:
    """The same draws in the static-cache loop. Without early_stop nothing stops a row, and the ends are read
    afterwards, so that no step waits on the GPU to look at its tokens."""
    decoded = decode_static(model, input_ids, torch.ones_like(input_ids), steps,
                            stopping=tracker if settings.early_stop else None, processors=LogitsProcessorList(warpers))
    ends = tracker.ends if settings.early_stop else first_eos_ends(decoded.tokens[:, tracker.prompt_width:], tokenizer.eos_token_id)
    return Samples(decoded.tokens, decoded.first_logits, ends, None)


@torch.no_grad()
def _roll_out(model, tokenizer, parent: Node, children: list[Node], seeds: list[int], item: TaskItem,
              prompt_width: int, settings: SearchSettings, counters: dict[str, int]) -> list[Rollout]:
    """Sample one continuation per child in one call; give each child its logits (and cache)."""
    width = len(children[0].token_ids)
    steps = _rollout_steps(children[0], settings)
    input_ids = torch.tensor([c.token_ids for c in children], device=model.device)
    tracker = RowTracker(tokenizer, prompt_width, [item.answer_type] * len(children), stop=settings.early_stop)
    warpers = [
        TemperatureLogitsWarper(settings.rollout_temperature),
        TopKLogitsWarper(settings.rollout_top_k),
        TopPLogitsWarper(settings.rollout_top_p),
        GumbelNoise(seeds, steps, model.config.vocab_size, width, model.device),
    ]
    if settings.compile:
        samples = _sample_static(model, tokenizer, input_ids, steps, warpers, tracker, settings)
    else:
        cache = _resume_cache(parent, len(children)) if settings.kv_cache else None
        samples = _sample_with_generate(model, tokenizer, input_ids, cache, steps, warpers, tracker, settings)
    sequences = samples.sequences
    ran = sequences.shape[1] - width
    rollouts = []
    for row, child in enumerate(children):
        child.logits = samples.first_logits[row].float()
        path = width - prompt_width
        end = samples.ends[row] or (path + ran)
        text = tokenizer.decode(sequences[row, prompt_width : prompt_width + end], skip_special_tokens=True)
        stopped = settings.early_stop and samples.ends[row] is not None
        rollouts.append(Rollout(text, samples.ends[row] - path if stopped else ran))
    counters["fed_tokens"] += len(children) * ran
    counters["padded_steps"] += len(children) * ran - sum(r.generated_tokens for r in rollouts)
    if samples.cache is not None:
        _keep_child_caches(parent, children, samples.cache, width)
    return rollouts


def _rollout_steps(node: Node, settings: SearchSettings) -> int:
    steps = settings.max_new_tokens - node.depth
    return steps if settings.rollout_max_new_tokens is None else min(steps, settings.rollout_max_new_tokens)


def _keep_child_caches(parent: Node, children: list[Node], cache: Cache, width: int) -> None:
    """Crop the rollout's cache back to the children's paths; a parent's cache used in place is rolled back too."""
    extra = cache.get_seq_length() - width
    if extra > 0:
        cache.crop(-extra)
    if cache is parent.cache:  # one rollout resumed the parent's own cache in place
        children[0].cache = copy.deepcopy(cache)
        parent.cache.crop(-1)  # back to the parent's own path
        return
    for row, child in enumerate(children):
        child.cache, child.cache_row = cache, row  # siblings share one cache, one row each


def _expand(node: Node, tokenizer, settings: SearchSettings, item: TaskItem, prompt_width: int) -> None:
    """Create the top-k children of `node` from the logits its last forward pass produced."""
    log_probs = torch.log_softmax(node.logits.double(), -1)
    top = torch.topk(log_probs, min(settings.expansion_k, log_probs.shape[0]))
    for log_prob, token in zip(top.values.tolist(), top.indices.tolist()):
        child = Node(node.token_ids + [token], log_prob, node.depth + 1, parent=node)
        child.terminal = token == tokenizer.eos_token_id or child.depth >= settings.max_new_tokens
        if settings.early_stop and not child.terminal:
            child.terminal = answer_complete(_path_text(child, tokenizer, prompt_width), item.answer_type)
        node.children.append(child)


def _path_text(node: Node, tokenizer, prompt_width: int) -> str:
    return tokenizer.decode(node.token_ids[prompt_width:], skip_special_tokens=True)


# --- the search ---------------------------------------------------------------------------------


@torch.no_grad()
def search_item(model, tokenizer, item: TaskItem, settings: SearchSettings, reward: Reward = answer_reward) -> SearchResult:
    """Tree search for one item; the answer is the best-rewarded text any rollout produced."""
    counters = {"rollouts": 0, "expansions": 0, "generated_tokens": 0, "padded_steps": 0, "fed_tokens": 0}
    rng = random.Random(f"{settings.seed}:{item.id}")
    with count_forward_passes(model) as passes:
        root = _prefill_root(model, tokenizer, item, settings)
        prompt_width = len(root.token_ids)
        best_text, best_reward = "", -math.inf
        while counters["rollouts"] < settings.num_rollouts:
            leaf = select_leaf(root, settings, rng)
            if leaf.terminal or leaf.logits is None:
                parent, batch = leaf.parent, [leaf]  # score a finished path, or roll out a child not yet visited
            else:
                _expand(leaf, tokenizer, settings, item, prompt_width)
                counters["expansions"] += 1
                parent, batch = leaf, leaf.children[: settings.num_rollouts - counters["rollouts"]]
            texts = _rollout_batch(model, tokenizer, parent, batch, item, prompt_width, settings, counters)
            for node, text in zip(batch, texts):
                value = reward(item, text)
                counters["rollouts"] += 1
                backup(node, value, settings.soft_lambda)
                if value > best_reward:  # the first of equal rewards stays
                    best_text, best_reward = text, value
    fed = prompt_width + counters.pop("fed_tokens")  # what a cached search must feed the model
    counters.update(tree_counters(root), prompt_tokens=prompt_width, **passes,
                    recomputed_tokens=passes["processed_tokens"] - fed)
    advance()  # one item searched
    return SearchResult(root, best_text, best_reward, counters)


def _rollout_batch(model, tokenizer, parent: Node, batch: list[Node], item: TaskItem, prompt_width: int,
                   settings: SearchSettings, counters: dict[str, int]) -> list[str]:
    """Texts of one rollout per node: terminal nodes are scored as they stand, the others sampled."""
    texts: dict[int, str] = {}
    live = []
    for index, node in enumerate(batch):
        if node.terminal:
            texts[index] = _path_text(node, tokenizer, prompt_width)
        else:
            live.append(index)
    for planned in rollout_groups([batch[i] for i in live], settings):
        group = [live[i] for i in planned]
        seeds = [_rollout_seed(settings, item, counters["rollouts"] + i) for i in group]
        rollouts = _roll_out(model, tokenizer, parent, [batch[i] for i in group], seeds, item, prompt_width, settings, counters)
        for index, rollout in zip(group, rollouts):
            texts[index] = rollout.text
            counters["generated_tokens"] += rollout.generated_tokens
    return [texts[i] for i in range(len(batch))]


def rollout_groups(nodes: list[Node], settings: SearchSettings) -> list[list[int]]:
    """Indices into `nodes` per rollout call, planned as eval plans items: a row is its path plus the steps it may run."""
    lengths = [len(node.token_ids) + _rollout_steps(node, settings) for node in nodes]
    return plan_by_length(lengths, settings.batching, settings.token_budget)


def tree_counters(root: Node) -> dict[str, int]:
    nodes, max_depth, stack = 0, 0, [root]
    while stack:
        node = stack.pop()
        nodes += 1
        max_depth = max(max_depth, node.depth)
        stack.extend(node.children)
    return {"nodes": nodes, "max_depth": max_depth}


def total_counters(results: list[SearchResult]) -> dict[str, int]:
    """Counters of several searches: summed, except max_depth, the deepest node of any tree."""
    totals: dict[str, int] = {}
    for result in results:
        for name, value in result.counters.items():
            totals[name] = max(totals.get(name, 0), value) if name == "max_depth" else totals.get(name, 0) + value
    return totals


def run_search(model, tokenizer, items: list[TaskItem], settings: SearchSettings, reward: Reward = answer_reward) -> PipelineOutput:
    """Search every item; quality is the accuracy of the best observed answers."""
    results = [search_item(model, tokenizer, item, settings, reward) for item in items]
    counters = total_counters(results)
    scores = [1.0 if check(item, result.text) else 0.0 for item, result in zip(items, results)]
    return PipelineOutput(
        quality={"accuracy": sum(scores) / len(items), "mean_best_reward": sum(r.reward for r in results) / len(items)},
        counters=counters,
        item_ids=[item.id for item in items],
        item_scores=scores,
        item_outputs=[result.text for result in results],
        item_answers=[extract_answer(result.text, item.answer_type) or "" for item, result in zip(items, results)],
    )
