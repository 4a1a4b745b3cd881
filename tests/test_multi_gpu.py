"""Many GPUs: xdist workers and their GPUs, the merge of workers' results, and device map placement.

The multi-GPU figures need a multi-GPU machine; what is tested here runs on a CPU (a real two-worker run of a
small bench case file) or on one GPU (skipped with the reason elsewhere).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.measure import environment
from harness.measure.environment import device_class, fingerprint
from harness.models.loading import LoadSpec, ModelLoadError, load_model
from harness.models.placement import (
    Placement,
    PlacementError,
    check_placement,
    layout_of,
    parse_max_memory,
    placement_from_options,
)
from harness.plugin import workers
from harness.plugin.merge import USER_PROPERTY, MergedRun, WorkerResults, results_of
from harness.records import NEW, PASSED, CaseRecord, PipelineOutput, Speed, Verdict

needs_xdist = pytest.mark.skipif(importlib.util.find_spec("xdist") is None,
                                 reason="needs pytest-xdist: pip install -e '.[dev]'")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- which GPUs a worker gets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("worker_id, index", [("gw0", 0), ("gw7", 7), ("gw12", 12)])
def test_worker_index(worker_id, index):
    assert workers.worker_index(worker_id) == index


@pytest.mark.parametrize("worker_id", ["master", "gw", "gw-1", "1"])
def test_worker_index_refuses_what_is_not_a_worker_id(worker_id):
    with pytest.raises(workers.WorkerGpuError, match="not an xdist worker id"):
        workers.worker_index(worker_id)


@pytest.mark.parametrize("value, entries", [
    ("0,1", ["0", "1"]),
    (" 2 , 3 ", ["2", "3"]),
    ("", []),  # set but empty: no GPU
    ("GPU-8f3c2a10-1111-2222-3333-444455556666,GPU-0b1c", ["GPU-8f3c2a10-1111-2222-3333-444455556666", "GPU-0b1c"]),
    ("MIG-4b0e1a2c-aaaa-bbbb-cccc-ddddeeeeffff", ["MIG-4b0e1a2c-aaaa-bbbb-cccc-ddddeeeeffff"]),
    ("0,-1,2", ["0"]),  # CUDA stops at the first invalid entry
    ("1,,0", ["1"]),
])
def test_parse_visible_devices(value, entries):
    assert workers.parse_visible_devices(value) == entries


def test_visible_gpus_reads_the_variable_and_counts_only_when_it_is_unset():
    def count_must_not_run():
        raise AssertionError("counted GPUs although CUDA_VISIBLE_DEVICES says which")

    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}, count_must_not_run) == ["3", "5"]
    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count_must_not_run) == []
    assert workers.visible_gpus({}, lambda: 4) == ["0", "1", "2", "3"]
    assert workers.visible_gpus({}, lambda: None) is None  # cannot be told without initializing CUDA


def test_each_worker_gets_its_own_gpus():
    visible = ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
    assert [workers.worker_gpus(visible, i, 4) for i in range(4)] == [["GPU-a"], ["GPU-b"], ["GPU-c"], ["GPU-d"]]
    assert [workers.worker_gpus(visible, i, 2, per_worker=2) for i in range(2)] == [["GPU-a", "GPU-b"], ["GPU-c", "GPU-d"]]
    assert workers.worker_gpus(["4", "6"], 1, 2) == ["6"]  # positions in the visible list, not GPU numbers


def test_more_workers_than_gpus_is_an_error_that_gives_the_count_that_fits():
    with pytest.raises(workers.WorkerGpuError, match=r"3 xdist workers x 1 GPU\(s\) each need 3 GPUs, but 2 are visible "
                                                     r"\(CUDA_VISIBLE_DEVICES: 0,1\); run -n 2"):
        workers.worker_gpus(["0", "1"], 0, 3)
    with pytest.raises(workers.WorkerGpuError, match=r"need 4 GPUs, but 3 are visible .*run -n 1"):
        workers.worker_gpus(["0", "1", "2"], 0, 2, per_worker=2)
    with pytest.raises(workers.WorkerGpuError, match=r"but 0 are visible .*run on CPU with --bench-device cpu"):
        workers.worker_gpus([], 0, 1)
    with pytest.raises(workers.WorkerGpuError, match="--bench-gpus-per-worker must be at least 1"):
        workers.worker_gpus(["0"], 0, 1, per_worker=0)


def test_pin_narrows_the_visible_devices():
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    workers.pin(env, ["2", "3"])
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"


@pytest.mark.parametrize("visible, per_worker, count", [(None, 1, 1), ([], 1, 1), (["0", "1", "2", "3"], 1, 4),
                                                        (["0", "1", "2", "3"], 2, 2), (["0"], 2, 1)])
def test_auto_worker_count(visible, per_worker, count):
    assert workers.auto_worker_count(visible, per_worker) == count


def test_group_name_is_the_case_function_and_its_parameters_but_the_variant():
    name = workers.group_name("bench_cases/test_eval.py::test_eval", {"variant": {"kv_cache": "on"}, "suite": "math", "n": 2})
    assert name == "bench_cases/test_eval.py::test_eval(n=2,suite=math)"
    # xdist reads the group after the node id's last '@', past its last ']'
    assert workers.group_name("t.py::t", {"suite": "a[b]@c"}) == "t.py::t(suite=a_b__c)"
    assert workers.group_name("bench_cases/test_eval.py::test_eval_at_scale", {"variant": {}}) == \
        "bench_cases/test_eval.py::test_eval_at_scale"


def _config(options: dict, workerinput: dict | None = None):
    config = SimpleNamespace(getoption=lambda name, default=None: options.get(name, default))
    if workerinput is not None:
        config.workerinput = workerinput
    return config


def test_where_this_process_stands():
    plain = _config({})
    assert not workers.is_worker(plain) and not workers.is_controller(plain) and workers.worker_total(plain) == 1
    controller = _config({"dist": "loadscope", "tx": ["popen", "popen", "2*popen"]})
    assert workers.is_controller(controller) and workers.worker_total(controller) == 4
    worker = _config({"dist": "loadscope", "tx": ["popen"]}, {"workerid": "gw1", "workercount": 3})
    assert workers.is_worker(worker) and not workers.is_controller(worker) and workers.worker_total(worker) == 3


def _early_config(**options):
    namespace = SimpleNamespace(**{"benchmark": True, "bench_device": "auto", "bench_gpus_per_worker": 1, **options})
    return SimpleNamespace(known_args_namespace=namespace, stash=pytest.Stash())


def test_a_worker_is_pinned_at_start_up_and_a_plain_run_that_inherited_its_variable_is_not(monkeypatch):
    from harness import plugin
    from harness.plugin import distributed

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    worker = _early_config()
    plugin.pytest_load_initial_conftests(worker, None, [])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4"
    worker.workerinput = {"workerid": "gw1", "workercount": 2}
    distributed.unpin_unless_a_worker(worker)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4"  # a real worker keeps its pin

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    nested = _early_config()  # e.g. a pytester run from inside a worker: the variable, but no workerinput
    plugin.pytest_load_initial_conftests(nested, None, [])
    distributed.unpin_unless_a_worker(nested)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,4"

    plugin.pytest_load_initial_conftests(_early_config(bench_device="cpu"), None, [])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,4"  # --bench-device cpu: nothing to pin
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    with pytest.raises(pytest.UsageError, match="3 xdist workers x 1 GPU"):
        plugin.pytest_load_initial_conftests(_early_config(), None, [])


# --- the merge of workers' results ------------------------------------------------------------------------------


def _record(case_id: str, kv_cache: str = "off") -> CaseRecord:
    reference = {"kv_cache": "off"}
    return CaseRecord(case_id, "eval", "math", {"kv_cache": kv_cache}, reference, {},
                      Speed([0.5, 0.25], 2, 10, 1 << 20, "cpu_peak_rss"),
                      PipelineOutput({"accuracy": 0.5}, {"forward_passes": 3}, ["a", "b"], [1.0, 0.0], ["1", "2"]),
                      metadata={"dtype": "float32"})


def _results(worker: str, device: str, *case_ids: str) -> WorkerResults:
    return WorkerResults(worker, {"device_class": device, "torch": "x"}, [_record(c) for c in case_ids],
                         [Verdict(c, NEW, ()) for c in case_ids])


def test_worker_results_travel_as_json_and_come_back_equal():
    results = _results("gw1", "cuda-h200", "eval[math|reference]", "eval[math|kv_cache=on]")
    results.matrix_labels = {"eval": ["kv_cache=on", "reference"]}
    text = results.to_json()
    json.loads(text)  # plain JSON: no pickle crosses between processes
    back = results_of([("other", "x"), (USER_PROPERTY, text)])
    assert back == results
    assert results_of([("other", "x")]) is None


def test_worker_results_of_another_schema_are_refused():
    data = json.loads(_results("gw0", "cpu", "eval[math|reference]").to_json())
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="another harness version"):
        WorkerResults.from_json(json.dumps(data))


def test_two_workers_merge_into_one_run_with_every_case_once():
    merged = MergedRun()
    merged.add(_results("gw0", "cuda-h200", "eval[a|reference]", "eval[a|kv_cache=on]"))
    merged.add(_results("gw1", "cuda-h200", "eval[b|reference]", "eval[b|kv_cache=on]"))
    assert list(merged.records) == ["eval[a|reference]", "eval[a|kv_cache=on]", "eval[b|reference]", "eval[b|kv_cache=on]"]
    assert set(merged.verdicts) == set(merged.records)
    assert merged.workers == {"gw0": 2, "gw1": 2}
    assert merged.fingerprint["device_class"] == "cuda-h200" and not merged.problems


def test_the_workers_matrix_labels_are_joined_so_the_controller_lists_as_missing_only_its_matrix():
    merged = MergedRun()
    first, second = _results("gw0", "cpu", "eval[a|reference]"), _results("gw1", "cpu", "search[a|reference]")
    first.matrix_labels = {"eval": ["reference", "kv_cache=on"]}
    second.matrix_labels = {"eval": ["reference"], "search": ["reference", "batching=dynamic"]}
    merged.add(first)
    merged.add(second)
    assert merged.matrix_labels == {"eval": {"reference", "kv_cache=on"}, "search": {"reference", "batching=dynamic"}}


def test_a_case_measured_on_two_workers_is_kept_once_and_said():
    merged = MergedRun()
    merged.add(_results("gw0", "cpu", "eval[a|reference]"))
    late = _results("gw1", "cpu", "eval[a|reference]")
    late.verdicts = [Verdict("eval[a|reference]", PASSED, ())]
    merged.add(late)
    assert list(merged.records) == ["eval[a|reference]"] and merged.verdicts["eval[a|reference]"].status == NEW
    assert merged.problems == ["eval[a|reference] was measured on more than one worker; kept the first (cases sharing "
                               "a reference belong on one worker: --dist loadscope)"]


def test_a_worker_of_another_device_class_is_left_out_and_said():
    merged = MergedRun()
    merged.add(_results("gw0", "cuda-h200", "eval[a|reference]"))
    merged.add(_results("gw1", "cuda-a100", "eval[b|reference]"))
    assert list(merged.records) == ["eval[a|reference]"]
    assert "worker gw1 ran on cuda-a100, the others on cuda-h200" in merged.problems[0]


# --- device map placement --------------------------------------------------------------------------------------


def test_max_memory_parses_gpu_sizes():
    assert parse_max_memory("0=70GiB,1=70GiB") == ((0, "70GiB"), (1, "70GiB"))
    assert parse_max_memory(" 1 = 500MiB ") == ((1, "500MiB"),)
    assert parse_max_memory("0=1.5GB") == ((0, "1.5GB"),)


@pytest.mark.parametrize("text, message", [
    ("0:70GiB", "'0:70GiB' is not GPU=SIZE; write e.g. 0=70GiB,1=70GiB"),
    ("gpu0=70GiB", "'gpu0=70GiB' is not GPU=SIZE"),
    ("0=70", "'0=70' is not GPU=SIZE"),
    ("0=70GiB,", "'' is not GPU=SIZE"),
    ("cpu=100GiB", "(CPU offload is not benchmarked: give GPUs only)"),
    ("0=1GiB,0=2GiB", "GPU 0 is given twice"),
])
def test_malformed_max_memory_says_how_to_write_it(text, message):
    with pytest.raises(PlacementError) as error:
        parse_max_memory(text)
    assert message in str(error.value) and str(error.value).startswith(f"--bench-max-memory {text}:")


def test_placement_options():
    assert placement_from_options(None, None) is None  # one device, as before
    assert placement_from_options("auto", None) == Placement("auto")
    assert placement_from_options("auto", "0=70GiB,1=70GiB").max_memory_dict() == {0: "70GiB", 1: "70GiB"}
    with pytest.raises(PlacementError, match="--bench-max-memory limits .* add --bench-device-map auto"):
        placement_from_options(None, "0=70GiB")
    with pytest.raises(PlacementError, match="--bench-device-map everywhere: give one of auto, balanced"):
        placement_from_options("everywhere", None)


def test_placement_that_cannot_run_here_is_refused_with_the_fix():
    two = Placement("auto", ((0, "70GiB"), (1, "70GiB")))
    with pytest.raises(PlacementError, match="spreads a model over GPUs, but this run is on cpu"):
        check_placement(two, "cpu", 0, accelerate_installed=True)
    with pytest.raises(PlacementError, match=r"needs accelerate.*pip install 'accelerate>=1.0'"):
        check_placement(two, "cuda", 2, accelerate_installed=False)
    with pytest.raises(PlacementError, match=r"names GPU 1, but 1 GPU\(s\) are visible here \(0..0"):
        check_placement(two, "cuda", 1, accelerate_installed=True)
    check_placement(two, "cuda", 2, accelerate_installed=True)


def test_gpu_count_and_fingerprint_entry():
    assert Placement("auto").gpu_count(visible=4) == 4
    assert Placement("auto", ((0, "1GiB"), (1, "1GiB"))).gpu_count(visible=4) == 2
    assert Placement("sequential", ((0, "1GiB"),)).to_dict(visible=2) == {"device_map": "sequential",
                                                                          "max_memory": {"0": "1GiB"}, "gpus": 1}


def test_layout_counts_modules_per_device():
    model = SimpleNamespace(hf_device_map={"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1,
                                           "model.norm": 1, "lm_head": "cuda:1"})
    assert layout_of(model) == {"cuda:0": 2, "cuda:1": 3}
    assert layout_of(SimpleNamespace()) is None


def test_device_class_separates_a_split_from_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    assert device_class("cuda") == "cuda-h200"
    assert device_class("cuda", gpus=2) == "cuda-h200x2"
    assert device_class("cpu", gpus=2) == "cpu"


def test_fingerprint_records_the_placement_and_keys_the_baseline_by_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(environment, "_gpu_driver", lambda: "580.0")
    split = fingerprint("cuda", Placement("auto", ((0, "70GiB"), (1, "70GiB"))))
    assert split["device_class"] == "cuda-h200x2" and split["gpu_count"] == 2
    assert split["placement"] == {"device_map": "auto", "max_memory": {"0": "70GiB", "1": "70GiB"}, "gpus": 2}
    one = fingerprint("cuda")
    assert one["device_class"] == "cuda-h200" and "placement" not in one
    assert "placement" not in fingerprint("cpu") and fingerprint("cpu")["device_class"] == "cpu"


def test_fingerprint_records_the_openmp_threads_beside_torchs(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert fingerprint("cpu")["omp_num_threads"] == "unset"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fingerprint("cpu")["omp_num_threads"] == "1"


class _Dispatched(torch.nn.Module):
    """What from_pretrained returns for a device map: the layout in hf_device_map; `.to` would break it."""

    def __init__(self, device_map: dict) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.hf_device_map = device_map
        self.config = SimpleNamespace(_attn_implementation="sdpa")

    def to(self, *args, **kwargs):
        raise AssertionError("a dispatched model was moved")


def _recording_from_pretrained(monkeypatch, device_map: dict) -> dict:
    import transformers

    calls: dict = {}

    def from_pretrained(path, **kwargs):
        calls.update(kwargs)
        return _Dispatched(device_map)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    return calls


def test_the_device_map_and_max_memory_reach_from_pretrained(monkeypatch):
    calls = _recording_from_pretrained(monkeypatch, {"model": 0, "lm_head": 1})
    spec = LoadSpec("embedded", "cuda", "bfloat16", placement=Placement("auto", ((0, "70GiB"), (1, "70GiB"))))
    loaded = load_model(spec)
    assert calls["device_map"] == "auto" and calls["max_memory"] == {0: "70GiB", 1: "70GiB"}
    assert layout_of(loaded.model) == {"cuda:0": 1, "cuda:1": 1}
    calls.clear()
    load_model(LoadSpec("embedded", "cuda", "bfloat16", placement=Placement("balanced")))
    assert calls["device_map"] == "balanced" and "max_memory" not in calls  # every visible GPU, no limit


def test_a_map_that_offloads_to_cpu_is_refused(monkeypatch):
    _recording_from_pretrained(monkeypatch, {"model.layers.0": 0, "model.layers.1": "cpu", "lm_head": "disk"})
    with pytest.raises(ModelLoadError, match=r"put 2 module\(s\) of embedded off the GPUs .*raise --bench-max-memory"):
        load_model(LoadSpec("embedded", "cuda", "bfloat16", placement=Placement("auto", ((0, "1GiB"),))))


def test_without_a_placement_the_load_is_as_before():
    loaded = load_model(LoadSpec("embedded", "cpu", "float32"))
    assert getattr(loaded.model, "hf_device_map", None) is None
    assert LoadSpec("embedded", "cpu", "float32") == LoadSpec("embedded", "cpu", "float32", placement=None)


def test_a_split_profile_goes_through_from_pretrained_with_the_map(monkeypatch):
    # Random weights are built in place on one device; a device map needs from_pretrained, so a split speed profile
    # is written once to disk (as a quantized one is) and loaded back with the map.
    calls = _recording_from_pretrained(monkeypatch, {"model": 0, "lm_head": 1})
    load_model(LoadSpec("random:tiny-llama", "cuda", "bfloat16", placement=Placement("auto", ((0, "1GiB"), (1, "1GiB")))))
    assert calls["device_map"] == "auto" and calls["max_memory"] == {0: "1GiB", 1: "1GiB"}


def test_measure_synchronizes_and_counts_every_gpu_of_a_split(monkeypatch):
    from harness.measure.timing import MeasureSettings, measure

    synchronized, reset = [], []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronized.append(device))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: reset.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: {0: 3 << 30, 1: 2 << 30, None: 1}[device])
    output = PipelineOutput({"accuracy": 1.0}, {}, ["a"], [1.0], ["x"])
    _, split = measure(lambda: output, lambda: None, MeasureSettings(rounds=1, device="cuda", cuda_devices=(0, 1)))
    assert split.peak_memory_bytes == 5 << 30 and set(synchronized) == {0, 1} and reset == [0, 1]
    synchronized.clear()
    _, one = measure(lambda: output, lambda: None, MeasureSettings(rounds=1, device="cuda"))
    assert one.peak_memory_bytes == 1 and set(synchronized) == {None}  # one GPU: the current device, as before
    assert Placement("auto").gpu_indices(visible=2) == (0, 1)
    assert Placement("auto", ((1, "1GiB"),)).gpu_indices(visible=2) == (1,)


@needs_cuda
def test_a_real_device_map_on_one_gpu_puts_every_module_there():
    loaded = load_model(LoadSpec("embedded", "cuda", "bfloat16", placement=Placement("auto", ((0, "4GiB"),))))
    layout = layout_of(loaded.model)
    assert layout is not None and set(layout) == {"cuda:0"}


# --- the plugin, end to end ------------------------------------------------------------------------------------

CASE = '''
import json
import os

import pytest
from harness.records import PipelineOutput


def fixed(model, tokenizer, variant):
    # Fixed outputs: the run tests where results go, not a model; the embedded model still loads for each worker.
    on = variant.get("kv_cache") == "on"
    return PipelineOutput(quality={"accuracy": 1.0}, counters={"forward_passes": 4 if on else 8},
                          item_ids=["a", "b"], item_scores=[1.0, 1.0], item_outputs=["x", "y"])


@pytest.mark.bench(pipeline="eval", toggles={"kv_cache": ["on"]})
def test_NAME(bench, request):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:  # grouped per case function, for --dist loadgroup
        assert request.node.get_closest_marker("xdist_group").args == ("test_NAME.py::test_NAME",)
    if worker is not None and "EXPECTED_PINS" in os.environ:  # each worker pinned to its own share
        assert os.environ["CUDA_VISIBLE_DEVICES"] == json.loads(os.environ["EXPECTED_PINS"])[worker]
    bench.run(group="NAME", pipeline=fixed)
'''


def _bench_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_first=CASE.replace("NAME", "first"), test_second=CASE.replace("NAME", "second"))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark", "--bench-rounds", "1",
                                         "--bench-min-time", "0", *args)


@needs_xdist
def test_two_workers_cases_end_up_in_one_report_and_one_baseline_save(pytester: pytest.Pytester, monkeypatch):
    _bench_files(pytester)
    # GPUs named by UUID, as CUDA_VISIBLE_DEVICES may: each worker is pinned to one (on a CPU-only torch, the run
    # then goes on CPU, pinned all the same)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    monkeypatch.setenv("EXPECTED_PINS", json.dumps({"gw0": "GPU-aaaa", "gw1": "GPU-bbbb"}))
    report = pytester.path / "report.json"
    # a save needs 3 timed rounds
    result = _run(pytester, "-n", "2", "--dist", "loadscope", "-v", "--bench-rounds", "3", "--bench-save-baseline",
                  "--bench-reason", "two workers", "--bench-report", str(report))
    result.assert_outcomes(passed=4)
    # each worker ran one file's cases
    result.stdout.fnmatch_lines_random(["[[]gw0[]]*PASSED*", "[[]gw1[]]*PASSED*"])
    result.stdout.fnmatch_lines(["*torch thread(s) in each of 2 xdist worker(s) (gw0: 2 case(s), gw1: 2 case(s))*",
                                 "*baselines saved to baselines*cpu*embedded-reference.json*"])
    cases = {"eval[first|reference]", "eval[first|kv_cache=on]", "eval[second|reference]", "eval[second|kv_cache=on]"}
    baseline = json.loads((pytester.path / "baselines" / "cpu" / "embedded-reference.json").read_text())
    assert set(baseline["cases"]) == cases
    assert [sorted(entry["cases"]) for entry in baseline["history"]] == [sorted(cases)]  # saved once, by the controller
    assert baseline["fingerprint"]["device_class"] == "cpu" and baseline["fingerprint"]["torch_threads"] >= 1
    written = json.loads(report.read_text())
    assert {c["record"]["case_id"]: c["verdict"]["status"] for c in written["cases"]} == dict.fromkeys(cases, NEW)
    assert not [note for note in written["notes"] if "worker" in note]
    # the speedups were judged on the worker against the reference measured there
    assert all(c["record"]["speedup"] for c in written["cases"] if "kv_cache=on" in c["record"]["case_id"])


def test_auto_worker_count_of_a_bench_run(monkeypatch, pytester):
    from harness.plugin import pytest_xdist_auto_num_workers
    from harness.plugin.distributed import auto_worker_count
    from harness.plugin.options import BenchOptions

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert auto_worker_count(BenchOptions(benchmark=True)) == 4
    assert auto_worker_count(BenchOptions(benchmark=True, gpus_per_worker=2)) == 2
    assert auto_worker_count(BenchOptions(benchmark=True, device="cpu")) == 1
    assert pytest_xdist_auto_num_workers(pytester.parseconfig()) is None  # the project's tests: xdist's own default


@needs_xdist
def test_loadgroup_keeps_each_case_with_its_reference_or_fails_saying_why(pytester: pytest.Pytester):
    # Where xdist honours xdist_group marks (pytest 9.1), each node id ends in its case function's group and no
    # reference is measured twice; where it ignores them (pytest-xdist#1386 on pytest 9.2), the run fails saying so.
    _bench_files(pytester)
    result = _run(pytester, "-n", "2", "--dist", "loadgroup", "-v")
    if "[reference]@test_first.py::test_first" in result.stdout.str():
        result.assert_outcomes(passed=4)
        assert result.ret == pytest.ExitCode.OK and "measured on more than one worker" not in result.stdout.str()
    else:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["note: pytest-xdist ignored the xdist_group marks (pytest-xdist#1386*--dist loadscope"])


@needs_xdist
def test_n_auto_on_cpu_starts_one_worker(pytester: pytest.Pytester):
    # xdist's own answer would be one worker per CPU; bench cases side by side on one CPU time each other
    _bench_files(pytester)
    result = _run(pytester, "-n", "auto", "--dist", "loadscope", "--bench-device", "cpu")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*1 worker [[]4 items[]]*"])


@needs_xdist
def test_a_mode_that_scatters_a_case_from_its_reference_is_refused(pytester: pytest.Pytester):
    _bench_files(pytester)
    result = _run(pytester, "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("bench cases under pytest-xdist need --dist loadgroup or loadscope or loadfile (this run: --dist load)"
            in result.stderr.str())


@pytest.mark.parametrize("args, message", [
    (("--bench-device", "cpu", "--bench-device-map", "auto"), "--bench-device-map spreads a model over GPUs, but this run is on cpu"),
    (("--bench-max-memory", "0=1GiB"), "--bench-max-memory limits what a device map puts on each GPU: add --bench-device-map auto"),
])
def test_device_map_options_that_cannot_work_are_usage_errors(pytester: pytest.Pytester, args, message):
    _bench_files(pytester)
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


@needs_cuda
@needs_xdist
def test_a_worker_sees_only_its_own_gpu(tmp_path: Path):
    # One GPU, one worker: the worker is pinned to it before CUDA starts, and its device 0 is that GPU.
    (tmp_path / "test_pinned.py").write_text(
        "import os, pytest, torch\n"
        "@pytest.mark.bench(pipeline='eval', toggles={})\n"
        "def test_pinned(bench):\n"
        "    assert os.environ['CUDA_VISIBLE_DEVICES'] == os.environ['EXPECTED_GPU']\n"
        "    assert torch.cuda.device_count() == 1\n")
    visible = workers.visible_gpus(os.environ, workers.nvml_gpu_count)
    env = {**os.environ, "EXPECTED_GPU": visible[0]}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "1", "--dist", "loadscope",
                           "--benchmark", "--bench-device", "cuda", "test_pinned.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
