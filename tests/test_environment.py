"""What the gate says when the environment moved: versions, CPU, checkpoint; and the judged timer and memory per case."""

import time

import pytest
from test_verdict import make_record

from harness.gate.machine import environment_findings, match_machine
from harness.gate.verdict import judge
from harness.measure.environment import changes, same_machine
from harness.measure.timing import MeasureSettings, Side, measure
from harness.models.loading import checkpoint_hash, model_id
from harness.records import CPU_TIME, PASSED, REGRESSED, WALL, PipelineOutput
from harness.store.baseline import save_baseline
from harness.store.baseline_format import BaselineError

SAVED = {"device_class": "cpu", "torch": "2.13.0+cpu", "transformers": "5.25.0", "bitsandbytes": "0.50.2",
         "cpu": "Intel(R) Xeon(R) Processor", "cpu_arch": "family 6 model 207, amx", "calibration_seconds": 0.02,
         "checkpoint": "842dcea2d50d1c98"}


def test_a_version_and_cpu_change_is_named_and_fails_only_when_strict() -> None:
    run = {**SAVED, "torch": "3.0.0", "cpu": "AMD EPYC"}
    assert changes(run, SAVED) == ["torch 2.13.0+cpu -> 3.0.0", "CPU Intel(R) Xeon(R) Processor -> AMD EPYC"]
    (note,) = environment_findings(changes(run, SAVED))
    assert note.status == PASSED and "torch 2.13.0+cpu -> 3.0.0" in note.message
    (strict,) = environment_findings(changes(run, SAVED), strict=True)
    assert strict.status == REGRESSED and "--bench-strict-env" in strict.message
    assert environment_findings(changes(SAVED, SAVED), strict=True) == []


def test_a_key_either_side_lacks_is_not_compared() -> None:
    assert changes({"torch": "2.13.0+cpu"}, {"torch": "2.13.0+cpu", "checkpoint": "abc"}) == []


def test_the_verdict_carries_the_environment_finding() -> None:
    baseline = make_record()
    verdict = judge(make_record(), baseline, None, environment=environment_findings(["torch 2.13 -> 3.0"], strict=True))
    assert verdict.status == REGRESSED and "environment differs" in verdict.message


def test_another_cpu_model_or_generation_is_another_machine_and_another_calibration_is_not() -> None:
    assert same_machine(SAVED, SAVED)
    assert not same_machine({**SAVED, "cpu_arch": "family 25 model 17, avx512"}, SAVED)
    assert same_machine({**SAVED, "calibration_seconds": 0.03}, SAVED)  # the VM's other speed: times are scaled instead
    assert same_machine({"device_class": "cuda-h100-80gb-hbm3", "cpu": "other"}, {"cpu": "Intel"})
    match = match_machine((), {**SAVED, "cpu": "AMD EPYC", "torch": "3.0"}, SAVED)
    assert not match.same_machine and "torch 2.13.0+cpu -> 3.0" in match.changes


def test_on_another_machine_a_speedup_is_held_only_to_the_cross_machine_factor() -> None:
    from harness.records import Speedup
    baseline = make_record({"kv_cache": "on"}, speedup=Speedup(4.0, 3.9, 4.1))
    current = make_record({"kv_cache": "on"}, rounds=[1.4, 1.4, 1.4], speedup=Speedup(2.5, 2.4, 2.6))  # -37.5%
    same = next(f for f in judge(current, baseline, None).findings if f.metric == "speedup")
    other = next(f for f in judge(current, baseline, None, same_machine=False).findings if f.metric == "speedup")
    assert same.status == REGRESSED
    assert other.status == PASSED and "machine is another" in other.message


def test_a_baseline_timed_by_another_timer_does_not_judge_speed() -> None:
    baseline = make_record(rounds=[1.0, 1.0, 1.0])
    current = make_record(rounds=[3.0, 3.0, 3.0])
    current.speed.cpu_seconds, current.speed.timer = [3.0, 3.0, 3.0], CPU_TIME
    (finding,) = [f for f in judge(current, baseline, None).findings if f.metric == "speed"]
    assert finding.status == PASSED and "timed by wall time, this run by cpu time" in finding.message


def test_the_cpu_timer_reads_cpu_time_not_the_wall_clock() -> None:
    def run() -> PipelineOutput:
        time.sleep(0.05)  # no CPU time
        until = time.process_time() + 0.02
        while time.process_time() < until:
            pass
        return PipelineOutput({"accuracy": 1.0}, {}, ["a"], [1.0], ["x"])

    _, speed = measure(run, lambda: None, MeasureSettings(rounds=3, device="cpu"))
    assert speed.timer == CPU_TIME and len(speed.cpu_seconds) == 3
    assert all(wall > 0.065 for wall in speed.round_seconds)
    assert all(0.015 < cpu < 0.045 for cpu in speed.judged_seconds)


def test_cpu_peak_memory_is_the_case_own_not_the_process_high_water_mark() -> None:
    hoard = bytearray(300 * 2**20)  # the process's high-water mark is now far above what the case uses
    hoard[::4096] = b"x" * len(hoard[::4096])
    del hoard

    def run() -> PipelineOutput:
        block = bytearray(40 * 2**20)
        block[::4096] = b"y" * len(block[::4096])  # touched: resident
        return PipelineOutput({"accuracy": 1.0}, {}, ["a"], [1.0], [str(len(block))])

    _, speed = measure(run, lambda: None, MeasureSettings(rounds=3, device="cpu"))
    if speed.memory_kind != "cpu_case_peak":
        pytest.skip("this system cannot reset the resident high-water mark (/proc/self/clear_refs)")
    assert 35 * 2**20 < speed.peak_memory_bytes < 200 * 2**20


def test_the_side_resident_bytes_count_in_the_cpu_peak() -> None:
    def run() -> PipelineOutput:
        return PipelineOutput({"accuracy": 1.0}, {}, ["a"], [1.0], ["x"])

    from harness.measure.timing import measure_interleaved
    ((_, speed),) = measure_interleaved([Side("x", run, lambda: None, resident_bytes=10**9)],
                                        MeasureSettings(rounds=3, device="cpu"))
    if speed.memory_kind == "cpu_case_peak":
        assert speed.peak_memory_bytes >= 10**9


def test_a_checkpoint_is_named_by_its_files_hash(tmp_path) -> None:
    for name in ("a", "b"):
        final = tmp_path / name / "final"
        final.mkdir(parents=True)
        (final / "config.json").write_text("{}")
        (final / "model.safetensors").write_bytes(name.encode() * 100)
    first, second = model_id(str(tmp_path / "a" / "final")), model_id(str(tmp_path / "b" / "final"))
    assert first.startswith("final-") and second.startswith("final-") and first != second
    assert model_id("embedded") == "embedded-reference"
    assert checkpoint_hash("random:llama-3.2-1b") == ""


def test_a_save_with_too_few_rounds_is_refused_before_anything_is_written(tmp_path) -> None:
    path = tmp_path / "cpu" / "embedded-reference.json"
    with pytest.raises(BaselineError, match="fewer than 3 timed rounds"):
        save_baseline(path, "cpu", "embedded-reference", {}, [make_record(rounds=[1.0, 1.0])], "why", None, min_rounds=3)
    assert not path.exists()
    assert WALL == make_record().speed.timer


VALGRIND_SCRIPT = """
import sys
from harness.measure.timing import InstructionCounter, MeasureSettings, measure
from harness.records import PipelineOutput
import torch
torch.set_num_threads(1)  # one thread: the count does not depend on how the work is split
x = torch.randn(128, 128) / 128

def run(steps):
    y = x
    for _ in range(steps):
        y = y @ x
    return PipelineOutput({"accuracy": 1.0}, {}, ["a"], [1.0], ["x"])

assert InstructionCounter.unavailable_reason() is None, InstructionCounter.unavailable_reason()
settings = MeasureSettings(rounds=3, device="cpu", count_instructions=True)
counts = [measure(lambda: run(steps), lambda: None, settings)[1].instructions for steps in (20, 40)]
print("COUNTS", counts)
"""


def test_instruction_counts_under_callgrind_repeat_and_grow_with_the_work(tmp_path) -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from harness.measure.timing import InstructionCounter

    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    script = tmp_path / "count.py"
    script.write_text(VALGRIND_SCRIPT)
    (tmp_path / InstructionCounter.OUT_DIR).mkdir()
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no",
                             f"--callgrind-out-file={InstructionCounter.OUT_DIR}/callgrind.out.%p", sys.executable, str(script)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("COUNTS"))
    small, large = eval(line.removeprefix("COUNTS "))
    assert len(small) == len(large) == 3 and min(small) > 0
    # Twice the matmuls, about twice the instructions. The interpreter's and the allocator's first-call paths add a
    # few hundred thousand instructions that do not double, so the ratio is loose; a real case's billions do not
    # notice them.
    assert 1.5 < sorted(large)[1] / sorted(small)[1] < 2.5, (small, large)


def test_the_instruction_timer_outside_callgrind_is_refused_with_the_command() -> None:
    from harness.measure.timing import InstructionCounter

    reason = InstructionCounter.unavailable_reason()
    assert reason is not None and ("valgrind" in reason)
