"""The compile=on decoding loop: the same tokens as transformers' greedy generate, one cache shape per call."""

from __future__ import annotations

import pytest
import torch

from harness.models.loading import LoadSpec, load_model
from harness.pipelines.decoding import RowTracker, count_forward_passes
from harness.pipelines.eval import EvalSettings, run_eval
from harness.pipelines.scoring import ScoringSettings, continuations
from harness.pipelines.static_greedy import (
    CACHE_LENGTH_STEP,
    cache_length,
    greedy_static,
)
from harness.tasks import generate_suite


@pytest.fixture(scope="module")
def loaded():
    return load_model(LoadSpec("embedded", "cpu", "float32", "none"))


def _encoded(loaded, prompts):
    return loaded.tokenizer(prompts, return_tensors="pt", padding=True)


def test_the_loop_writes_the_tokens_greedy_generate_writes(loaded):
    # left-padded rows of different lengths: the positions and the mask must keep each row's own
    prompts = [item.prompt for item in generate_suite("math", n=3, seed=4)] + ["What is 2 + 2?"]
    encoded = _encoded(loaded, prompts)
    expected = loaded.model.generate(**encoded, do_sample=False, max_new_tokens=24, eos_token_id=None,
                                     pad_token_id=loaded.tokenizer.pad_token_id)
    got = greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 24, compiled=False)
    assert torch.equal(got, expected)


def test_the_compiled_greedy_step_writes_generates_tokens_and_counts_each_step_once_compiled(loaded):
    # compiled, the forward and the argmax are one graph (on a GPU, one set of CUDA graphs); here inductor's CPU code.
    # The counting hook runs outside it: traced in, its counter would be a guard and compile the step again each step.
    prompts = [item.prompt for item in generate_suite("math", n=2, seed=4)] + ["What is 2 + 2?"]
    encoded = _encoded(loaded, prompts)
    expected = loaded.model.generate(**encoded, do_sample=False, max_new_tokens=12, eos_token_id=None,
                                     pad_token_id=loaded.tokenizer.pad_token_id)
    with count_forward_passes(loaded.model) as plain:
        greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 12, compiled=False)
    torch._dynamo.reset()
    loaded.model.__dict__.pop("_harness_greedy_step", None)
    with torch._dynamo.config.patch(error_on_recompile=True), count_forward_passes(loaded.model) as counts:
        got = greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 12, compiled=True)
    assert "_harness_greedy_step" in loaded.model.__dict__  # the fused step ran, not the model's compiled call
    assert torch.equal(got, expected)
    assert counts == plain and counts["forward_passes"] == 12


def test_a_reused_cache_gives_the_same_tokens_again(loaded):
    encoded = _encoded(loaded, ["Compute 7 * 6.", "What is 12 - 5?"])
    first = greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 16, compiled=False)
    cache = loaded.model._harness_static_caches[(2, CACHE_LENGTH_STEP)]
    other = _encoded(loaded, ["Compute 3 + 9.", "Name the capital of Mars."])
    greedy_static(loaded.model, other["input_ids"], other["attention_mask"], 16, compiled=False)
    again = greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 16, compiled=False)
    assert torch.equal(first, again)
    # one (rows, length), one set of cache tensors: the CUDA graphs read them at fixed addresses
    assert loaded.model._harness_static_caches[(2, CACHE_LENGTH_STEP)] is cache


def test_a_stopping_criterion_ends_the_loop_when_every_row_is_done(loaded):
    items = generate_suite("math", n=2, seed=5)
    encoded = _encoded(loaded, [item.prompt for item in items])
    width = encoded["input_ids"].shape[1]
    tracker = RowTracker(loaded.tokenizer, width, [item.answer_type for item in items], stop=True)
    got = greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 200, stopping=tracker, compiled=False)
    assert all(end is not None for end in tracker.ends)
    assert got.shape[1] - width == max(tracker.ends) < 200


def test_eval_with_the_loop_answers_as_generate_does(loaded):
    # compile=on runs this loop (compiled on a GPU only, so here as plain Python), which must not change an answer
    items = generate_suite("math", n=6, seed=0)
    plain = run_eval(loaded.model, loaded.tokenizer, items, EvalSettings(max_new_tokens=64, kv_cache=True, batching="dynamic"))
    loaded.model.__dict__.pop("_harness_static_caches", None)
    looped = run_eval(loaded.model, loaded.tokenizer, items,
                      EvalSettings(max_new_tokens=64, kv_cache=True, batching="dynamic", compile=True))
    assert loaded.model._harness_static_caches  # the loop ran, not generate
    assert looped.item_outputs == plain.item_outputs
    assert looped.counters["generated_tokens"] == plain.counters["generated_tokens"]


def test_scoring_continuations_with_the_loop_are_generates(loaded):
    prompts = [item.prompt for item in generate_suite("gpqa", n=5, seed=0)]
    def in_batches(settings):  # a batch of 4 and the one left over
        return [row for batch in (prompts[:4], prompts[4:]) for row in continuations(loaded.model, loaded.tokenizer, batch, settings)]

    plain = in_batches(ScoringSettings(kv_cache=True))
    loaded.model.__dict__.pop("_harness_static_caches", None)
    looped = in_batches(ScoringSettings(kv_cache=True, compile=True))
    assert set(loaded.model._harness_static_caches) == {(4, cache_length(max(
        len(loaded.tokenizer(p)["input_ids"]) for p in prompts[:4]) + 32)), (1, cache_length(
        len(loaded.tokenizer(prompts[4])["input_ids"]) + 32))}  # a batch of 4 and the one left over
    assert looped == plain and all(len(row) == 32 for row in looped)


def test_cache_lengths_round_up_to_a_few_shapes():
    assert cache_length(1) == CACHE_LENGTH_STEP
    assert cache_length(CACHE_LENGTH_STEP) == CACHE_LENGTH_STEP
    assert cache_length(CACHE_LENGTH_STEP + 1) == 2 * CACHE_LENGTH_STEP


def test_no_new_tokens_is_refused(loaded):
    encoded = _encoded(loaded, ["Compute 7 * 6."])
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        greedy_static(loaded.model, encoded["input_ids"], encoded["attention_mask"], 0, compiled=False)


def test_compiled_steps_of_several_rows_attend_with_grouped_sdpa_and_the_model_keeps_its_attention(loaded):
    # sdpa with the static cache's mask copies the key/value heads each step, grouped_sdpa does not
    # (BATCHED_STEP_ATTENTION); the prefill, a single row and an uncompiled loop keep the attention the model was
    # loaded with
    model = loaded.model
    assert model.config._attn_implementation == "sdpa"
    seen: list[str] = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    try:
        for prompts, compiled in ((["Compute 7 * 6.", "What is 12 - 5?"], True), (["Compute 7 * 6."], True),
                                  (["Compute 7 * 6.", "What is 12 - 5?"], False)):
            seen.clear()
            encoded = _encoded(loaded, prompts)
            greedy_static(model, encoded["input_ids"], encoded["attention_mask"], 4, compiled=compiled)
            steps = "grouped_sdpa" if compiled and len(prompts) > 1 else "sdpa"
            assert seen == ["sdpa"] + [steps] * 3, (prompts, compiled)
            assert model.config._attn_implementation == "sdpa"
    finally:
        hook.remove()


def test_grouped_sdpa_steps_give_sdpas_tokens_without_copying_the_key_value_heads(loaded, monkeypatch):
    # The embedded model has 6 query heads over 2 key/value heads. One-token steps of left-padded rows, uncompiled
    # and compiled (inductor's CPU code): the same tokens as sdpa's loop, and the same logits to rounding.
    from harness.pipelines import static_greedy
    from harness.pipelines.attention import (
        GROUPED_SDPA,
        attention_implementation,
        grouped_query_sdpa,
    )

    model = loaded.model
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    encoded = _encoded(loaded, ["Compute 7 * 6.", "What is 12 - 5? Show the steps."])
    expected = greedy_static(model, encoded["input_ids"], encoded["attention_mask"], 12, compiled=False)
    from harness.pipelines import attention as attention_module

    handed_on = []  # the calls it hands to transformers' sdpa: the prefill's, one a layer, and no step's
    plain_sdpa = attention_module.sdpa_attention_forward
    monkeypatch.setattr(attention_module, "sdpa_attention_forward",
                        lambda *args, **kwargs: handed_on.append(args[1].shape[2]) or plain_sdpa(*args, **kwargs))
    with attention_implementation(model, GROUPED_SDPA):
        assert torch.equal(greedy_static(model, encoded["input_ids"], encoded["attention_mask"], 12, compiled=False), expected)
    assert len(handed_on) == model.config.num_hidden_layers and min(handed_on) > 1
    monkeypatch.undo()
    torch._dynamo.reset()
    model.__dict__.pop("_harness_greedy_step", None)
    monkeypatch.setitem(static_greedy.BATCHED_STEP_ATTENTION, "sdpa", GROUPED_SDPA)
    try:
        assert torch.equal(greedy_static(model, encoded["input_ids"], encoded["attention_mask"], 12, compiled=True), expected)
    finally:
        torch._dynamo.reset()
        model.__dict__.pop("_harness_greedy_step", None)
    assert model.config._attn_implementation == "sdpa"

    # One attention call of a step against transformers' sdpa with the heads copied up: the same output.
    attention = model.model.layers[0].self_attn
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 6, 1, 32, generator=generator)
    key, value = torch.randn(2, 2, 9, 32, generator=generator), torch.randn(2, 2, 9, 32, generator=generator)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :3] = False  # the first row's left padding
    got, _ = grouped_query_sdpa(attention, query, key, value, mask, scaling=attention.scaling)
    copied = torch.nn.functional.scaled_dot_product_attention(query, key.repeat_interleave(3, 1), value.repeat_interleave(3, 1),
                                                              attn_mask=mask, scale=attention.scaling)
    assert got.shape == (2, 1, 6, 32)
    torch.testing.assert_close(got, copied.transpose(1, 2))
