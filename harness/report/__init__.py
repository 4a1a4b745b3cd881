"""Reports of a `Diff`: the terminal table, Markdown, a self-contained HTML page with plots, and JSON.

Nothing here computes verdicts; `write_report` picks the format from the file's suffix.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from harness.gate.diff import Diff
from harness.report.json_report import json_report
from harness.report.markdown import markdown_report
from harness.report.plots import INSTALL_HINT
from harness.report.tables import headline, summary_frame
from harness.report.terminal import terminal_table
from harness.store.baseline import unwritable

SUPPORTED_SUFFIXES = (".md", ".html", ".json")
# The optional package a format needs, with the extra that brings it.
_NEEDS = {".html": ("matplotlib", INSTALL_HINT)}


def missing_extra(suffix: str) -> str | None:
    """Why a report of this suffix cannot be written here (its optional package is not installed); None when it can."""
    package, hint = _NEEDS.get(suffix.lower(), (None, None))
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return hint


def render(diff: Diff, suffix: str) -> str:
    """The report's text for a file suffix: `.md`, `.html` or `.json`."""
    suffix = suffix.lower()
    if suffix == ".md":
        return markdown_report(diff)
    if suffix == ".html":
        from harness.report.html import html_report  # matplotlib is only needed here

        return html_report(diff)
    if suffix == ".json":
        return json.dumps(json_report(diff), indent=1, ensure_ascii=False) + "\n"
    raise ValueError(f"unsupported report suffix {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")


def report_problem(path: Path | str) -> str | None:
    """Why a report could not be written at `path` (its format, its extra, its folder), found before any work;
    None when it can."""
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        return f"the suffix picks the format, one of {', '.join(SUPPORTED_SUFFIXES)}"
    hint = missing_extra(path.suffix)
    if hint is not None:
        return hint
    if path.is_dir():
        return "that is a directory; give a file path"
    problem = unwritable(path.parent)
    return f"{problem}; give a path in a folder you can write" if problem else None


def write_report(path: Path | str, diff: Diff) -> None:
    """Write the report the suffix asks for; the text is rendered before the file is opened, so a failure
    leaves no half-written report."""
    path = Path(path)
    try:
        text = render(diff, path.suffix)
    except ValueError as error:
        raise ValueError(f"cannot write report {path}: {error}") from None
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


__all__ = [
    "SUPPORTED_SUFFIXES",
    "headline",
    "json_report",
    "markdown_report",
    "missing_extra",
    "render",
    "report_problem",
    "summary_frame",
    "terminal_table",
    "write_report",
]
