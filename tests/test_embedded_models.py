"""The shipped embedded models (offline loading, storage, generation, training having happened) and the training recipe."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from harness.models.embedded import REFERENCE_MODEL, SIBLING_MODEL
from harness.models.embedded.tokenizer import build_tokenizer
from harness.tasks import SUITES, generate_suite
from research.embedded.corpus import Example
from research.embedded.evaluate import SuiteScore, score_suite
from research.embedded.train import (
    IGNORE_INDEX,
    TrainSettings,
    encode_batch,
    learning_rate_at,
    targets_met,
    train,
)

MODELS = {"reference": REFERENCE_MODEL, "sibling": SIBLING_MODEL}
MAX_WEIGHTS_BYTES = 10_000_000
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def _no_network(*args, **kwargs):
    raise AssertionError("an embedded model must load without network access")


def _load(directory: Path, **kwargs):
    """Model and tokenizer from a local directory, with the Hub offline and sockets refused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        # huggingface_hub reads the variable once, at import: set its constant too.
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
        patch.setattr(socket, "getaddrinfo", _no_network)
        patch.setattr(socket.socket, "connect", _no_network)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    return model.eval(), tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: a second thread barely helps alone and, beside another busy process, slows every step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded() -> dict[str, tuple]:
    """Each embedded model and its tokenizer, loaded once for the module, offline."""
    return {name: _load(directory) for name, directory in MODELS.items()}


@pytest.fixture(scope="module")
def reference_eager():
    model, _ = _load(REFERENCE_MODEL, attn_implementation="eager")
    return model


def _prompts() -> list[str]:
    """One held-out prompt per suite."""
    return [generate_suite(name, 1, seed=0)[0].prompt for name in SUITES]


@torch.no_grad()
def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 48) -> list[list[int]]:
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    output = model.generate(
        **batch,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return output[:, batch["input_ids"].shape[1] :].tolist()


# --- the shipped models ---


@pytest.mark.parametrize("name", MODELS)
def test_loads_offline_as_llama(loaded, name: str) -> None:
    model, tokenizer = loaded[name]
    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )


@pytest.mark.parametrize("name", MODELS)
def test_weights_are_one_small_safetensors_file(name: str) -> None:
    directory = MODELS[name]
    files = sorted(p.name for p in directory.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if Path(f).suffix in PICKLE_SUFFIXES], files
    assert [f for f in files if "safetensors" in f] == ["model.safetensors"], files
    assert (directory / "model.safetensors").stat().st_size <= MAX_WEIGHTS_BYTES


@pytest.mark.parametrize("name", MODELS)
def test_greedy_generation_is_deterministic(loaded, name: str) -> None:
    model, tokenizer = loaded[name]
    prompts = _prompts()
    assert _greedy(model, tokenizer, prompts) == _greedy(model, tokenizer, prompts)


def test_eager_and_sdpa_attention_agree(loaded, reference_eager) -> None:
    sdpa, tokenizer = loaded["reference"]
    assert sdpa.config._attn_implementation == "sdpa"
    assert reference_eager.config._attn_implementation == "eager"
    prompts = _prompts()
    for prompt in prompts:  # one at a time: no padding
        assert _greedy(sdpa, tokenizer, [prompt]) == _greedy(reference_eager, tokenizer, [prompt]), prompt
    assert _greedy(sdpa, tokenizer, prompts) == _greedy(reference_eager, tokenizer, prompts)  # left-padded batch


def test_reference_model_is_trained(loaded) -> None:
    model, tokenizer = loaded["reference"]
    score = score_suite(model, tokenizer, "math", n=16, seed=0)
    assert score.n == 16
    assert score.accuracy >= 0.5, f"held-out math accuracy {score.accuracy}: the shipped weights look untrained"


@torch.no_grad()
def test_reference_and_sibling_differ(loaded) -> None:
    reference, tokenizer = loaded["reference"]
    sibling, _ = loaded["sibling"]
    batch = tokenizer(_prompts(), return_tensors="pt", padding=True)
    difference = (reference(**batch).logits - sibling(**batch).logits).abs().max().item()
    assert difference > 1e-3


# --- the training recipe ---


def test_encode_batch_trains_on_completion_and_eos_only() -> None:
    tokenizer = build_tokenizer()
    examples = [Example("ab", " c"), Example("", "xyz")]
    batch = encode_batch(examples, tokenizer, torch.device("cpu"))
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    m = IGNORE_INDEX
    assert batch["input_ids"].tolist() == [
        [bos, *ids("ab"), *ids(" c"), eos],
        [bos, *ids("xyz"), eos, pad],  # right-padded
    ]
    assert batch["labels"].tolist() == [
        [m, m, m, *ids(" c"), eos],
        [m, *ids("xyz"), eos, m],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]
    assert {tensor.dtype for tensor in batch.values()} == {torch.int64}


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    settings = TrainSettings(output=Path("unused"), steps=1000, warmup_steps=100, learning_rate=1.0)
    rates = [learning_rate_at(step, settings) for step in range(settings.steps + 1)]
    warmup, decay = rates[: settings.warmup_steps], rates[settings.warmup_steps :]
    assert rates[0] == pytest.approx(1.0 / settings.warmup_steps)
    assert all(a < b for a, b in zip(warmup, warmup[1:]))
    assert max(rates) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert rates[-1] == pytest.approx(0.1)
    assert min(rates[settings.warmup_steps :]) == pytest.approx(0.1)


def _qa(accuracy: float, faithful: float, hallucinated: float, conflict_n: int = 10) -> SuiteScore:
    return SuiteScore("context_qa", 100, accuracy, conflict_n, faithful, hallucinated)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([], 0),
        ([SuiteScore("math", 100, 0.5)], 0),  # one middle suite is not enough
        ([SuiteScore("math", 100, 0.95)], 1),  # high
        ([SuiteScore("math", 100, 0.90), SuiteScore("aime", 100, 0.1)], 1),  # bounds are inclusive
        ([SuiteScore("aime", 100, 0.30), SuiteScore("gpqa", 100, 0.85)], 1),  # two middle suites
        ([_qa(0.1, faithful=0.2, hallucinated=0.5)], 1),  # mixed faithfulness on conflicts
        ([_qa(0.1, faithful=0.6, hallucinated=0.1)], 0),
        ([_qa(0.1, faithful=0.5, hallucinated=0.5, conflict_n=0)], 0),
        (
            [
                SuiteScore("math", 100, 0.97),
                SuiteScore("aime", 100, 0.40),
                SuiteScore("gpqa", 100, 0.60),
                _qa(0.5, faithful=0.4, hallucinated=0.3),
            ],
            3,
        ),
    ],
)
def test_targets_met(scores: list[SuiteScore], expected: int) -> None:
    assert targets_met(scores) == expected


def test_targets_met_margin_moves_every_bound_inward() -> None:
    scores = [
        SuiteScore("math", 100, 0.92),
        SuiteScore("aime", 100, 0.32),
        SuiteScore("gpqa", 100, 0.60),
        _qa(0.83, faithful=0.22, hallucinated=0.5),
    ]
    assert targets_met(scores) == 3
    assert targets_met(scores, margin=0.04) == 0


def test_tiny_training_run_writes_a_loadable_model(tmp_path: Path) -> None:
    settings = TrainSettings(output=tmp_path, steps=3, batch_size=4, eval_every=3, eval_items=2, device="cpu")
    log = train(settings)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "training_log.json"} <= files
    assert not {f for f in files if Path(f).suffix in PICKLE_SUFFIXES}

    written = json.loads((tmp_path / "training_log.json").read_text())
    assert written["steps_trained"] == 3
    assert written["selected_step"] == 3
    assert written["settings"]["output"] == str(tmp_path)
    [evaluation] = written["evaluations"]
    assert evaluation["step"] == 3
    assert [s["suite"] for s in evaluation["scores"]] == list(SUITES)
    assert all(s["n"] == 2 and 0.0 <= s["accuracy"] <= 1.0 for s in evaluation["scores"])
    assert written["evaluations"] == json.loads(json.dumps(log["evaluations"]))

    model, tokenizer = _load(tmp_path)
    assert isinstance(model, LlamaForCausalLM)
    assert tokenizer.padding_side == "left"
    assert tokenizer("Answer: 42")["input_ids"] == build_tokenizer()("Answer: 42")["input_ids"]
