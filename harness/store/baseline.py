"""Stored baselines: `baselines/<device-class>/<model-id>.json`, JSON only, with a schema version.

Load (validated by `baseline_format`: every problem is a BaselineError naming the file and the fix), merge and save atomically
(exclusive lock, re-read under the lock, temp file in the same directory, `os.replace`). Nothing here decides
pass or fail; that is `verdict`'s.

The file's format and its validation are in `baseline_format`; which stored speed holds on this machine is the
gate's (`gate.machine`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.records import CaseRecord, SpeedNoise
from harness.store.baseline_format import (
    SAVE_HINT,
    BaselineError,
    BaselineFile,
    record_problem,
    speed_noise_of,
    validate,
)

HOME_PLACEHOLDER = "<home>"
CWD_PLACEHOLDER = "<cwd>"


# --- paths -------------------------------------------------------------------------------------------------


def unwritable(directory: Path) -> str | None:
    """Why files cannot be written in `directory` (made if missing); None when they can."""
    existing = directory.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


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
    return validate(path, data, device_class, model_id)


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
        problem = record_problem(record)
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

