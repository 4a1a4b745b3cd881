"""The bad-input matrix: every input that can be wrong fails with a message naming the fix, and loses nothing.

Rows covered elsewhere, each asserting its message:
- corrupt JSON baseline, schema-version mismatch, another device class or model, a case entry that does not
  parse, two processes saving at once, a crash mid-write: `tests/test_baseline.py`;
- a corrupt baseline in a real run (every case fails with the fix, the file is kept): `tests/test_plugin.py`;
- a result file that is not one, or of another schema, for `harness diff`: `tests/test_diff.py`;
- dataset JSONL with bad lines, duplicate ids, no items: `tests/test_jsonl.py`;
- matplotlib missing for the HTML report: `tests/test_html_report.py`;
- attention weights asked of a non-eager model: `tests/test_detection.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diff_fixtures import recorded
from transformers import (
    DistilBertConfig,
    DistilBertModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from harness import toggles
from harness.gate.verdict import judge
from harness.models.embedded import REFERENCE_MODEL
from harness.models.loading import (
    LoadSpec,
    ModelLoadError,
    _ensure_pad_token,
    load_model,
    model_path,
    resolve_device,
)
from harness.plugin.options import BenchOptions, check_options
from harness.records import NEW
from harness.store.baseline import save_baseline

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def model_dir(tmp_path: Path, model: torch.nn.Module, safe: bool = True) -> Path:
    """A local model directory: the given model's weights and config, with the embedded tokenizer."""
    directory = tmp_path / "model"
    if safe:
        model.save_pretrained(directory)
    else:  # transformers 5 writes only safetensors: pickle the weights the way older checkpoints were
        model.config.save_pretrained(directory)
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    for name in TOKENIZER_FILES:
        shutil.copy(REFERENCE_MODEL / name, directory / name)
    return directory


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def spec(path: Path, **opt_ins: bool) -> LoadSpec:
    return LoadSpec(str(path), "cpu", "float32", **opt_ins)


# --- models ------------------------------------------------------------------------------------------------------


def test_model_path_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config.json there; give a local Hugging Face model directory"):
        model_path(str(tmp_path / "nowhere"))


def test_a_model_that_is_not_a_causal_lm(tmp_path: Path) -> None:
    config = DistilBertConfig(vocab_size=128, dim=16, hidden_dim=32, n_layers=1, n_heads=2)
    path = model_dir(tmp_path, DistilBertModel(config))
    with pytest.raises(ModelLoadError, match=r"is not a causal language model .*AutoModelForCausalLM"):
        load_model(spec(path))


def test_pickled_weights_are_refused_unless_opted_in(tmp_path: Path) -> None:
    path = model_dir(tmp_path, tiny_llama(), safe=False)
    assert not list(path.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match=r"holds only pickled weights \(pytorch_model.bin\); convert them to "
                                             r"safetensors .* --bench-allow-pickle-weights"):
        load_model(spec(path))
    loaded = load_model(spec(path, allow_pickle_weights=True))
    assert isinstance(loaded.model, LlamaForCausalLM)


MODELING = '''
from transformers import LlamaConfig, LlamaForCausalLM


class ShippedConfig(LlamaConfig):
    model_type = "shipped-llama"


class ShippedForCausalLM(LlamaForCausalLM):
    config_class = ShippedConfig
'''


def test_remote_code_is_refused_unless_opted_in(tmp_path: Path) -> None:
    path = model_dir(tmp_path, tiny_llama())
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="shipped-llama", auto_map={"AutoConfig": "modeling_shipped.ShippedConfig",
                                                        "AutoModelForCausalLM": "modeling_shipped.ShippedForCausalLM"})
    (path / "config.json").write_text(json.dumps(config))
    (path / "modeling_shipped.py").write_text(MODELING)
    with pytest.raises(ModelLoadError, match=r"needs the Python code shipped in the model directory; read it, then opt "
                                             r"in with --bench-trust-remote-code"):
        load_model(spec(path))
    loaded = load_model(spec(path, trust_remote_code=True))
    assert type(loaded.model).__name__ == "ShippedForCausalLM"


def test_tokenizer_without_pad_token_pads_with_eos_and_without_either_is_refused(tmp_path: Path) -> None:
    tokenizer = SimpleNamespace(pad_token=None, eos_token="</s>")
    _ensure_pad_token(tokenizer, tmp_path)
    assert tokenizer.pad_token == "</s>"
    with pytest.raises(ModelLoadError, match="has neither a pad token nor an EOS token.*set pad_token"):
        _ensure_pad_token(SimpleNamespace(pad_token=None, eos_token=None), tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_but_absent() -> None:
    with pytest.raises(ModelLoadError, match="--bench-device cuda was requested but torch sees no CUDA device; use "
                                             "--bench-device cpu or auto"):
        resolve_device("cuda")


# --- toggles and optional dependencies -----------------------------------------------------------------------


def test_unknown_toggle_value() -> None:
    with pytest.raises(toggles.ToggleError, match=r"toggle 'kv_cache' has no value 'maybe'; values: off, on"):
        toggles.variants({"kv_cache": ("maybe",)}, "ablation")


def test_missing_optional_dependency_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(toggles, "_installed", lambda module: module != "bitsandbytes")
    reason = toggles.unavailable_reason({"quantization": "nf4"}, "cpu")
    assert reason == "quantization=nf4 needs bitsandbytes: pip install 'pytest-llm-harness[quant]'"


def test_a_quantized_load_without_bitsandbytes_says_what_to_install(monkeypatch) -> None:
    # a case's own quantized model (the GPU scoring panel's nf4 copy) is not a toggle the variant could skip by
    monkeypatch.setattr(toggles, "_installed", lambda module: module != "bitsandbytes")
    with pytest.raises(ModelLoadError, match=r"^quantization=nf4 needs bitsandbytes: pip install 'pytest-llm-harness\[quant\]'$"):
        load_model(LoadSpec("embedded", "cpu", "float32", "nf4"))


# --- baselines -----------------------------------------------------------------------------------------------


def test_baseline_missing_a_case_says_how_to_record_it() -> None:
    record = next(iter(recorded().records.values()))
    verdict = judge(record, None, None)
    assert verdict.status == NEW
    assert "not in the baseline yet: record it with --bench-save-baseline or harness accept" in verdict.message


def test_saved_baseline_holds_no_environment_values(tmp_path: Path, monkeypatch) -> None:
    secret = "hf_s3cr3t-token-value-0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    results = recorded()
    path = tmp_path / "baseline.json"
    save_baseline(path, results.device_class, results.model_id, {**results.fingerprint, "cwd": os.getcwd()},
                  list(results.records.values()), "reason", "abc1234")
    text = path.read_text()
    assert secret not in text and os.getcwd() not in text and str(Path.home()) + "/" not in text
    values = {v for v in os.environ.values() if len(v) >= 12 and "/" not in v}
    assert not [v for v in values if v in text]


# --- a case that fails must not take the others with it ------------------------------------------------------

CASES = '''
import time
import pytest
import torch
from harness.records import PipelineOutput


def output():
    return PipelineOutput(quality={"accuracy": 1.0}, counters={"generated_tokens": 1}, item_ids=["a"],
                          item_scores=[1.0], item_outputs=["x"])


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"]})
def test_fine(bench):
    bench.run(group="fine", pipeline=lambda model, tokenizer, variant: output())


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"]})
def test_trouble(bench):
    def pipeline(model, tokenizer, variant):
        if variant["kv_cache"] == "on":
            TROUBLE
        return output()

    bench.run(group="trouble", pipeline=pipeline)
'''


def run_cases(pytester: pytest.Pytester, trouble: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_cases=CASES.replace("TROUBLE", trouble))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark", "--bench-rounds", "1", *args)


def test_a_save_with_fewer_rounds_than_speed_needs_is_refused_before_any_work(pytester: pytest.Pytester) -> None:
    result = run_cases(pytester, "pass", "--bench-save-baseline", "--bench-reason", "too few rounds")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*fewer than 3 timed rounds a variant cannot judge speed; give --bench-rounds 3 or more*"])
    assert not (pytester.path / "baselines").exists()


def test_out_of_memory_fails_its_case_and_the_others_go_on(pytester: pytest.Pytester) -> None:
    result = run_cases(pytester, 'raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")')
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*eval[[]trouble|kv_cache=on] ran out of memory on cpu (CUDA out of memory. Tried to "
                                 "allocate 20.00 GiB); the other cases go on. To make it fit: fewer items per batch*"])


def test_a_hung_case_hits_its_time_limit_and_the_others_go_on(pytester: pytest.Pytester) -> None:
    # 6 s: the first case's limit also covers loading the model
    result = run_cases(pytester, "while True: time.sleep(0.01)", "--bench-timeout", "6")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*eval[[]trouble|kv_cache=on] ran past its time limit of 6 s and was stopped; if it "
                                 "is merely slow, raise --bench-timeout*"])


def test_a_run_stopped_by_sigterm_still_reports_and_saves_the_cases_it_finished(pytester: pytest.Pytester) -> None:
    # what `timeout` or a CI runner does to a run that is taking too long
    stop = '__import__("os").kill(__import__("os").getpid(), __import__("signal").SIGTERM)'
    result = run_cases(pytester, stop, "--bench-save-baseline", "--bench-reason", "stopped on purpose", "--bench-rounds", "3")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    # a case's variants are measured together, their rounds interleaved: the stopped case's reference goes with it
    result.stdout.fnmatch_lines(["*the run was interrupted: the 2 case(s) measured before it are reported and saved*"])
    saved = json.loads((pytester.path / "baselines" / "cpu" / "embedded-reference.json").read_text())
    assert set(saved["cases"]) == {"eval[fine|reference]", "eval[fine|kv_cache=on]"}


def test_the_sigterm_handler_is_undone_after_the_run_and_never_replaces_anothers() -> None:
    import signal

    from harness.measure.guard import restore_sigterm, stop_on_sigterm

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    stop_on_sigterm()
    with pytest.raises(KeyboardInterrupt, match="stopped by signal SIGTERM"):
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
    restore_sigterm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def theirs(signum, frame) -> None:
        return None

    signal.signal(signal.SIGTERM, theirs)
    try:
        stop_on_sigterm()
        restore_sigterm()
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_unknown_toggle_value_in_a_bench_case_fails_collection_with_the_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=CASES.replace('["on"]', '["maybe"]', 1).replace("TROUBLE", "pass"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*toggle 'kv_cache' has no value 'maybe'; values: off, on*"])


@pytest.mark.parametrize("args, message", [
    (("--bench-threads", "many"), "--bench-threads many: give auto or a whole number of threads, at least 1"),
    (("--bench-rounds", "5", "--bench-max-rounds", "3"), "--bench-max-rounds must be at least --bench-rounds"),
    (("--bench-min-time", "-1"), "--bench-min-time must not be negative"),
    (("--bench-confirm-pairs", "-1"), "--bench-confirm-pairs must not be negative (0 turns the paired confirmation off)"),
    (("--bench-inject", "slowdown=-0.5"), "--bench-inject slowdown=-0.5: '-0.5' must be a number in (0, 10]"),
    (("--bench-report", "out.txt"), "--bench-report out.txt: the suffix picks the format, one of"),
])
def test_bad_measurement_options_are_usage_errors_that_say_what_to_give(pytester: pytest.Pytester, args, message) -> None:
    config = pytester.parseconfig("--benchmark", *args)  # the options as pytest parses them, without a run
    with pytest.raises(pytest.UsageError, match=re.escape(message)):
        check_options(BenchOptions.from_config(config))


@pytest.mark.parametrize("args, message", [
    (("--bench-report", "afile/report.md"), "--bench-report afile/report.md: "),
    (("--bench-report", "out.md"), "--bench-report out.md: that is a directory; give a file path"),
    (("--bench-baseline-dir", "afile"), "--bench-baseline-dir afile: "),
    (("--bench-baseline-dir", "no-such-dir"), "--bench-baseline-dir no-such-dir: no such directory"),
    (("--bench-baseline-dir", "afile/baselines", "--bench-save-baseline", "--bench-reason", "why"),
     "so the baselines could not be saved; give a directory you can write"),
])
def test_outputs_that_could_not_be_written_are_refused_before_any_work(pytester: pytest.Pytester, args, message) -> None:
    (pytester.path / "afile").write_text("not a directory")
    (pytester.path / "out.md").mkdir()
    config = pytester.parseconfig("--benchmark", *args)
    with pytest.raises(pytest.UsageError, match=re.escape(message)):
        check_options(BenchOptions.from_config(config), pytester.path)


def test_the_default_baseline_directory_may_not_exist_yet(pytester: pytest.Pytester) -> None:
    # A new project has no baselines/: every case reads "new" until a save creates it. A directory given on
    # purpose must exist, or a typo would read every case as new.
    check_options(BenchOptions.from_config(pytester.parseconfig("--benchmark")), pytester.path)


def test_an_html_report_without_its_extra_is_refused_with_the_install_command(pytester, monkeypatch) -> None:
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else found(name, *a))
    config = pytester.parseconfig("--benchmark", "--bench-report", "report.html")
    with pytest.raises(pytest.UsageError, match=re.escape('pip install "pytest-llm-harness[report]"')):
        check_options(BenchOptions.from_config(config), pytester.path)
    check_options(BenchOptions.from_config(pytester.parseconfig("--benchmark", "--bench-report", "report.md")),
                  pytester.path)  # Markdown needs no extra


def test_a_bad_option_stops_the_run_before_any_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cases=CASES.replace("TROUBLE", "pass"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark", "--bench-min-time", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--bench-min-time must not be negative" in result.stderr.str()


def test_harness_refuses_a_report_it_could_not_write_before_reading_any_file(tmp_path: Path, capsys) -> None:
    from harness.cli import main

    (tmp_path / "afile").write_text("not a directory")
    # the inputs do not exist either: the output's problem is found first, before any work
    assert main(["diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
                 "--json", str(tmp_path / "afile" / "report.json")]) == 2
    error = capsys.readouterr().err
    assert "--json" in error and "is a file, not a directory" in error and "does not exist" not in error
    assert main(["report", str(tmp_path / "new.json"), "--markdown", str(tmp_path / "report.txt")]) == 2
    assert "the suffix picks the format" in capsys.readouterr().err
