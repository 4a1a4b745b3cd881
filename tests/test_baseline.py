"""Baselines on disk: round trip, merging saves, BaselineErrors naming file and fix, atomic and locked writes."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.records import CaseRecord, PipelineOutput, Speed, Speedup
from harness.store import baseline as baseline_module
from harness.store.baseline import (
    baseline_path,
    load_baseline,
    save_baseline,
    scrub_paths,
)
from harness.store.baseline_format import SCHEMA_VERSION, BaselineError, record_of

DEVICE, MODEL = "cpu", "embedded-reference"
FINGERPRINT = {"torch": "2.13.0", "transformers": "5.1.0", "bitsandbytes": None, "device": "cpu"}


def make_record(
    case_id: str = "eval[math]", kv_cache: str = "off", accuracy: float = 0.84, **metadata: Any
) -> CaseRecord:
    reference = {"kv_cache": "off", "early_stop": "off"}
    variant = {**reference, "kv_cache": kv_cache}
    is_reference = variant == reference
    return CaseRecord(
        case_id=case_id,
        pipeline="eval",
        group="math",
        variant=variant,
        reference_variant=reference,
        fidelity={} if is_reference else {"kv_cache": "exact"},
        speed=Speed(
            round_seconds=[1.25, 1.5, 1.0],
            items_per_round=20,
            tokens_per_round=400,
            peak_memory_bytes=64 * 2**20,
            memory_kind="cpu_peak_rss",
        ),
        output=PipelineOutput(
            quality={"accuracy": accuracy},
            counters={"generated_tokens": 400, "forward_passes": 420},
            item_ids=["q0", "q1", "q2"],
            item_scores=[1.0, 0.0, 1.0],
            item_outputs=["3", "7", "12"],
        ),
        speedup=None if is_reference else Speedup(ratio=3.2, low=2.9, high=3.5),
        agreement=None if is_reference else 1.0,
        metadata={"dtype": "float32", **metadata},
    )


def save(path: Path, records: list[CaseRecord], reason: str = "first recording", commit: str | None = "abc123"):
    return save_baseline(path, DEVICE, MODEL, FINGERPRINT, records, reason, commit)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return baseline_path(tmp_path / "baselines", DEVICE, MODEL)


def _raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _rewrite(path: Path, change) -> None:
    data = _raw(path)
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


# --- paths and round trip -------------------------------------------------------------------------------------


def test_baseline_path_layout(tmp_path: Path) -> None:
    assert baseline_path(tmp_path, "cpu", "tiny") == tmp_path / "cpu" / "tiny.json"
    assert baseline_path(tmp_path, "cuda-h100-80gb", "meta-llama/Llama-3.2-1B") == (
        tmp_path / "cuda-h100-80gb" / "meta-llama--Llama-3.2-1B.json"
    )
    escaped = baseline_path(tmp_path, "cpu", "../../etc/passwd")
    assert escaped.parent == tmp_path / "cpu"
    with pytest.raises(ValueError):
        baseline_path(tmp_path, "", "tiny")


def test_missing_file_loads_as_none(path: Path) -> None:
    assert load_baseline(path, DEVICE, MODEL) is None


def test_round_trip(path: Path) -> None:
    reference, variant = make_record(), make_record("eval[math|kv_cache=on]", kv_cache="on", accuracy=0.8)
    written = save(path, [reference, variant], reason="initial", commit="deadbeef")
    loaded = load_baseline(path, DEVICE, MODEL)
    assert loaded == written
    assert loaded.path == path
    assert record_of(loaded, "eval[math]") == reference
    assert record_of(loaded, "eval[math|kv_cache=on]") == variant
    assert record_of(loaded, "eval[aime]") is None
    entry = loaded.cases["eval[math]"]
    assert entry["reason"] == "initial" and entry["commit"] == "deadbeef"
    assert entry["fingerprint"] == FINGERPRINT and loaded.fingerprint == FINGERPRINT
    assert entry["saved_at"].endswith("+00:00")
    assert loaded.history == [
        {"saved_at": entry["saved_at"], "reason": "initial", "commit": "deadbeef", "cases": sorted(loaded.cases)}
    ]
    raw = _raw(path)
    assert raw["schema_version"] == SCHEMA_VERSION
    assert (raw["device_class"], raw["model_id"]) == (DEVICE, MODEL)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and '\n "cases": {' in text  # indent=1, sorted keys: readable diffs
    assert list(raw) == sorted(raw)


def test_merge_keeps_cases_not_saved_and_history_grows(path: Path) -> None:
    save(path, [make_record("eval[math]"), make_record("eval[math|kv_cache=on]", kv_cache="on")], reason="first")
    first = load_baseline(path, DEVICE, MODEL).cases["eval[math]"]
    updated = make_record("eval[math|kv_cache=on]", kv_cache="on", accuracy=0.9)
    save(path, [updated, make_record("eval[aime]")], reason="kv cache fix", commit=None)
    loaded = load_baseline(path, DEVICE, MODEL)
    assert sorted(loaded.cases) == ["eval[aime]", "eval[math]", "eval[math|kv_cache=on]"]
    assert loaded.cases["eval[math]"] == first  # not run, entry untouched
    assert record_of(loaded, "eval[math|kv_cache=on]").quality == 0.9
    assert loaded.cases["eval[math|kv_cache=on]"]["reason"] == "kv cache fix"
    assert [h["reason"] for h in loaded.history] == ["first", "kv cache fix"]
    assert loaded.history[1]["cases"] == ["eval[aime]", "eval[math|kv_cache=on]"]
    assert loaded.history[1]["commit"] is None


# --- errors name the file and the fix -----------------------------------------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(BaselineError) as info:
        load_baseline(path, DEVICE, MODEL)
    assert info.value.path == path
    message = str(info.value)
    assert str(path) in message
    return message


def test_corrupt_json(path: Path) -> None:
    save(path, [make_record()])
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2], encoding="utf-8")  # a torn file
    message = _error(path)
    assert "is not valid JSON (line" in message and "col" in message
    assert "restore it from version control" in message and "--bench-save-baseline" in message


def test_not_an_object(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]", encoding="utf-8")
    assert "JSON object" in _error(path)


@pytest.mark.parametrize("version", [None, 2, 0, "1"])
def test_wrong_or_missing_schema(path: Path, version: Any) -> None:
    save(path, [make_record()])
    _rewrite(path, lambda d: d.pop("schema_version") if version is None else d.update(schema_version=version))
    message = _error(path)
    assert f"this version reads {SCHEMA_VERSION}" in message
    assert "re-record" in message and "--bench-save-baseline" in message
    if version is not None:
        assert f"written by schema {version!r}" in message


def test_wrong_device_class_is_refused(path: Path) -> None:
    save(path, [make_record()])
    _rewrite(path, lambda d: d.update(device_class="cuda-h100"))
    message = _error(path)
    assert "'cuda-h100'" in message and "'cpu'" in message
    assert "absolute times do not transfer across device classes" in message
    assert "--bench-save-baseline" in message


def test_wrong_model_id_is_refused(path: Path) -> None:
    save(path, [make_record()])
    with pytest.raises(BaselineError, match="model id 'embedded-reference' but 'other-model' was expected") as info:
        load_baseline(path, DEVICE, "other-model")
    assert str(path) in str(info.value) and "--bench-save-baseline" in str(info.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: entry.pop("record"),
        lambda entry: entry["record"].pop("speed"),
        lambda entry: entry["record"]["output"].update(unknown_field=1),
        lambda entry: entry["record"]["speed"].update(round_seconds=[]),
        lambda entry: entry["record"]["output"].update(item_scores=[1.0]),
        lambda entry: entry["record"].update(case_id="eval[other]"),
    ],
    ids=["no-record", "no-speed", "unknown-field", "no-rounds", "misaligned-items", "wrong-id"],
)
def test_bad_case_entry_names_the_case(path: Path, damage) -> None:
    save(path, [make_record("eval[math]"), make_record("eval[math|kv_cache=on]", kv_cache="on")])
    _rewrite(path, lambda d: damage(d["cases"]["eval[math|kv_cache=on]"]))
    message = _error(path)
    assert "case 'eval[math|kv_cache=on]'" in message
    assert "re-record" in message and "restore the file from version control" in message


def test_empty_reason_is_refused(path: Path) -> None:
    for reason in ("", "   "):
        with pytest.raises(BaselineError, match="--bench-reason") as info:
            save(path, [make_record()], reason=reason)
        assert str(path) in str(info.value)
    assert not path.exists()


def test_invalid_records_are_not_saved(path: Path) -> None:
    with pytest.raises(BaselineError, match="appears twice"):
        save(path, [make_record(), make_record()])
    broken = make_record()
    broken.speed.round_seconds = []
    with pytest.raises(BaselineError, match="round_seconds"):
        save(path, [broken])
    with pytest.raises(BaselineError, match="no case ran"):
        save(path, [])
    assert not path.exists()


def test_save_over_a_corrupt_file_fails_and_keeps_it(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "cases": ', encoding="utf-8")
    with pytest.raises(BaselineError, match="not valid JSON"):
        save(path, [make_record()])
    assert path.read_text(encoding="utf-8") == '{"schema_version": 1, "cases": '


def test_save_under_another_device_class_fails(path: Path) -> None:
    save(path, [make_record()])
    before = path.read_bytes()
    with pytest.raises(BaselineError, match="absolute times do not transfer"):
        save_baseline(path, "cuda-h100", MODEL, FINGERPRINT, [make_record("eval[aime]")], "why", None)
    assert path.read_bytes() == before


# --- atomic, locked writes ------------------------------------------------------------------------------------


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name not in {path.name, path.name + ".lock"})


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_crash_during_write_leaves_old_file_and_no_temp_file(path: Path, monkeypatch, failing: str) -> None:
    save(path, [make_record()])
    before = path.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    if failing == "replace":
        monkeypatch.setattr(baseline_module.os, "replace", boom)
    elif failing == "fsync":
        monkeypatch.setattr(baseline_module.os, "fsync", boom)
    else:  # fail half way through writing the text
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()
                return False

            def write(self, text: str) -> None:
                self.handle.write(text[: len(text) // 2])
                self.handle.flush()
                raise OSError("no space left on device")

        monkeypatch.setattr(baseline_module.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(OSError):
        save(path, [make_record("eval[math|kv_cache=on]", kv_cache="on")], reason="second")
    assert path.read_bytes() == before
    assert _leftovers(path) == []
    monkeypatch.undo()
    assert sorted(load_baseline(path, DEVICE, MODEL).cases) == ["eval[math]"]


def test_unserializable_metadata_fails_before_touching_the_file(path: Path) -> None:
    save(path, [make_record()])
    before = path.read_bytes()
    with pytest.raises(BaselineError, match="JSON cannot store"):
        save(path, [make_record("eval[aime]", dtype=object())])
    assert path.read_bytes() == before and _leftovers(path) == []


def test_save_waits_for_the_lock(path: Path) -> None:
    path.parent.mkdir(parents=True)
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    done = threading.Event()
    errors: list[BaseException] = []

    def saver() -> None:
        try:
            save(path, [make_record()])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        done.set()

    thread = threading.Thread(target=saver)
    thread.start()
    try:
        assert not done.wait(0.3), "save did not wait for the lock"
        assert not path.exists()
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    thread.join(10)
    assert done.is_set() and not errors
    assert load_baseline(path, DEVICE, MODEL) is not None


SAVES_PER_WORKER = 8


def _concurrent_worker(path: str, worker: int, start) -> None:
    start.wait(30)
    for i in range(SAVES_PER_WORKER):
        save(Path(path), [make_record(f"eval[w{worker}-{i}]")], reason=f"worker {worker} save {i}", commit=None)


def test_two_processes_saving_at_once_lose_nothing(path: Path) -> None:
    path.parent.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_concurrent_worker, args=(str(path), w, start)) for w in range(2)]
    for process in workers:
        process.start()
    time.sleep(0.05)
    start.set()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    loaded = load_baseline(path, DEVICE, MODEL)  # also proves the file is valid JSON
    expected = {f"eval[w{w}-{i}]" for w in range(2) for i in range(SAVES_PER_WORKER)}
    assert set(loaded.cases) == expected
    assert len(loaded.history) == 2 * SAVES_PER_WORKER
    assert _leftovers(path) == []


# --- no absolute paths in the file ----------------------------------------------------------------------------


def test_home_and_cwd_paths_are_scrubbed(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home" / "alice"
    work = tmp_path / "work" / "project"
    home.mkdir(parents=True)
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    fingerprint = {
        **FINGERPRINT,
        "python": f"{home}/.venv/bin/python",
        "model_path": f"{work}/models/tiny",
        "nested": {"paths": [str(home), f"cache at {home}/.cache/hf;"], f"{work}/key": 1},
        "sibling": f"{work}-other/file",  # a different directory that merely shares the prefix
        "elsewhere": "/home/bob/checkout and /Users/carol/x",
    }
    path = baseline_path(tmp_path / "baselines", DEVICE, MODEL)
    save_baseline(path, DEVICE, MODEL, fingerprint, [make_record(task_file=f"{work}/tasks.jsonl")], "why", None)
    text = path.read_text(encoding="utf-8")
    assert str(home) not in text and str(work) + "/" not in text
    assert "/home/bob" not in text and "/Users/carol" not in text
    loaded = load_baseline(path, DEVICE, MODEL)
    assert loaded.fingerprint["python"] == "<home>/.venv/bin/python"
    assert loaded.fingerprint["model_path"] == "<cwd>/models/tiny"
    assert loaded.fingerprint["nested"] == {"paths": ["<home>", "cache at <home>/.cache/hf;"], "<cwd>/key": 1}
    assert loaded.fingerprint["sibling"] == f"{work}-other/file"
    assert loaded.fingerprint["elsewhere"] == "<home>/checkout and <home>/x"
    assert record_of(loaded, "eval[math]").metadata["task_file"] == "<cwd>/tasks.jsonl"
    assert fingerprint["python"] == f"{home}/.venv/bin/python"  # the caller's dict is not changed


def test_scrub_leaves_relative_paths_and_other_values_alone() -> None:
    value = {"a": "models/tiny", "b": 3, "c": None, "d": ["x/home/y"], "e": 1.5}
    assert scrub_paths(value) == value


# --- A/A speed noise --------------------------------------------------------------------------------------------


def test_speed_noise_is_stored_with_its_case_and_dropped_when_the_case_is_saved_again(path: Path) -> None:
    from harness.records import SpeedNoise
    from harness.store.baseline import store_speed_noise
    from harness.store.baseline_format import speed_noise_of

    save(path, [make_record("eval[math|kv_cache=on]", kv_cache="on"), make_record("eval[math|reference]")])
    noise = SpeedNoise(center=-0.01, spread=0.03, runs=10, measured="2026-12-01, AMD EPYC (2 cores)")
    store_speed_noise(path, DEVICE, MODEL, {"eval[math|kv_cache=on]": noise}, "A/A runs")
    baseline = load_baseline(path, DEVICE, MODEL)
    assert speed_noise_of(baseline, "eval[math|kv_cache=on]") == (noise,)
    assert speed_noise_of(baseline, "eval[math|reference]") == ()
    assert baseline.history[-1]["speed_noise"] is True and len(baseline.history) == 2

    save(path, [make_record("eval[math|kv_cache=on]", kv_cache="on")], reason="new code")
    assert speed_noise_of(load_baseline(path, DEVICE, MODEL), "eval[math|kv_cache=on]") == ()

    with pytest.raises(BaselineError, match="cases not in baseline .*: eval\\[gpqa\\]"):
        store_speed_noise(path, DEVICE, MODEL, {"eval[gpqa]": noise}, "A/A runs")


def test_speed_noise_holds_on_the_cpu_and_the_machine_speed_it_was_learned_on() -> None:
    from harness.gate.machine import match_machine
    from harness.records import SpeedNoise

    stored_before = SpeedNoise(center=0.0, spread=0.03, runs=8, measured="2026-12-01 to 2026-12-01, AMD EPYC (2 cores)")
    assert stored_before.learned_on == "AMD EPYC"  # read from `measured` where `cpu` was not kept
    learned = SpeedNoise(center=0.0, spread=0.03, runs=8, measured="x", cpu="Intel(R) Xeon(R) Processor")
    saved = {"cpu": "any", "calibration_seconds": 0.040}
    for noise, cpu in ((stored_before, "AMD EPYC"), (learned, "Intel(R) Xeon(R) Processor")):
        same = match_machine([noise], {"cpu": cpu, "calibration_seconds": 0.044}, saved)
        assert same.noise is noise and same.scale == pytest.approx(1.1) and same.set_aside == ""
        other = match_machine([noise], {"cpu": "Another CPU", "calibration_seconds": 0.040}, saved)
        assert other.noise is None and other.set_aside == f"the baseline's speed noise was learned on {cpu}, this run is on Another CPU"
        slower = match_machine([noise], {"cpu": cpu, "calibration_seconds": 0.080}, saved)
        assert slower.noise is None and slower.scale == pytest.approx(2.0)
        assert slower.set_aside.startswith("this machine ran the calibration workload x2.00 as long as the one that saved")
        assert match_machine([noise], {}, {}).noise is noise  # a run that says neither keeps the noise, unscaled
        assert match_machine([noise], {}, {}).scale is None
    assert match_machine((), {"cpu": "AMD EPYC"}, {}) == match_machine((), {}, {})
    # One model name, two generations: the noise holds on the one it was learned on.
    of_one = SpeedNoise(center=0.0, spread=0.03, runs=8, measured="x", cpu="Intel(R) Xeon(R) Processor",
                        arch="family 6 model 207, avx512")
    run = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_arch": "family 6 model 207, avx512"}
    assert match_machine([of_one], run, {}).noise is of_one
    other = match_machine([of_one], {**run, "cpu_arch": "family 6 model 143, avx512"}, {})
    assert other.noise is None and other.set_aside == ("the baseline's speed noise was learned on Intel(R) Xeon(R) "
                                                       "Processor (family 6 model 207, avx512), this run is on Intel(R) "
                                                       "Xeon(R) Processor (family 6 model 143, avx512)")
    assert match_machine([learned], run, {}).noise is learned  # noise stored before the generation was kept


def test_machine_scale_needs_a_calibration_on_both_sides() -> None:
    from harness.measure.machine_speed import calibration_seconds, machine_scale

    here = calibration_seconds()
    assert here > 0 and calibration_seconds() == here  # timed once per process
    assert machine_scale({"calibration_seconds": 0.06}, {"calibration_seconds": 0.03}) == pytest.approx(2.0)
    for saved in ({}, {"calibration_seconds": None}, {"calibration_seconds": True}, {"calibration_seconds": -1.0},
                  {"calibration_seconds": float("nan")}, {"calibration_seconds": "0.03"}):
        assert machine_scale({"calibration_seconds": 0.06}, saved) is None, saved


def test_each_cpu_keeps_its_own_speed_noise_held_against_its_own_machine_speed() -> None:
    from harness.gate.machine import match_machine
    from harness.records import SpeedNoise

    # A baseline saved on an Intel Xeon whose calibration took 16.6 ms, judged on an AMD EPYC that takes 12.9 ms.
    intel = SpeedNoise(center=0.0, spread=0.10, runs=8, measured="x", cpu="Intel Xeon", arch="family 6 model 207, avx512")
    amd = SpeedNoise(center=0.30, spread=0.03, runs=12, measured="x", cpu="AMD EPYC", arch="family 25 model 17, avx512",
                     calibration_seconds=0.0129)
    saved = {"cpu": "Intel Xeon", "calibration_seconds": 0.0166}
    on_amd = {"cpu": "AMD EPYC", "cpu_arch": "family 25 model 17, avx512", "calibration_seconds": 0.0131}
    match = match_machine([intel, amd], on_amd, saved)
    # x0.79 against the saver's: beyond x1.25, but the AMD noise is held against the AMD runs' own calibration
    assert match.noise is amd and match.set_aside == "" and match.scale == pytest.approx(0.0131 / 0.0166)
    assert match_machine([intel, amd], {**on_amd, "calibration_seconds": 0.0190}, saved).set_aside.startswith(
        "this machine ran the calibration workload x1.47 as long as the A/A runs its speed noise was learned from")
    assert match_machine([amd, intel], {"cpu": "Intel Xeon", "calibration_seconds": 0.0170}, saved).noise is intel
    elsewhere = match_machine([intel, amd], {"cpu": "Another CPU", "cpu_arch": "family 1 model 1, avx2"}, saved)
    assert elsewhere.noise is None
    assert elsewhere.set_aside == ("the baseline's speed noise was learned on Intel Xeon (family 6 model 207, avx512) and "
                                   "AMD EPYC (family 25 model 17, avx512), this run is on Another CPU (family 1 model 1, avx2)")


def test_speed_noise_of_one_cpu_in_files_before_per_cpu_noise_still_reads(path: Path) -> None:
    from harness.records import SpeedNoise
    from harness.store.baseline_format import speed_noise_of

    save(path, [make_record("eval[math|kv_cache=on]", kv_cache="on")])
    one = {"center": 0.0, "spread": 0.03, "runs": 8, "measured": "2026-12-01, AMD EPYC (2 cores)"}
    _rewrite(path, lambda data: data["cases"]["eval[math|kv_cache=on]"].update(speed_noise=one))
    assert speed_noise_of(load_baseline(path, DEVICE, MODEL), "eval[math|kv_cache=on]") == (SpeedNoise(**one),)


@pytest.mark.parametrize("entry", [{"center": 0.0}, {"center": "x", "spread": 0.1, "runs": 5, "measured": ""},
                                   {"center": 0.0, "spread": -1.0, "runs": 5, "measured": ""},
                                   {"center": 0.0, "spread": 0.1, "runs": 5, "measured": "", "calibration_seconds": 0},
                                   [], "noise",
                                   [{"center": 0.0, "spread": 0.1, "runs": 5, "measured": "", "cpu": "AMD EPYC"},
                                    {"center": 0.1, "spread": 0.1, "runs": 5, "measured": "", "cpu": "AMD EPYC"}]])
def test_bad_speed_noise_entry_names_the_case_and_the_fix(path: Path, entry: dict) -> None:
    save(path, [make_record("eval[math|kv_cache=on]", kv_cache="on")])
    _rewrite(path, lambda data: data["cases"]["eval[math|kv_cache=on]"].update(speed_noise=entry))
    with pytest.raises(BaselineError, match="case 'eval\\[math\\|kv_cache=on\\]' has .*speed_noise.*harness calibrate"):
        load_baseline(path, DEVICE, MODEL)


# --- the commit a save records ------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> None:
    import subprocess
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True)


@pytest.mark.skipif(not __import__("shutil").which("git"), reason="needs git")
def test_the_commit_says_dirty_when_the_code_measured_is_not_the_commits(tmp_path: Path) -> None:
    (tmp_path / "baselines" / "cpu").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "baselines" / "cpu" / "m.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "first")
    clean = baseline_module.current_commit(tmp_path, ignore=tmp_path / "baselines")
    assert clean and not clean.endswith("-dirty")

    # an earlier save of the same sitting changed the baseline: still the commit's code
    (tmp_path / "baselines" / "cpu" / "m.json").write_text('{"saved": 1}\n')
    assert baseline_module.current_commit(tmp_path, ignore=tmp_path / "baselines") == clean

    (tmp_path / "code.py").write_text("x = 2\n")  # an edit not committed
    assert baseline_module.current_commit(tmp_path, ignore=tmp_path / "baselines") == f"{clean}-dirty"
    _git(tmp_path, "checkout", "-q", "code.py")
    (tmp_path / "new_module.py").write_text("y = 1\n")  # a new file not committed
    assert baseline_module.current_commit(tmp_path, ignore=tmp_path / "baselines") == f"{clean}-dirty"


def test_outside_git_there_is_no_commit(tmp_path: Path) -> None:
    assert baseline_module.current_commit(tmp_path) is None
