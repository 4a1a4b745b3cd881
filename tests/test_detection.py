"""The detection pipeline: feature equality across attention paths and batching, JSD, placement values,
selection on calibration only, on a random-initialized Llama and on the embedded model."""

import copy
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import softmax
from scipy.stats import entropy
from sklearn.metrics import roc_auc_score
from transformers import LlamaConfig, LlamaForCausalLM

from harness.models.loading import LoadSpec, load_model
from harness.pipelines.detection import (  # the pass's own hooks and padding, for the 4-bit check
    AttentionWeightsUnavailable,
    DetectionSettings,
    Encoded,
    Sample,
    _Capture,
    _pad,
    all_heads,
    build_samples,
    encode,
    external_scores,
    extract_features,
    forward_with_attentions,
    js_divergence,
    placement_values,
    recomputed_probabilities,
    rotary_qk,
    run_detection,
    split_samples,
)
from harness.tasks import check, generate_suite


def _random_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    # Grouped-query attention (2 heads per key head); a wide init so attention is far from uniform.
    config = LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
                         attn_implementation="eager")
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def embedded():
    return load_model(LoadSpec("embedded", "cpu", "float32"))


def _random_inputs(seed: int, count: int, low: int, high: int) -> list[Encoded]:
    """Random token sequences of random lengths; every response position is a scored row."""
    rng = random.Random(seed)
    encoded = []
    for _ in range(count):
        prompt_length, response_length = rng.randint(12, 60), rng.randint(1, 8)
        ids = tuple(rng.randrange(low, high) for _ in range(prompt_length + response_length))
        encoded.append(Encoded(ids, prompt_length, tuple(range(prompt_length - 1, len(ids) - 1))))
    return encoded


def _features(model, encoded, attention: str, batching: str, heads=None, layers=None):
    model.set_attn_implementation(attention)
    heads = all_heads(model) if heads is None else heads
    layers = list(range(model.config.num_hidden_layers)) if layers is None else layers
    return extract_features(model, encoded, heads, layers, DetectionSettings(batching=batching, token_budget=256))


def _assert_features_equal(actual, expected, atol: float) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert got.es.shape == want.es.shape and got.pk.shape == want.pk.shape
        assert got.es.numel() > 0
        torch.testing.assert_close(got.es, want.es, atol=atol, rtol=0)
        torch.testing.assert_close(got.pk, want.pk, atol=atol, rtol=0)


@pytest.mark.parametrize("batching", ["1", "dynamic"])
@pytest.mark.parametrize("which", ["random-llama", "embedded"])
def test_recomputed_es_equals_eager_on_random_inputs(which, batching, embedded):
    model = _random_llama() if which == "random-llama" else copy.deepcopy(embedded.model)
    encoded = _random_inputs(seed=1, count=6, low=3, high=model.config.vocab_size)
    eager, _ = _features(model, encoded, "eager", "1")

    asked = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: asked.append(kwargs.get("output_attentions")), with_kwargs=True)
    fast, counters = _features(model, encoded, "sdpa", batching)
    hook.remove()

    assert asked and not any(asked), "the sdpa pass must not ask for attention weights"
    rows = sum(len(e.rows) for e in encoded)
    assert counters["recomputed_attention_rows"] == len(all_heads(model)) * rows
    _assert_features_equal(fast, eager, atol=1e-4)


@pytest.mark.parametrize("batching", ["static8", "dynamic"])
def test_padded_batches_match_one_at_a_time(batching):
    model = _random_llama()
    encoded = _random_inputs(seed=2, count=10, low=0, high=model.config.vocab_size)
    alone, alone_counters = _features(model, encoded, "eager", "1")
    batched, counters = _features(model, encoded, "eager", batching)
    _assert_features_equal(batched, alone, atol=1e-4)
    assert counters["padded_tokens"] > 0 and counters["forward_passes"] < alone_counters["forward_passes"]


def test_recompute_runs_on_a_4bit_model():
    # The recomputed probabilities equal eager's on a 4-bit model: exactly in the first layer, whose q and k
    # both passes compute alike, and deeper within the rounding by which the 4-bit kernels set eager's and
    # sdpa's passes apart (up to 4e-3 here with transformers 5.24 and bitsandbytes 0.50.2; a wrong mask or
    # rotary is off by 0.1 and more). The features built on them are not compared: that rounding is enough
    # to flip which prompt positions are a head's most attended.
    pytest.importorskip("bitsandbytes")
    model = load_model(LoadSpec("embedded", "cpu", "float32", "nf4")).model
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"  # the hooks see quantized projections
    (sample,) = _random_inputs(seed=4, count=1, low=3, high=model.config.vocab_size)
    ids, mask = _pad([sample], model.device)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0), "use_cache": False}
    layers, heads = range(model.config.num_hidden_layers), list(range(model.config.num_attention_heads))
    rows = torch.arange(ids.shape[1])
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = forward_with_attentions(model, **inputs)[1]
    model.set_attn_implementation("sdpa")
    with torch.no_grad(), _Capture(model, [], list(layers)) as capture:
        model(**inputs)
        for layer in layers:
            attention = model.get_decoder().layers[layer].self_attn
            recomputed = recomputed_probabilities(*rotary_qk(capture, attention, layer), attention, heads, 0, rows, mask)
            torch.testing.assert_close(recomputed, eager[layer][0][:, rows].float(), atol=1e-5 if layer == 0 else 1e-2, rtol=0)


def test_attention_weights_under_sdpa_are_refused_not_empty():
    # transformers 5 answers sdpa + output_attentions=True with an empty tuple: ES would vanish silently.
    model = _random_llama()
    ids = torch.tensor([[1, 2, 3, 4]])
    model.set_attn_implementation("sdpa")
    with pytest.raises(AttentionWeightsUnavailable, match="recompute"):
        forward_with_attentions(model, input_ids=ids)
    model.set_attn_implementation("eager")
    _, attentions = forward_with_attentions(model, input_ids=ids)
    assert len(attentions) == model.config.num_hidden_layers and attentions[0].shape == (1, 4, 4, 4)


def test_pk_is_the_ffn_change_of_the_logit_lens():
    model = _random_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.zero_()  # layer 1's FFN adds nothing
    features, _ = _features(model, _random_inputs(seed=3, count=3, low=0, high=50), "eager", "1", heads=[])
    for f in features:
        assert torch.all(f.pk[0] > 1e-6), "layer 0's FFN changes the prediction"
        assert torch.all(f.pk[1].abs() < 1e-6), "a layer whose FFN adds nothing has no parametric-knowledge score"


def test_external_score_is_the_cosine_with_the_attended_prompt_state():
    hidden = torch.randn(6, 8)
    probs = torch.zeros(1, 1, 6)
    probs[0, 0, 2] = 1.0  # the head looks at prompt position 2 from row 5
    score = external_scores(probs, hidden, torch.arange(4), torch.tensor([5]), top_share=0.1)
    torch.testing.assert_close(score, torch.cosine_similarity(hidden[2], hidden[5], dim=0).reshape(1, 1))


_logits = st.integers(2, 40).flatmap(lambda v: arrays(np.float64, (2, v), elements=st.floats(-8, 8)))


@settings(max_examples=60, deadline=None)
@given(_logits)
def test_js_divergence_matches_scipy(logits):
    p, q = softmax(logits, axis=-1)
    m = (p + q) / 2
    # The divergence itself, from scipy's KL: scipy's `jensenshannon` is its square root, which is nan when
    # rounding makes the divergence of near-identical rows slightly negative.
    expected = (entropy(p, m) + entropy(q, m)) / 2
    got = js_divergence(torch.tensor(logits[:1]), torch.tensor(logits[1:]))
    assert got.item() == pytest.approx(expected, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(_logits, st.integers(1, 40))
def test_topk_js_divergence_is_a_lower_bound_and_exact_at_vocab_minus_one(logits, k):
    p, q = torch.tensor(logits[:1]), torch.tensor(logits[1:])
    full = js_divergence(p, q).item()
    # 1e-5: float32 sums of up to 40 terms in a different order differ by a few 1e-7 per term.
    assert js_divergence(p, q, topk=min(k, logits.shape[1])).item() <= full + 1e-5
    # With k = V - 1 the union misses at most one token, which is then the rest bucket: nothing is lost.
    assert js_divergence(p, q, topk=logits.shape[1] - 1).item() == pytest.approx(full, abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40)
       .filter(lambda pairs: len({label for label, _ in pairs}) == 2))
def test_placement_values_average_to_the_auc(pairs):
    labels, scores = zip(*pairs)
    assert np.mean(placement_values(labels, scores)) == pytest.approx(roc_auc_score(labels, scores))


def test_whitespace_response_tokens_are_not_scored(embedded):
    encoded = encode(embedded.tokenizer, [Sample("s", "Answer:", " pink", False)])[0]
    prompt = len(embedded.tokenizer("Answer:")["input_ids"])
    assert encoded.rows == (prompt, prompt + 1, prompt + 2, prompt + 3)  # the rows predicting p, i, n, k


def test_detection_on_the_model_own_answers_selects_on_calibration_only(embedded):
    items = generate_suite("context_qa", n=60, seed=7)
    samples = build_samples(embedded.model, embedded.tokenizer, items)
    by_id = {item.id: item for item in items}
    assert all(s.hallucinated == (not check(by_id[s.id], s.response)) for s in samples)
    assert any(s.hallucinated for s in samples) and not all(s.hallucinated for s in samples)

    calibration, held_out = split_samples(samples)
    assert not {s.id for s in calibration} & {s.id for s in held_out}
    settings = DetectionSettings(batching="dynamic")
    output = run_detection(embedded.model, embedded.tokenizer, calibration, held_out, settings)
    flipped = [Sample(s.id, s.prompt, s.response, not s.hallucinated) for s in held_out]
    other = run_detection(embedded.model, embedded.tokenizer, calibration, flipped, settings)

    assert list(output.quality)[0] == "auc"
    # Held-out labels reach only the metrics: the same scores and decisions, the mirrored AUC.
    assert other.item_outputs == output.item_outputs
    assert other.quality["auc"] == pytest.approx(1 - output.quality["auc"])
    assert np.mean(output.item_scores) == pytest.approx(output.quality["auc"])
    assert output.counters["forward_passes"] < len(samples)  # batched: fewer passes than samples
