"""The baseline file's format: its schema version, the `BaselineFile` it reads into, and the validation of every
entry (each problem a BaselineError naming the file, the case and the fix). Reading from and writing to disk is
`baseline`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import CPU_TIME, WALL, CaseRecord, SpeedNoise

SAVE_HINT = 'pytest --benchmark --bench-save-baseline --bench-reason "why"'



SCHEMA_VERSION = 1


class BaselineError(Exception):
    """A baseline file that cannot be read, trusted or written; the message names the file and the fix."""

    def __init__(self, path: Path | str | None, message: str) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


@dataclass
class BaselineFile:
    device_class: str  # "cpu" or "cuda-<gpu-slug>"
    model_id: str
    fingerprint: dict[str, Any]  # environment fingerprint of the last save
    # case_id -> {"record": CaseRecord.to_dict(), "saved_at": iso, "reason": str, "commit": str|None,
    #             "fingerprint": dict, and once A/A runs measured it, "speed_noise": [SpeedNoise.to_dict(), one per
    #             CPU it was learned on] (a single dict in files written before noise was kept per CPU)}
    cases: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]  # one entry per save: {"saved_at", "reason", "commit", "cases": [ids]}
    path: Path | None = field(default=None, compare=False)  # where it was read from / written to

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "device_class": self.device_class,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "cases": self.cases,
            "history": self.history,
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def record_problem(record: CaseRecord) -> str | None:
    """The first structural problem of a record that would break judging it later, or None."""
    speed, output = record.speed, record.output
    checks = (
        (isinstance(record.case_id, str) and record.case_id, "case_id must be a non-empty string"),
        (isinstance(record.pipeline, str) and record.pipeline, "pipeline must be a non-empty string"),
        (isinstance(record.group, str), "group must be a string"),
        (_is_str_map(record.variant), "variant must map toggle names to string values"),
        (_is_str_map(record.reference_variant), "reference_variant must map toggle names to string values"),
        (_is_str_map(record.fidelity), "fidelity must map toggle names to fidelity classes"),
        (
            isinstance(speed.round_seconds, list)
            and speed.round_seconds
            and all(_is_number(s) and s > 0 for s in speed.round_seconds),
            "speed.round_seconds must be a non-empty list of positive numbers",
        ),
        (speed.timer in (WALL, CPU_TIME), f"speed.timer must be {WALL!r} or {CPU_TIME!r}"),
        (
            isinstance(speed.cpu_seconds, list)
            and all(_is_number(s) and s >= 0 for s in speed.cpu_seconds)
            and (speed.timer != CPU_TIME or len(speed.cpu_seconds) == len(speed.round_seconds)),
            "speed.cpu_seconds must list a non-negative CPU time for every round when the timer is 'cpu'",
        ),
        (isinstance(speed.items_per_round, int), "speed.items_per_round must be an integer"),
        (isinstance(speed.tokens_per_round, int), "speed.tokens_per_round must be an integer"),
        (isinstance(speed.peak_memory_bytes, int), "speed.peak_memory_bytes must be an integer"),
        (
            isinstance(output.quality, dict)
            and output.quality
            and all(isinstance(k, str) and _is_number(v) for k, v in output.quality.items()),
            "output.quality must map at least one metric name to a number",
        ),
        (
            isinstance(output.counters, dict)
            and all(isinstance(k, str) and isinstance(v, int) for k, v in output.counters.items()),
            "output.counters must map counter names to integers",
        ),
        (
            isinstance(output.item_ids, list)
            and isinstance(output.item_scores, list)
            and len(output.item_ids) == len(output.item_scores),
            "output.item_ids and output.item_scores must be lists of the same length",
        ),
        (isinstance(output.item_outputs, list), "output.item_outputs must be a list"),
        (isinstance(record.metadata, dict), "metadata must be an object"),
    )
    return next((problem for ok, problem in checks if not ok), None)


def _parse_case(path: Path, case_id: str, entry: Any) -> CaseRecord:
    fix = f"re-record it with {SAVE_HINT} (e.g. with -k to run that case) or restore the file from version control"
    if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
        raise BaselineError(path, f"baseline {path}: case {case_id!r} has no 'record' object; {fix}")
    try:
        record = CaseRecord.from_dict(entry["record"])
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise BaselineError(
            path, f"baseline {path}: case {case_id!r} does not parse as a case record ({error}); {fix}"
        ) from None
    problem = record_problem(record)
    if problem is None and record.case_id != case_id:
        problem = f"its record is for case {record.case_id!r}"
    if problem is not None:
        raise BaselineError(path, f"baseline {path}: case {case_id!r} is not a valid case record ({problem}); {fix}")
    if "speed_noise" in entry:
        _parse_speed_noises(path, case_id, entry["speed_noise"])
    return record


_NOISE_FIX = ("measure it again with harness calibrate, or delete the case's "
              "'speed_noise' entry to gate it by the speed factor")


def _parse_speed_noises(path: Path, case_id: str, data: Any) -> tuple[SpeedNoise, ...]:
    """A case's stored noise, one entry per CPU; a single entry as files before per-CPU noise wrote it."""
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise BaselineError(path, f"baseline {path}: case {case_id!r} has a speed_noise entry that is neither an "
                                  f"object nor a list of them; {_NOISE_FIX}")
    noises = tuple(_parse_speed_noise(path, case_id, entry) for entry in entries)
    places = [(noise.learned_on, noise.arch) for noise in noises]
    if len(set(places)) < len(places):
        raise BaselineError(path, f"baseline {path}: case {case_id!r} has two speed_noise entries for one CPU; "
                                  f"{_NOISE_FIX}")
    return noises


def _parse_speed_noise(path: Path, case_id: str, data: Any) -> SpeedNoise:
    try:
        noise = SpeedNoise(**data)
    except TypeError as error:
        raise BaselineError(path, f"baseline {path}: case {case_id!r} has a speed_noise entry that does not parse "
                                  f"({error}); {_NOISE_FIX}") from None
    valid = (_is_number(noise.center) and math.isfinite(noise.center) and _is_number(noise.spread)
             and math.isfinite(noise.spread) and noise.spread >= 0 and isinstance(noise.runs, int)
             and not isinstance(noise.runs, bool) and noise.runs >= 2 and isinstance(noise.measured, str)
             and (noise.calibration_seconds is None or (_is_number(noise.calibration_seconds)
                                                        and math.isfinite(noise.calibration_seconds)
                                                        and noise.calibration_seconds > 0)))
    if not valid:
        raise BaselineError(path, f"baseline {path}: case {case_id!r} has an invalid speed_noise entry (center and "
                                  f"spread finite numbers, spread >= 0, runs >= 2, measured a string, "
                                  f"calibration_seconds positive or absent); {_NOISE_FIX}")
    return noise


def validate(path: Path, data: Any, device_class: str, model_id: str) -> BaselineFile:
    rerecord = f"re-record it with {SAVE_HINT}"
    if not isinstance(data, dict):
        raise BaselineError(
            path,
            f"baseline {path} must hold a JSON object, got {type(data).__name__}; "
            f"restore it from version control or {rerecord}",
        )
    if "schema_version" not in data:
        raise BaselineError(
            path,
            f"baseline {path} has no schema_version, so it is not a harness baseline this version can read "
            f"(this version reads {SCHEMA_VERSION}); restore it from version control or {rerecord}",
        )
    version = data["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BaselineError(
            path,
            f"baseline {path} was written by schema {version!r}, this version reads {SCHEMA_VERSION}; "
            f"{rerecord}, or use the harness version that wrote it",
        )
    for key, expected in (("device_class", device_class), ("model_id", model_id)):
        found = data.get(key)
        if found != expected:
            why = (
                "absolute times do not transfer across device classes"
                if key == "device_class"
                else "measurements of one model do not judge another"
            )
            raise BaselineError(
                path,
                f"baseline {path} holds {key.replace('_', ' ')} {found!r} but {expected!r} was expected here; "
                f"refusing it, {why}: move the file to where its {key.replace('_', ' ')} belongs, "
                f"or record a baseline for {expected!r} with {SAVE_HINT}",
            )
    for key, kind in (("fingerprint", dict), ("cases", dict), ("history", list)):
        if not isinstance(data.get(key), kind):
            raise BaselineError(
                path,
                f"baseline {path}: '{key}' must be a JSON {'object' if kind is dict else 'array'}; "
                f"restore the file from version control or {rerecord}",
            )
    for case_id, entry in data["cases"].items():
        _parse_case(path, case_id, entry)
    return BaselineFile(
        device_class=device_class,
        model_id=model_id,
        fingerprint=data["fingerprint"],
        cases=data["cases"],
        history=data["history"],
        path=path,
    )


def record_of(baseline: BaselineFile, case_id: str) -> CaseRecord | None:
    """The stored record of one case, or None when the baseline does not hold it."""
    entry = baseline.cases.get(case_id)
    if entry is None:
        return None
    return _parse_case(baseline.path or Path(f"<baseline {baseline.device_class}/{baseline.model_id}>"), case_id, entry)


def saved_fingerprint(baseline: BaselineFile, case_id: str) -> dict[str, Any]:
    """The fingerprint of the save that wrote a case (the file's last save, for entries that lack one)."""
    entry = baseline.cases.get(case_id)
    saved = entry.get("fingerprint") if isinstance(entry, dict) else None
    return saved if isinstance(saved, dict) else baseline.fingerprint


def speed_noise_of(baseline: BaselineFile, case_id: str) -> tuple[SpeedNoise, ...]:
    """The A/A speed noise stored with a case, one per CPU it was learned on; () when none has been measured."""
    entry = baseline.cases.get(case_id)
    if not isinstance(entry, dict) or "speed_noise" not in entry:
        return ()
    return _parse_speed_noises(baseline.path or Path("<baseline>"), case_id, entry["speed_noise"])

