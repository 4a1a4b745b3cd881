"""Mechanistic hallucination detection (ReDeEP-style): external-context and parametric-knowledge scores.

A sample is a prompt with its context, the model's own answer, and a label (hallucinated = the answer
is not the context's value). One teacher-forced forward pass per sample (or per padded batch) gives,
at every scored response row:

- ES_h for a copy head h = (layer, head): the cosine between the row's last-layer hidden state and the
  mean last-layer hidden state of the prompt positions that head attends to most (top 10%);
- PK_l for a layer l: the Jensen-Shannon divergence between the logit-lens distributions of the
  residual stream before the layer's FFN (input of `post_attention_layernorm`) and after it.

Protocol: the calibration split's pass computes every head and layer; heads and layers are chosen there
by per-feature AUC, with the MinMax ranges and the decision threshold. The held-out split's pass
computes only the chosen ones and is scored: token score = m * MinMax(sum PK) - alpha * MinMax(sum ES),
response score = mean over its rows. Each sample gets exactly one pass.

Toggles read here: topk, batching. The attention implementation is read from the model (the plugin
sets it): eager returns attention weights; any other implementation keeps its fast kernel and the
needed heads' probabilities are recomputed from hooked, rotary-applied q/k. Quantization acts on the
model before it arrives.

Per-item results, for the verdict's paired test and agreement:
- item_scores are DeLong placement values: for a hallucinated sample, the share of faithful samples
  it outscores (ties half); for a faithful one, the share of hallucinated samples that outscore it.
  Their mean is exactly the AUC, so a paired test on them (Wilcoxon) tests the AUC change sample by
  sample, and the budget on their mean is a budget on the AUC.
- item_outputs are the thresholded decisions ("hallucinated" / "faithful"): a tolerance-class toggle
  (batching, attention) must keep them on >= 90% of samples. The scores themselves move with the dtype
  (in bf16 their second decimal changes on most samples), which the AUC's paired test judges instead.

One piece past 400 lines: sample building, the hooked feature pass, the attention recompute and the held-out
selection are one algorithm whose stages share the hooks' state.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split

from harness.pipelines.attention import attention_implementation
from harness.pipelines.cache_api import last_logits
from harness.pipelines.decoding import (
    GenerationSettings,
    count_forward_passes,
    generate_answers,
    plan_by_length,
)
from harness.pipelines.progress import advance
from harness.records import PipelineOutput
from harness.tasks import SUITES, TaskItem, check
from harness.toggles import value_of

Head = tuple[int, int]  # (layer, head)


class AttentionWeightsUnavailable(RuntimeError):
    """Attention weights were asked of an implementation that does not return them."""


@dataclass(frozen=True)
class Sample:
    id: str
    prompt: str
    response: str
    hallucinated: bool


@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]  # prompt tokens, then response tokens
    prompt_length: int
    rows: tuple[int, ...]  # scored rows: positions whose next-token prediction is a response token

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class DetectionSettings:
    # Chosen on the embedded model's context_qa items of seeds 1-3 (the bench runs seed 0).
    top_n_external: int = 6  # copy heads kept
    top_k_parameter: int = 3  # knowledge layers kept
    alpha: float = 1.0  # weight of the external-context score
    m: float = 1.0  # weight of the parametric-knowledge score
    topk: int | None = None  # JSD over the union of both top-k token sets; None = full vocabulary
    batching: str = "1"  # "1", "static8" or "dynamic"
    token_budget: int = 4096  # dynamic batching: rows x longest sample per batch
    top_share: float = 0.1  # share of prompt positions whose hidden states make the attended context

    @classmethod
    def from_variant(cls, variant: dict[str, str], **overrides) -> DetectionSettings:
        topk = value_of(variant, "topk")
        return cls(topk=None if topk == "full" else int(topk), batching=value_of(variant, "batching"), **overrides)


@dataclass
class SampleFeatures:
    es: torch.Tensor  # (heads, rows): ES of each requested head at each response row
    pk: torch.Tensor  # (layers, rows): PK of each requested layer at each response row


@dataclass(frozen=True)
class Detector:
    """What calibration fixes: the chosen heads and layers, MinMax ranges and the decision threshold."""

    heads: tuple[Head, ...]
    layers: tuple[int, ...]
    pk_range: tuple[float, float]  # min and max of the token-level sums on the calibration split
    es_range: tuple[float, float]
    threshold: float = 0.0

    def parts(self, features: Sequence[SampleFeatures]) -> tuple[np.ndarray, np.ndarray]:
        """Per response, the mean over its rows of MinMax(sum PK) and of MinMax(sum ES).

        `features` hold exactly this detector's heads and layers.
        """
        pk = np.array([_scaled(f.pk.sum(0).numpy(), self.pk_range).mean() for f in features])
        es = np.array([_scaled(f.es.sum(0).numpy(), self.es_range).mean() for f in features])
        return pk, es


# --- samples -----------------------------------------------------------------------------------


def build_samples(model, tokenizer, items: list[TaskItem]) -> list[Sample]:
    """The model's own greedy answers, labelled hallucinated when they are not the context's value.

    Generated with sdpa whatever the model is set to, so that a session's labels do not depend on
    which variant asked first. Blank answers (nothing to score) are dropped.
    """
    settings = GenerationSettings(max_new_tokens=SUITES[items[0].suite].max_new_tokens, kv_cache=True,
                                  early_stop=True, batching="dynamic")
    with attention_implementation(model, "sdpa"), torch.no_grad():
        texts, _ = generate_answers(model, tokenizer, items, settings)
    return [Sample(item.id, item.prompt, text, hallucinated=not check(item, text))
            for item, text in zip(items, texts) if text.strip()]


def split_samples(samples: list[Sample], calibration_share: float = 0.5, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Calibration (head and layer selection) and held-out evaluation, stratified by label."""
    labels = [s.hallucinated for s in samples]
    calibration, held_out = train_test_split(samples, train_size=calibration_share, stratify=labels, random_state=seed)
    return list(calibration), list(held_out)


def encode(tokenizer, samples: Sequence[Sample]) -> list[Encoded]:
    """Prompt and response tokenized apart, as generation produced them, then joined (teacher forcing).

    A row is scored when the response token it predicts has content: a whitespace-only token (the
    space after "Answer:" for a character-level tokenizer) says nothing about the context.
    """
    encoded = []
    for sample in samples:
        prompt = tokenizer(sample.prompt)["input_ids"]
        response = tokenizer(sample.response, add_special_tokens=False)["input_ids"]
        rows = tuple(len(prompt) + i - 1 for i, token in enumerate(response) if tokenizer.decode([token]).strip())
        encoded.append(Encoded(tuple(prompt + response), len(prompt), rows))
    return encoded


# --- token-level features ----------------------------------------------------------------------


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, topk: int | None = None) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between softmax(logits_p) and softmax(logits_q), per row.

    With topk, over the union of the two rows' top-k tokens plus one bucket for the rest of the
    vocabulary: a coarsening of both distributions, so it never exceeds the full-vocabulary value
    and equals it when the union covers the vocabulary. Only the kept tokens are exponentiated.
    """
    logits_p, logits_q = logits_p.float(), logits_q.float()
    if topk is None or topk >= logits_p.shape[-1]:
        p, q = logits_p.softmax(-1), logits_q.softmax(-1)
    else:
        union = torch.cat([logits_p.topk(topk).indices, logits_q.topk(topk).indices], dim=-1).sort(dim=-1).values
        first = torch.ones_like(union, dtype=torch.bool)
        first[..., 1:] = union[..., 1:] != union[..., :-1]  # a token in both top-k sets counts once
        p, q = (_with_rest((logits.gather(-1, union) - logits.logsumexp(-1, keepdim=True)).exp() * first)
                for logits in (logits_p, logits_q))
    mid = (p + q) / 2
    kl_p = (torch.special.xlogy(p, p) - torch.special.xlogy(p, mid)).sum(-1)
    kl_q = (torch.special.xlogy(q, q) - torch.special.xlogy(q, mid)).sum(-1)
    return (kl_p + kl_q) / 2


def _with_rest(kept: torch.Tensor) -> torch.Tensor:
    return torch.cat([kept, (1 - kept.sum(-1, keepdim=True)).clamp_min(0)], dim=-1)


def external_scores(probs: torch.Tensor, hidden: torch.Tensor, prompt: torch.Tensor, rows: torch.Tensor,
                    top_share: float) -> torch.Tensor:
    """ES per head and row. probs: (heads, rows, positions); hidden: (positions, hidden) last layer."""
    attended = probs[:, :, prompt]
    top = max(1, math.ceil(top_share * len(prompt)))
    chosen = attended.topk(top, dim=-1).indices  # (heads, rows, top) indices into prompt
    context = hidden[prompt][chosen].mean(-2)  # (heads, rows, hidden)
    return F.cosine_similarity(context.float(), hidden[rows].float().unsqueeze(0), dim=-1)


class _Capture:
    """Forward hooks that keep what the features need from one pass; a context manager that removes them."""

    def __init__(self, model, pk_layers: Sequence[int], qk_layers: Sequence[int]) -> None:
        decoder = model.get_decoder()
        self.before_ffn: dict[int, torch.Tensor] = {}
        self.after_ffn: dict[int, torch.Tensor] = {}
        self.q: dict[int, torch.Tensor] = {}
        self.k: dict[int, torch.Tensor] = {}
        self.rotary: tuple[torch.Tensor, torch.Tensor] | None = None
        self.final: torch.Tensor | None = None  # last-layer hidden states: the final norm's output
        self.handles = [decoder.norm.register_forward_hook(self._keep_final)]
        for layer in pk_layers:
            block = decoder.layers[layer]
            self.handles.append(block.post_attention_layernorm.register_forward_pre_hook(self._keeper(self.before_ffn, layer)))
            self.handles.append(block.register_forward_hook(self._keeper(self.after_ffn, layer, output=True)))
        for layer in qk_layers:
            attention = decoder.layers[layer].self_attn
            # Models with per-head q/k norms (Qwen3) rotate the normed projections.
            self.handles.append(getattr(attention, "q_norm", attention.q_proj).register_forward_hook(self._keeper(self.q, layer, output=True)))
            self.handles.append(getattr(attention, "k_norm", attention.k_proj).register_forward_hook(self._keeper(self.k, layer, output=True)))
            self.handles.append(attention.register_forward_pre_hook(self._keep_rotary, with_kwargs=True))

    @staticmethod
    def _keeper(store: dict, layer: int, output: bool = False):
        def hook(module, args, result=None):
            value = result if output else args[0]
            store[layer] = value[0] if isinstance(value, tuple) else value
        return hook

    def _keep_final(self, module, args, result) -> None:
        self.final = result

    def _keep_rotary(self, module, args, kwargs) -> None:
        self.rotary = kwargs["position_embeddings"]

    def __enter__(self) -> _Capture:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def forward_with_attentions(model, **inputs) -> tuple[object, tuple[torch.Tensor, ...]]:
    """A forward pass that returns attention weights, refused unless the model runs eager attention.

    In transformers 5, sdpa with output_attentions=True returns an empty tuple: every ES feature
    would silently vanish. Any other implementation must go through the recompute path.
    """
    implementation = model.config._attn_implementation
    if implementation != "eager":
        raise AttentionWeightsUnavailable(
            f"attention weights need eager attention, the model runs {implementation!r}: "
            "use the recompute path (extract_features does) or set_attn_implementation('eager')")
    outputs = model(**inputs, output_attentions=True)
    attentions = outputs.attentions
    if not attentions or any(a is None for a in attentions):
        raise AttentionWeightsUnavailable("the forward pass returned no attention weights")
    return outputs, attentions


def rotary_qk(capture: _Capture, attention_module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pass's own q and k of one layer, (batch, heads, positions, head_dim), with the model's rotary applied."""
    head_dim = attention_module.head_dim
    batch, width = capture.q[layer].shape[:2]
    if getattr(attention_module, "sliding_window", None) and width > attention_module.sliding_window:
        raise AttentionWeightsUnavailable("sliding-window attention is not recomputed: run eager attention")
    q = capture.q[layer].reshape(batch, width, -1, head_dim).transpose(1, 2)
    k = capture.k[layer].reshape(batch, width, -1, head_dim).transpose(1, 2)
    cos, sin = capture.rotary
    return sys.modules[type(attention_module).__module__].apply_rotary_pos_emb(q, k, cos, sin)


def recomputed_probabilities(q: torch.Tensor, k: torch.Tensor, attention_module, heads: Sequence[int],
                             row: int, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scaling + causal and padding mask) for some heads and rows of one batch row.

    Equal to eager's weights, while the pass itself ran a fast kernel: (heads, rows, positions).
    """
    heads_t = torch.tensor(list(heads), device=q.device)
    kv_heads = heads_t // attention_module.num_key_value_groups  # grouped-query: heads share a key head
    scores = q[row, heads_t][:, rows] @ k[row, kv_heads].transpose(-1, -2) * attention_module.scaling
    positions = torch.arange(q.shape[2], device=q.device)
    allowed = (positions[None, :] <= rows[:, None]) & mask[row].bool()[None, :]
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1, dtype=torch.float32)


def _logit_lens(model, hidden: torch.Tensor) -> torch.Tensor:
    return model.get_output_embeddings()(model.get_decoder().norm(hidden))


def _pad(batch: Sequence[Encoded], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding (as for generation), with the attention mask."""
    width = max(e.length for e in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, width - e.length:] = torch.tensor(e.ids)
        mask[row, width - e.length:] = 1
    return ids.to(device), mask.to(device)


def _jsd_terms(model, topk: int | None) -> int:
    vocab = model.get_output_embeddings().out_features
    return vocab if topk is None or topk >= vocab else 2 * topk + 1


def _batch_features(model, batch: Sequence[Encoded], heads: Sequence[Head], layers: Sequence[int],
                    settings: DetectionSettings) -> tuple[list[SampleFeatures], Counter]:
    eager = model.config._attn_implementation == "eager"
    by_layer = {layer: [h for l, h in heads if l == layer] for layer in sorted({layer for layer, _ in heads})}
    head_layers = list(by_layer)
    ids, mask = _pad(batch, model.device)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0),
              "use_cache": False, **last_logits(model, 1)}  # only the hooked states are read, never the logits
    with _Capture(model, layers, [] if eager else head_layers) as capture:
        if eager:
            attentions = forward_with_attentions(model, **inputs)[1]
        else:
            model(**inputs)
            modules = {layer: model.get_decoder().layers[layer].self_attn for layer in head_layers}
            qk = {layer: rotary_qk(capture, modules[layer], layer) for layer in head_layers}

    def probabilities(row: int, rows: torch.Tensor, layer: int) -> torch.Tensor:
        if eager:
            return attentions[layer][row, by_layer[layer]][:, rows].float()
        return recomputed_probabilities(*qk[layer], modules[layer], by_layer[layer], row, rows, mask)

    offsets = [ids.shape[1] - e.length for e in batch]
    rows = [offset + torch.tensor(e.rows, device=ids.device) for offset, e in zip(offsets, batch)]
    # PK for every scored row of the batch at once: (layers, rows of all samples).
    which, where = torch.cat([torch.full_like(r, i) for i, r in enumerate(rows)]), torch.cat(rows)
    pk = torch.stack([js_divergence(_logit_lens(model, capture.before_ffn[layer][which, where]),
                                    _logit_lens(model, capture.after_ffn[layer][which, where]), settings.topk)
                      for layer in layers]) if layers else torch.empty(0, len(where))
    results = []
    for row, (sample, offset, sample_rows, sample_pk) in enumerate(zip(batch, offsets, rows, pk.split([len(r) for r in rows], dim=1))):
        probs = {(layer, h): p for layer in head_layers for h, p in zip(by_layer[layer], probabilities(row, sample_rows, layer))}
        prompt = torch.arange(offset, offset + sample.prompt_length, device=ids.device)
        es = (external_scores(torch.stack([probs[h] for h in heads]), capture.final[row], prompt, sample_rows, settings.top_share)
              if heads else torch.empty(0, len(sample_rows)))
        results.append(SampleFeatures(es=es.cpu(), pk=sample_pk.cpu()))
    counters = Counter(padded_tokens=int(mask.numel() - mask.sum()), response_tokens=len(where),
                       jsd_terms=len(where) * len(layers) * _jsd_terms(model, settings.topk),
                       recomputed_attention_rows=0 if eager else len(where) * len(heads))
    return results, counters


@torch.no_grad()
def extract_features(model, encoded: Sequence[Encoded], heads: Sequence[Head], layers: Sequence[int],
                     settings: DetectionSettings) -> tuple[list[SampleFeatures], dict[str, int]]:
    """Token-level ES for `heads` and PK for `layers`, one teacher-forced pass per batch."""
    features: list[SampleFeatures | None] = [None] * len(encoded)
    totals: Counter = Counter(padded_tokens=0, response_tokens=0, jsd_terms=0, recomputed_attention_rows=0)
    with count_forward_passes(model) as passes:
        for batch in plan_by_length([e.length for e in encoded], settings.batching, settings.token_budget):
            batch_features, counters = _batch_features(model, [encoded[i] for i in batch], heads, layers, settings)
            for index, sample_features in zip(batch, batch_features):
                features[index] = sample_features
            totals.update(counters)
            advance(len(batch))  # samples through the pass, calibration and held-out alike
    return features, {**totals, **passes}


# --- selection, scores, metrics ------------------------------------------------------------------


def all_heads(model) -> list[Head]:
    config = model.config
    return [(layer, head) for layer in range(config.num_hidden_layers) for head in range(config.num_attention_heads)]


def _scaled(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return (values - low) / (high - low) if high > low else values - low


def _min_max(values: list[torch.Tensor]) -> tuple[float, float]:
    joined = torch.cat(values)
    return float(joined.min()), float(joined.max())


def _best(aucs: list[float], count: int) -> list[int]:
    return sorted(range(len(aucs)), key=lambda i: -aucs[i])[:count]


def _combined(pk: np.ndarray, es: np.ndarray, settings: DetectionSettings) -> np.ndarray:
    return settings.m * pk - settings.alpha * es


def select(features: Sequence[SampleFeatures], labels: Sequence[bool], heads: Sequence[Head], layers: Sequence[int],
           settings: DetectionSettings) -> Detector:
    """Copy heads with the highest AUC of -ES, knowledge layers with the highest AUC of PK (per-response means),
    the MinMax ranges of their token-level sums, and the threshold of Youden's J for the decision."""
    es_means = np.stack([f.es.mean(1).numpy() for f in features])
    pk_means = np.stack([f.pk.mean(1).numpy() for f in features])
    head_index = _best([roc_auc_score(labels, -es_means[:, i]) for i in range(len(heads))], settings.top_n_external)
    layer_index = _best([roc_auc_score(labels, pk_means[:, i]) for i in range(len(layers))], settings.top_k_parameter)
    chosen = [SampleFeatures(es=f.es[head_index], pk=f.pk[layer_index]) for f in features]
    detector = Detector(tuple(heads[i] for i in head_index), tuple(layers[i] for i in layer_index),
                        pk_range=_min_max([f.pk.sum(0) for f in chosen]), es_range=_min_max([f.es.sum(0) for f in chosen]))
    false_positive, true_positive, thresholds = roc_curve(labels, _combined(*detector.parts(chosen), settings))
    return replace(detector, threshold=float(thresholds[np.argmax(true_positive - false_positive)]))


def placement_values(labels: Sequence[bool], scores: Sequence[float]) -> list[float]:
    """DeLong placement values: per sample, the share of the other class it is ranked right against.

    Ties count half. Their mean over all samples is the ROC-AUC.
    """
    labels, scores = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    positives, negatives = scores[labels], scores[~labels]
    return [
        float(((negatives < s).sum() + 0.5 * (negatives == s).sum()) / len(negatives)) if label
        else float(((positives > s).sum() + 0.5 * (positives == s).sum()) / len(positives))
        for label, s in zip(labels, scores)
    ]


def calibrate(model, tokenizer, samples: Sequence[Sample], settings: DetectionSettings) -> tuple[Detector, dict[str, int]]:
    """One pass over the calibration samples with every head and layer, then the selection."""
    heads, layers = all_heads(model), list(range(model.config.num_hidden_layers))
    features, counters = extract_features(model, encode(tokenizer, samples), heads, layers, settings)
    return select(features, [s.hallucinated for s in samples], heads, layers, settings), counters


def run_detection(model, tokenizer, calibration: Sequence[Sample], held_out: Sequence[Sample],
                  settings: DetectionSettings) -> PipelineOutput:
    """Calibrate, then score the held-out samples in a pass that computes only the chosen heads and layers.

    quality: "auc" (gated) of the combined score, "auc_pk" and "auc_es" of each part alone, Pearson r.
    """
    vocabulary = model.get_output_embeddings().out_features
    if settings.topk is not None and settings.topk >= vocabulary:  # every token kept: the full vocabulary's JSD
        raise ValueError(f"topk={settings.topk} keeps the whole {vocabulary}-token vocabulary: a no-op; "
                         f"choose k below {vocabulary}")
    detector, calibration_counters = calibrate(model, tokenizer, calibration, settings)
    features, counters = extract_features(model, encode(tokenizer, held_out), detector.heads, detector.layers, settings)
    pk, es = detector.parts(features)
    scores = _combined(pk, es, settings)
    labels = [s.hallucinated for s in held_out]
    quality = {
        "auc": float(roc_auc_score(labels, scores)),
        "auc_pk": float(roc_auc_score(labels, pk)),
        "auc_es": float(roc_auc_score(labels, -es)),
        "pearson_r": float(pearsonr(scores, np.asarray(labels, dtype=float)).statistic),
    }
    decisions = ["hallucinated" if score >= detector.threshold else "faithful" for score in scores]
    return PipelineOutput(
        quality=quality,
        counters={name: calibration_counters[name] + value for name, value in counters.items()},
        item_ids=[s.id for s in held_out],
        item_scores=placement_values(labels, scores),
        item_outputs=list(decisions),
    )
