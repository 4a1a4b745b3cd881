"""Teacher-forced reference-vs-candidate scoring with a sequential SAME / DIFFERENT decision.

For each prompt the reference model writes a K-token greedy continuation (once per prompt, shared by
every pair). Prompt and continuation are teacher-forced through the reference and the candidate, and
the K positions are scored:

- `kl_full`: mean KL(p_ref || p_cand) over the full vocabulary;
- `delta_target`: mean |log p_ref(y) - log p_cand(y)| of the continuation token y;
- `topk_delta`: the same after renormalizing both over the reference's top-k tokens; positions whose
  target falls outside are skipped and counted. A k at or above the vocabulary size keeps every token,
  so it is refused before any work rather than run as a variant that changes nothing.

The decision. Scores, clipped to [0, 1], are read in prompt order by two bets (`Bet`): one that their
mean lies below gamma, one that it lies above delta* (> gamma). Each bet's wealth is a nonnegative
supermartingale while its claim is false, so by Ville's inequality it ever reaches 1/alpha with
probability at most alpha, however often it is looked at (testing by betting: Waudby-Smith and
Ramdas, arXiv 2010.09686; the prompts taken as independent draws from their suite):

- SAME once the first bet reaches 1/alpha: P(SAME | true mean >= gamma) <= alpha;
- DIFFERENT once the second does: P(DIFFERENT | true mean <= delta*) <= alpha;
- neither by n_max: UNDECIDED. Between gamma and delta* (the indifference zone) neither claim holds,
  so such a pair mostly ends UNDECIDED. Nothing is decided before n_min queries.

The reference notes' empirical-Bernstein half-width h_n certifies the same claims, but not within a
bench's few dozen prompts: its term 7 log(1/d_n) / (3(n - 1)) alone is 0.45 at n = 64, so a SAME would
need gamma >= 0.45, while the sibling's lower bound mean - h_n there is 0.25 (clipped mean 0.83): no
gamma < delta* fits both. The bets decide the self pair at 13 queries and the sibling at 10.

Per-item values (`PipelineOutput.item_values`, gated within a tolerance): per pair, the mean raw
(unclipped) score over its first n_min prompts. Every variant scores those: the test decides nothing
before n_min and early_stop stops a pair only at a decision, and scores are read in prompt order
whatever the batching. A mean over all queries used would instead depend on where early_stop
stopped. `score[pair]` in quality is the same value, for the report.

Toggles read here: topk (full, or topk_delta with k), batching ("1"; "static8": fixed groups of 8;
"dynamic": length-sorted buckets of rows x (prompt + K) <= token_budget, planned within windows of
consecutive prompts, n_min first and then doubling, so that a pair decided early leaves later windows
unread), early_stop (stop a pair at its first decision, or run to n_max and keep that first decision),
kv_cache (continuation generation), compile (continuations by the static-cache loop of
`static_greedy`). Attention and quantization act on the models before they arrive; a quantized
candidate is a pair of the panel.

One piece past 400 lines: the scores, the bets that read them in prompt order and the prompt bank that feeds
both are one decision procedure; every variant must score, batch and stop exactly as the others do for the gate
to compare their decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.pipelines.cache_api import last_logits
from harness.pipelines.decoding import (
    count_forward_passes,
    decoding_toggles,
    plan_by_length,
)
from harness.pipelines.phases import timed_phase
from harness.pipelines.progress import advance
from harness.pipelines.static_greedy import greedy_static
from harness.records import PipelineOutput
from harness.toggles import value_of

SAME, DIFFERENT, UNDECIDED = "SAME", "DIFFERENT", "UNDECIDED"
METHODS = ("kl_full", "delta_target", "topk_delta")
BATCHINGS = ("1", "static8", "dynamic")
# The phases of a round (`phases.timed_phase`): the reference's continuations (with the decode steps within them where
# compile=on), the teacher-forced passes of the reference and the candidates, and the scores read from them.
CONTINUATIONS, TEACHER_FORCING, SCORES = "continuations", "teacher forcing", "scores"
# A bet stakes at most this share of what one worst-case score would lose: wealth stays positive, so a
# single outlier cannot end a bet that the rest of the stream would win.
_STAKE_CAP = 0.9


@dataclass(frozen=True)
class DecisionPreset:
    """Thresholds of the sequential test, on scores clipped to [0, 1].

    QUICK, on gpqa prompts: mean delta_target scores of the embedded model are 0 for itself and a twin,
    0.004 for its bfloat16 copy, 0.006 and 0.05 for its int8 and nf4 copies, 0.085 with Gaussian noise of
    10% of each weight tensor's spread added, and 1.6 (0.83 clipped) for the sibling. gamma = 0.3 sits
    well above every numerical change, so that they read SAME within 13 to 30 queries; delta* = 0.5 well
    below the sibling. AUDIT certifies tighter claims at a smaller alpha and needs more queries for them.
    """

    name: str
    alpha: float  # each wrong decision's probability bound
    gamma: float  # SAME certifies a mean below gamma ...
    delta_star: float  # ... DIFFERENT one above delta*
    n_min: int  # no decision before this many queries
    n_max: int  # UNDECIDED after this many

    def __post_init__(self) -> None:
        if not 0 < self.gamma < self.delta_star < 1:
            raise ValueError(f"preset {self.name}: needs 0 < gamma < delta* < 1 (an indifference zone between), "
                             f"got gamma={self.gamma}, delta*={self.delta_star}")
        if not 0 < self.alpha < 1 or not 1 <= self.n_min <= self.n_max:
            raise ValueError(f"preset {self.name}: needs 0 < alpha < 1 and 1 <= n_min <= n_max")


QUICK = DecisionPreset("quick", alpha=0.025, gamma=0.3, delta_star=0.5, n_min=10, n_max=120)
AUDIT = DecisionPreset("audit", alpha=0.01, gamma=0.1, delta_star=0.3, n_min=30, n_max=400)
PRESETS = {preset.name: preset for preset in (QUICK, AUDIT)}

# A 4-bit copy of the embedded reference moves log-probabilities by a few hundredths of a nat per
# token, well below gamma: the presets read it as the same model. Declared, so a change shows.
QUANTIZED_COPY_EXPECTED = SAME


@dataclass(frozen=True)
class ScoringSettings:
    method: str = "delta_target"  # with topk set, topk_delta replaces it
    positions: int = 32  # K: continuation tokens scored per prompt
    topk: int | None = None
    batching: str = "1"  # "1", "static8" or "dynamic"
    token_budget: int = 4096  # dynamic: rows x (prompt + K) per bucket
    early_stop: bool = False
    kv_cache: bool = False
    compile: bool = False  # continuations by the static-cache loop, its step compiled into CUDA graphs
    preset: DecisionPreset = QUICK

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"scoring method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")

    @property
    def effective_method(self) -> str:
        return "topk_delta" if self.topk is not None else self.method

    @classmethod
    def from_variant(cls, variant: dict[str, str], **overrides) -> ScoringSettings:
        topk = value_of(variant, "topk")
        return cls(topk=None if topk == "full" else int(topk), **decoding_toggles(variant), **overrides)


def refuse_whole_vocabulary(topk: int | None, vocabulary: int) -> None:
    """A top-k that keeps every token scores exactly what the full vocabulary does: a variant that changes nothing."""
    if topk is not None and topk >= vocabulary:
        raise ValueError(f"topk={topk} keeps the whole {vocabulary}-token vocabulary: a no-op; choose k below {vocabulary}")


@dataclass
class Pair:
    """A candidate compared with the reference model, with the decision it should get (None: report only)."""

    name: str
    candidate: torch.nn.Module
    expected: str | None


# --- the sequential test ------------------------------------------------------------------------


@dataclass
class Bet:
    """Wealth from betting that the clipped scores' mean lies above `threshold` (side +1) or below it (side -1).

    Each score pays stake * excess, with excess = side * (x - threshold). While the claim is false, a payoff's
    expectation given the past is at most zero, so wealth is a nonnegative supermartingale from 1 (Ville:
    P(ever >= 1/alpha) <= alpha). The stake uses past scores only: Kelly's fraction mean(excess) /
    mean(excess^2), none before the first score, capped so that the worst score keeps wealth positive.
    """

    threshold: float
    side: int
    wealth: float = 1.0
    total: float = 0.0  # sum of past excesses
    squares: float = 0.0  # sum of their squares

    def add(self, x: float) -> None:
        excess = self.side * (x - self.threshold)
        worst = self.threshold if self.side > 0 else 1.0 - self.threshold  # the largest loss per unit of stake
        stake = min(max(self.total / self.squares, 0.0), _STAKE_CAP / worst) if self.squares else 0.0
        self.wealth *= 1.0 + stake * excess
        self.total += excess
        self.squares += excess * excess


@dataclass
class SequentialTest:
    """SAME once the bet on a mean below gamma reaches 1/alpha, DIFFERENT once the one above delta* does."""

    preset: DecisionPreset
    n: int = 0
    same: Bet = field(init=False)
    different: Bet = field(init=False)

    def __post_init__(self) -> None:
        self.same = Bet(self.preset.gamma, -1)
        self.different = Bet(self.preset.delta_star, +1)

    def add(self, score: float) -> None:
        x = min(max(score, 0.0), 1.0)
        self.n += 1
        self.same.add(x)
        self.different.add(x)

    def decision(self) -> str | None:
        """SAME, DIFFERENT, or None to go on; checked from n_min on."""
        if self.n < self.preset.n_min:
            return None
        if self.same.wealth >= 1 / self.preset.alpha:
            return SAME
        if self.different.wealth >= 1 / self.preset.alpha:
            return DIFFERENT
        return None


# --- batches, continuations and teacher forcing -------------------------------------------------


def plan_batches(lengths: list[int], settings: ScoringSettings) -> list[list[int]]:
    """Prompt indices per batch (a row's length: prompt + K).

    The test reads scores in prompt order, so that every batching decides alike; dynamic buckets are planned
    within windows of consecutive prompts (n_min, then doubling), so that a pair decided early leaves the
    later windows unread, and rows of like length share a bucket within a window.
    """
    if settings.batching != "dynamic":
        return plan_by_length(lengths, settings.batching, settings.token_budget)
    batches: list[list[int]] = []
    start, end = 0, settings.preset.n_min
    while start < len(lengths):
        end = min(end, len(lengths))
        batches += [[start + i for i in bucket] for bucket in plan_by_length(lengths[start:end], "dynamic", settings.token_budget)]
        start, end = end, 2 * end
    return batches


@torch.no_grad()
def continuations(model, tokenizer, prompts: list[str], settings: ScoringSettings) -> list[list[int]]:
    """The reference's K-token greedy continuation of each prompt, in one padded batch (EOS included: K tokens always)."""
    encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    with timed_phase(CONTINUATIONS, model.device):
        if settings.compile:
            output = greedy_static(model, encoded["input_ids"], encoded["attention_mask"], settings.positions)
        else:
            output = model.generate(**encoded, do_sample=False, max_new_tokens=settings.positions,
                                    use_cache=settings.kv_cache, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
        return output[:, encoded["input_ids"].shape[1]:].tolist()


@dataclass
class ForcedBatch:
    """Log-probabilities at the K scored positions of each row, shape [rows, K, vocab]."""

    log_probs: torch.Tensor
    targets: torch.Tensor  # [rows, K]


@torch.no_grad()
def teacher_force(model, tokenizer, prompts: list[str], conts: list[list[int]]) -> ForcedBatch:
    """One padded forward pass; each row's K positions gathered from where its own tokens sit."""
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    sequences = [p + c for p, c in zip(prompt_ids, conts)]
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=model.device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the rows' positions
    k = len(conts[0])
    # position t predicts token t + 1: the K continuation tokens are predicted from the K positions before them.
    # Only those K + 1 positions go through the head: the prompt's logits, [rows, width, vocab] in fp32, took most
    # of a batch's time and memory with a 128k vocabulary.
    with timed_phase(TEACHER_FORCING, model.device) as work:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, **last_logits(model, k + 1)).logits
        log_probs = torch.log_softmax(logits[:, -k - 1 : -1].float(), dim=-1)
        work.update(processed_tokens=int(ids.numel()), head_tokens=int(ids.shape[0]) * (k + 1))
    return ForcedBatch(log_probs, ids[:, width - k :])


# --- scores -------------------------------------------------------------------------------------


@dataclass
class PromptScore:
    score: float
    skipped: int  # positions topk_delta could not score


def score_rows(reference: ForcedBatch, candidate: ForcedBatch, method: str, topk: int | None) -> list[PromptScore]:
    with timed_phase(SCORES, reference.log_probs.device):
        return _score_rows(reference, candidate, method, topk)


def _score_rows(reference: ForcedBatch, candidate: ForcedBatch, method: str, topk: int | None) -> list[PromptScore]:
    ref, cand, y = reference.log_probs, candidate.log_probs, reference.targets.unsqueeze(-1)
    # each batch's scores are read back once: a read per row waited on the GPU once per row
    if method == "kl_full":
        per_position = (ref.exp() * (ref - cand)).sum(-1)
        return [PromptScore(value, 0) for value in per_position.mean(-1).tolist()]
    if method == "delta_target":
        per_position = (ref.gather(-1, y) - cand.gather(-1, y)).abs().squeeze(-1)
        return [PromptScore(value, 0) for value in per_position.mean(-1).tolist()]
    top = ref.topk(topk, dim=-1).indices
    inside = (top == y).any(-1)
    ref_top, cand_top = ref.gather(-1, top), cand.gather(-1, top)
    ref_y = ref.gather(-1, y).squeeze(-1) - ref_top.logsumexp(-1)
    cand_y = cand.gather(-1, y).squeeze(-1) - cand_top.logsumexp(-1)
    delta = (ref_y - cand_y).abs()
    scored = inside.sum(-1)
    means = torch.where(inside, delta, 0.0).sum(-1) / scored.clamp(min=1)  # 0 for a row with no position scored
    positions = inside.shape[-1]
    return [PromptScore(value, positions - count) for value, count in zip(means.tolist(), scored.tolist())]


# --- a panel of pairs ---------------------------------------------------------------------------


class PromptBank:
    """The reference side of every pair, batch by batch and only as far as a pair reads.

    A batch's continuations and the reference's teacher-forced pass are computed once and shared by
    all pairs, so a panel that decides early never pays for prompts it did not need.
    """

    def __init__(self, model, tokenizer, prompts: list[str], settings: ScoringSettings) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.prompts = prompts[: settings.preset.n_max]
        lengths = [len(tokenizer(p)["input_ids"]) + settings.positions for p in self.prompts]
        self.batches = plan_batches(lengths, settings)
        self.batch_of = {row: index for index, rows in enumerate(self.batches) for row in rows}
        self._done: dict[int, tuple[list[list[int]], ForcedBatch]] = {}

    def batch(self, index: int) -> tuple[list[str], list[list[int]], ForcedBatch]:
        prompts = [self.prompts[i] for i in self.batches[index]]
        if index not in self._done:
            conts = continuations(self.model, self.tokenizer, prompts, self.settings)
            self._done[index] = conts, teacher_force(self.model, self.tokenizer, prompts, conts)
        return (prompts, *self._done[index])

    @property
    def prompts_continued(self) -> int:
        return sum(len(self.batches[i]) for i in self._done)


@dataclass
class PairResult:
    name: str
    expected: str | None
    decision: str
    decided_at: int | None  # queries the decision needed; None if UNDECIDED
    queries: int  # prompts actually scored (to n_max without early_stop; whole batches with batching)
    value: float  # mean raw score over the first n_min prompts: the same prompts in every variant
    skipped_positions: int
    scores: dict[int, float] = field(default_factory=dict)  # by prompt index


def _score_batch(bank: PromptBank, pair: Pair, index: int) -> list[PromptScore]:
    prompts, conts, reference = bank.batch(index)
    # the reference model against itself gives the same pass: reuse it
    candidate = reference if pair.candidate is bank.model else teacher_force(pair.candidate, bank.tokenizer, prompts, conts)
    advance(len(prompts))  # prompts scored for this pair
    return score_rows(reference, candidate, bank.settings.effective_method, bank.settings.topk)


def decide_pair(bank: PromptBank, pair: Pair) -> PairResult:
    settings = bank.settings
    test = SequentialTest(settings.preset)
    scores: dict[int, float] = {}
    skipped, decision = 0, None
    for row in range(len(bank.prompts)):
        if decision is not None and settings.early_stop:
            break
        if row not in scores:  # the batch holding this prompt, scored whole
            index = bank.batch_of[row]
            results = _score_batch(bank, pair, index)
            scores.update(zip(bank.batches[index], (r.score for r in results)))
            skipped += sum(r.skipped for r in results)
        if decision is None:
            test.add(scores[row])
            decision = test.decision()
    first = [scores[row] for row in range(min(settings.preset.n_min, len(bank.prompts)))]
    return PairResult(pair.name, pair.expected, decision or UNDECIDED, test.n if decision else None, len(scores),
                      sum(first) / max(len(first), 1), skipped, scores)


def run_scoring(model, tokenizer, pairs: list[Pair], prompts: list[str], settings: ScoringSettings) -> PipelineOutput:
    """Decide every pair of the panel against `model`; quality is the accuracy of the expected decisions."""
    refuse_whole_vocabulary(settings.topk, model.get_output_embeddings().out_features)
    bank = PromptBank(model, tokenizer, prompts, settings)
    with count_forward_passes(model) as passes:
        results = [decide_pair(bank, pair) for pair in pairs]
    judged = [r for r in results if r.expected is not None]
    quality = {"decision_accuracy": sum(r.decision == r.expected for r in judged) / len(judged) if judged else 1.0}
    quality.update({f"score[{r.name}]": r.value for r in results})
    return PipelineOutput(
        quality=quality,
        counters={
            "queries": sum(r.queries for r in results),
            "queries_to_decision": sum(r.decided_at or r.queries for r in results),
            "skipped_positions": sum(r.skipped_positions for r in results),
            "prompts_continued": bank.prompts_continued,
            # the reference model's passes: continuations (where kv_cache acts) and teacher forcing
            "reference_forward_passes": passes["forward_passes"],
            "reference_processed_tokens": passes["processed_tokens"],
        },
        item_ids=[r.name for r in results],
        item_scores=[1.0 if r.expected is None or r.decision == r.expected else 0.0 for r in results],
        item_outputs=[r.decision for r in results],
        item_values=[r.value for r in results],
        decisions=True,
    )
