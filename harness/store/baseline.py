"""Stored baselines: `baselines/<device-class>/<model-id>.json`, JSON only, with a schema version.

Load and validate (every problem is a BaselineError naming the file and the fix), merge and save atomically
(exclusive lock, re-read under the lock, temp file in the same directory, `os.replace`). Nothing here decides
pass or fail; that is `verdict`'s.

One piece past 400 lines because storage (load, validate, atomic merge) and the matching of a stored case to this
machine (noise per CPU, calibration scale) read the same file format; the split into a store/ package is planned.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.records import CPU_TIME, WALL, CaseRecord, SpeedNoise

SCHEMA_VERSION = 1

SAVE_HINT = 'pytest --benchmark --bench-save-baseline --bench-reason "why"'
HOME_PLACEHOLDER = "<home>"
CWD_PLACEHOLDER = "<cwd>"


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


# --- paths -------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    """A file-name-safe form: `org/name` -> `org--name`, anything odd -> `_`, never hidden or `..`."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", text.strip().replace("/", "--").replace("\\", "--"))
    return re.sub(r"^\.+", lambda m: "_" * len(m.group()), slug)


def baseline_path(directory: Path, device_class: str, model_id: str) -> Path:
    """`<directory>/<device-class>/<model-id>.json`; a model id such as `org/name` becomes `org--name`."""
    if not device_class or not device_class.strip():
        raise ValueError("device class must be non-empty ('cpu' or 'cuda-<gpu-slug>')")
    if not model_id or not model_id.strip():
        raise ValueError("model id must be non-empty")
    return Path(directory) / _slug(device_class) / f"{_slug(model_id)}.json"


# --- scrubbing absolute paths -------------------------------------------------------------------------------

_GENERIC_HOMES = (
    re.compile(r"(?<![\w.-])/home/[^/\s\"']+"),
    re.compile(r"(?<![\w.-])/Users/[^/\s\"']+"),
    re.compile(r"(?<![\w.-])/root(?![\w.-])"),
    re.compile(r"(?<![\w.-])[A-Za-z]:\\Users\\[^\\\s\"']+"),
)


def _local_prefixes() -> list[tuple[str, str]]:
    """(absolute prefix, placeholder) for this process's working directory and home, longest first."""
    found: list[tuple[str, str]] = []
    for placeholder, get in ((CWD_PLACEHOLDER, os.getcwd), (HOME_PLACEHOLDER, lambda: str(Path.home()))):
        try:
            raw = get()
        except (OSError, RuntimeError, KeyError):
            continue
        for candidate in {raw, os.path.realpath(raw)}:
            candidate = candidate.rstrip("/\\")
            if len(Path(candidate).parts) >= 2:  # never scrub the bare root
                found.append((candidate, placeholder))
    return sorted(found, key=lambda pair: len(pair[0]), reverse=True)


def _scrub_string(text: str, prefixes: list[tuple[str, str]]) -> str:
    for prefix, placeholder in prefixes:
        text = re.sub(r"(?<![\w.-])" + re.escape(prefix) + r"(?![\w.-])", placeholder, text)
    for pattern in _GENERIC_HOMES:
        text = pattern.sub(HOME_PLACEHOLDER, text)
    return text


def scrub_paths(value: Any) -> Any:
    """A copy of a JSON-like value with absolute paths of the home and working directories replaced by
    `<home>` / `<cwd>` (in keys and values, at any depth). A safety net: fingerprints should not hold them."""
    prefixes = _local_prefixes()

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _scrub_string(item, prefixes)
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        return item

    return walk(value)


# --- validation ---------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _record_problem(record: CaseRecord) -> str | None:
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
    problem = _record_problem(record)
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


def _validate(path: Path, data: Any, device_class: str, model_id: str) -> BaselineFile:
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


# --- loading ------------------------------------------------------------------------------------------------


def load_baseline(path: Path, device_class: str, model_id: str) -> BaselineFile | None:
    """The validated baseline at `path`, or None when there is none yet."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise BaselineError(
            path,
            f"baseline {path} is not valid JSON (not UTF-8 text); "
            f"restore it from version control or re-record it with --bench-save-baseline",
        ) from None
    except OSError as error:
        raise BaselineError(
            path, f"baseline {path} cannot be read ({error.strerror or error}); check its permissions"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(
            path,
            f"baseline {path} is not valid JSON (line {error.lineno} col {error.colno}: {error.msg}); "
            f"restore it from version control or re-record it with --bench-save-baseline",
        ) from None
    return _validate(path, data, device_class, model_id)


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


# --- saving -------------------------------------------------------------------------------------------------


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on the sibling `<name>.lock` (left in place: deleting lock files races)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Write a temp file next to `path`, fsync it, `os.replace` it over `path`; on any failure remove the temp
    file and leave `path` as it was."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; best effort (not every filesystem allows it)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def current_commit(root: Path | str | None = None, ignore: Path | str | None = None) -> str | None:
    """The short git commit of `root` (default: the working directory), recorded with a save; None outside git.

    With changes not committed (tracked files edited, or files git does not ignore yet untracked), the code
    measured is not that commit's, and the commit id ends in `-dirty`. Changes under `ignore` (the baseline
    directory, which an earlier save from the same checkout has written) do not count.
    """
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if not commit:
        return None
    pathspec = ["--", "."]
    if ignore is not None:
        inside = os.path.relpath(Path(ignore).resolve(), Path(root or ".").resolve())
        if not inside.startswith(".."):
            pathspec.append(f":(exclude){inside}")
    changes = _git(root, "status", "--porcelain", *pathspec)
    return f"{commit}-dirty" if changes else commit


def _git(root: Path | str | None, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def save_baseline(
    path: Path,
    device_class: str,
    model_id: str,
    fingerprint: dict[str, Any],
    records: list[CaseRecord],
    reason: str,
    commit: str | None,
    min_rounds: int = 1,
) -> BaselineFile:
    """Merge `records` into the baseline at `path` (cases not saved keep their entries), append a history
    entry, and write it atomically under an exclusive lock. Returns the baseline as written.

    A record with fewer than `min_rounds` timed rounds is refused, with nothing written: the caller's speed rule
    could not judge against it (the caller says how many its rules need)."""
    path = Path(path)
    if not isinstance(reason, str) or not reason.strip():
        raise BaselineError(
            path,
            f"refusing to save baseline {path} without a reason; "
            f'say why the baseline changes with --bench-reason "..." (it goes into the file\'s history)',
        )
    if not records:
        raise BaselineError(path, f"nothing to save into baseline {path}: no case ran; run the cases to record first")
    seen: set[str] = set()
    for record in records:
        problem = _record_problem(record)
        if problem is not None:
            raise BaselineError(path, f"cannot save case {record.case_id!r} into baseline {path}: {problem}")
        if record.case_id in seen:
            raise BaselineError(
                path,
                f"cannot save baseline {path}: case {record.case_id!r} appears twice in one save; "
                "each case id must be unique",
            )
        seen.add(record.case_id)
    too_few = sorted(r.case_id for r in records if len(r.speed.judged_seconds) < min_rounds)
    if too_few:
        raise BaselineError(path, f"refusing to save baseline {path}: {len(too_few)} case(s) have fewer than {min_rounds} "
                                  f"timed rounds, too few to judge speed against ({', '.join(too_few[:3])}"
                                  f"{', ...' if len(too_few) > 3 else ''}); measure them with --bench-rounds {min_rounds} or more")

    saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    reason = reason.strip()
    fingerprint = scrub_paths(dict(fingerprint))
    new_entries: dict[str, dict[str, Any]] = {}
    for record in records:
        data = record.to_dict()
        data["metadata"] = scrub_paths(data["metadata"])
        new_entries[record.case_id] = {
            "record": data,
            "saved_at": saved_at,
            "reason": reason,
            "commit": commit,
            "fingerprint": fingerprint,
        }

    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(path):
        # Re-read under the lock: another process may have saved since; a corrupt file raises here, unwritten.
        current = load_baseline(path, device_class, model_id)
        cases = dict(current.cases) if current else {}
        history = list(current.history) if current else []
        cases.update(new_entries)  # a case saved again loses its speed_noise: it was measured against the old record
        history.append({"saved_at": saved_at, "reason": reason, "commit": commit, "cases": sorted(new_entries)})
        baseline = BaselineFile(device_class, model_id, fingerprint, cases, history, path=path)
        _write_baseline(baseline)
    return baseline


def _write_baseline(baseline: BaselineFile) -> None:
    try:
        text = _dumps(baseline.to_json())
    except (TypeError, ValueError) as error:
        raise BaselineError(
            baseline.path, f"cannot write baseline {baseline.path}: a record holds a value JSON cannot store ({error})"
        ) from None
    _write_atomically(baseline.path, text)


def store_speed_noise(path: Path, device_class: str, model_id: str, noise: dict[str, SpeedNoise], reason: str) -> BaselineFile:
    """Store A/A speed noise with the cases it was measured for, atomically and under the lock, in place of any
    noise learned on the same CPU; records stay as they are. Every case named must be in the baseline."""
    path = Path(path)
    with _exclusive_lock(path):
        current = load_baseline(path, device_class, model_id)
        if current is None:
            raise BaselineError(path, f"no baseline at {path} to store speed noise in; record one with {SAVE_HINT}")
        unknown = sorted(set(noise) - set(current.cases))
        if unknown:
            raise BaselineError(path, f"cannot store speed noise for cases not in baseline {path}: {', '.join(unknown)}")
        cases = {case_id: dict(entry) for case_id, entry in current.cases.items()}
        for case_id, case_noise in noise.items():
            # The noise of the CPU it was learned on replaces that CPU's; the other CPUs' entries stay.
            others = [kept for kept in speed_noise_of(current, case_id)
                      if not kept.learned_here(case_noise.learned_on, case_noise.arch)]
            cases[case_id]["speed_noise"] = [kept.to_dict() for kept in others] + [case_noise.to_dict()]
        saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        history = [*current.history, {"saved_at": saved_at, "reason": reason, "commit": None,
                                      "cases": sorted(noise), "speed_noise": True,
                                      "cpus": sorted({case_noise.learned_on for case_noise in noise.values()})}]
        baseline = BaselineFile(device_class, model_id, current.fingerprint, cases, history, path=path)
        _write_baseline(baseline)
    return baseline

