"""The HTML report: content, escaping, self-containment and structure on recorded fixtures, the page as a
headless browser renders it, and the error when matplotlib is missing."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from diff_fixtures import (
    ALL_ON,
    NO_BATCHING,
    SEARCH_ALL_ON,
    answers_lost,
    as_run,
    dropped,
    on_device,
    recorded,
    slowed,
)

from harness.gate.diff import Diff, compare
from harness.records import REGRESSED, Finding, ResultSet
from harness.report import write_report
from harness.report.tables import ACCEPT_HINT, headline_finding

pytest.importorskip("matplotlib", reason="the HTML report needs the report extra")
from harness.report.html import html_report  # noqa: E402  (after the skip: it imports matplotlib's helpers)
from harness.report.plots import BASELINE_COLOUR, INSTALL_HINT, STATUS_COLOURS  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
PIPELINES = ("eval", "scoring", "search")
# A message as a model's output could shape it: `<` and `&` must come out as text, not markup.
MARKUP_MESSAGE = "answer '<think>2 < 3</think>' kept the tag & lost the number"
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?\s*(?:https?:)?//""", re.I)
VOID_TAGS = {"meta", "br", "wbr", "img", "link", "hr", "input"}


def _only(results: ResultSet, pipeline: str) -> ResultSet:
    """The result set cut down to one pipeline: a quicker page where the test is not about the layout."""
    for case_id in [c for c, r in results.records.items() if r.pipeline != pipeline]:
        results = dropped(results, case_id)
    return results


def _regressed_diff() -> Diff:
    """ALL_ON 4x slower, NO_BATCHING with 8 answers lost, SEARCH_ALL_ON gone; ALL_ON's verdict also carries a
    message with markup in it."""
    old = recorded()
    new = dropped(answers_lost(slowed(as_run(old), ALL_ON, 4.0), NO_BATCHING, 8), SEARCH_ALL_ON)
    diff = compare(old, new)
    case = next(c for c in diff.cases if c.case_id == ALL_ON)
    extra = Finding("accuracy", "baseline", REGRESSED, MARKUP_MESSAGE)
    case.verdict = replace(case.verdict, findings=case.verdict.findings + (extra,))
    return diff


@pytest.fixture(scope="module")
def diff() -> Diff:
    return _regressed_diff()


@pytest.fixture(scope="module")
def page(diff: Diff) -> str:
    return html_report(diff)


# --- content --------------------------------------------------------------------------------------------------


def test_headline_banner_is_coloured_by_the_worst_status(page: str) -> None:
    banner = re.search(r'<header class="banner" style="background:([^"]+)"><h1>([^<]*)</h1>', page)
    assert banner is not None
    assert banner.group(1) == STATUS_COLOURS[REGRESSED]
    assert banner.group(2) == "Benchmark: 3 regressed, 0 improved, 16 passed, 0 new, 1 missing"
    assert "<code>run.json</code>" in page and "recorded-cpu-baseline.json" in page


def test_one_plane_bars_and_timings_figure_per_pipeline(page: str) -> None:
    for kind in ("plane", "bars", "timings"):
        figures = re.findall(rf'<figure class="plot {kind}" data-pipeline="([^"]+)"><svg', page)
        assert figures == list(PIPELINES), kind
    assert page.count("<svg") == 3 * len(PIPELINES)
    assert [m for m in re.findall(r"<h2>([^<]+)</h2>", page)] == list(PIPELINES)


def test_regressions_are_listed_with_their_messages_escaped(page: str, diff: Diff) -> None:
    regressions = page[page.index("<h3>Regressions</h3>"):page.index("<h3>Missing from this run</h3>")]
    for case in diff.of(REGRESSED):
        assert escape(case.case_id) in regressions
    speed = next(f.message for f in next(c for c in diff.cases if c.case_id == ALL_ON).verdict.findings
                 if f.metric == "speedup")
    assert speed.startswith("speedup 32.60x -> 8.15x")
    assert escape(speed) in regressions and speed not in regressions  # `->` comes out as `-&gt;`
    assert escape(MARKUP_MESSAGE) in page
    assert "<think>" not in page and "2 < 3" not in page


def test_table_marks_dominated_variants_and_colours_verdicts(page: str) -> None:
    assert "dominated by #" in page
    row = re.search(rf'<tr data-case="{re.escape(escape(NO_BATCHING))}">(.*?)</tr>', page).group(1)
    assert "accuracy 0.750" in row and "(-25.0 pts)" in row
    assert f"background:{STATUS_COLOURS[REGRESSED]}" in row and ">regressed<" in row
    assert re.search(r'class="dominated">dominated by #\d+ ', row)
    assert page.count("<tr data-case=") == 20


def test_missing_case_is_listed_tabled_and_detailed(page: str, diff: Diff) -> None:
    missing = page[page.index("<h3>Missing from this run</h3>"):page.index("<section")]
    assert escape(SEARCH_ALL_ON) in missing and headline_finding(diff.of("missing")[0]) in missing
    assert f'<tr data-case="{escape(SEARCH_ALL_ON)}">' in page
    assert f'<details data-case="{escape(SEARCH_ALL_ON)}">' in page


def test_details_hold_every_finding_and_the_baseline_acceptance(page: str, diff: Diff) -> None:
    details = re.findall(r"<details .*?</details>", page, re.S)
    assert len(details) == len(diff.cases)
    all_on = next(d for d in details if f'data-case="{escape(ALL_ON)}"' in d)
    findings = next(c for c in diff.cases if c.case_id == ALL_ON).verdict.findings
    assert all_on.count("<tr><td><span class=\"verdict\"") == len(findings)
    assert "baseline accepted" in all_on and "timing (this run)" in all_on and "timing (baseline)" in all_on


# --- self-contained and well formed ---------------------------------------------------------------------------


def test_page_fetches_nothing(page: str) -> None:
    assert not EXTERNAL.findall(page)
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "<!DOCTYPE svg" not in page and "<?xml" not in page


class _TagBalance(HTMLParser):
    """Every non-void tag closes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1] if self.open else 'nothing'}")
        else:
            self.open.pop()


def test_page_is_well_formed(page: str) -> None:
    parser = _TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.open == []
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 3 * len(PIPELINES)
    for svg in svgs:
        ElementTree.fromstring(svg)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "ids must be unique across the inlined SVGs"
    # every in-page reference points at an id of the page
    assert set(re.findall(r'href="#([^"]+)"', page)) <= set(ids)


# --- other scenarios --------------------------------------------------------------------------------------------


def test_improvement_across_devices_says_baseline_is_stale_and_notes_the_devices(tmp_path: Path) -> None:
    old = _only(recorded(), "eval")
    new = _only(on_device(as_run(recorded()), "cuda-h100"), "eval")
    new.records[NO_BATCHING].output.counters["generated_tokens"] -= 100  # less work, the same outputs
    path = tmp_path / "report.html"
    write_report(path, compare(old, new, cross_device=True))
    page = path.read_text(encoding="utf-8")
    assert "Benchmark: 0 regressed, 1 improved, 6 passed, 0 new" in page
    assert f'style="background:{STATUS_COLOURS["improved"]}"' in page  # the banner, amber
    assert "These baselines are stale" in page and escape(ACCEPT_HINT) in page
    assert "device classes differ (cpu vs cuda-h100)" in page
    assert page.count('<figure class="plot plane"') == 1


def test_without_baseline_every_case_is_new_and_plotted_alone() -> None:
    page = html_report(compare(None, _only(as_run(recorded()), "scoring")))
    assert "Benchmark: 0 regressed, 0 improved, 0 passed, 7 new" in page
    assert "with no baseline" in page and "(was " not in page
    assert page.count("<svg") == 3
    assert BASELINE_COLOUR not in page  # no grey baseline marks


def test_missing_matplotlib_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    diff = compare(None, _only(as_run(recorded()), "scoring"))
    with pytest.raises(ImportError, match=re.escape(INSTALL_HINT)):
        html_report(diff)
    with pytest.raises(ImportError, match=re.escape('pip install "pytest-llm-harness[report]"')):
        write_report(tmp_path / "report.html", diff)
    assert not (tmp_path / "report.html").exists()


# --- in a real browser ----------------------------------------------------------------------------------------


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def test_headless_browser_renders_plots_table_and_colours(page: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("install Debian's chromium to run the browser check")
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    dom = _chromium(tmp_path, "--dump-dom", report.as_uri()).stdout
    assert dom.count("<svg") == 3 * len(PIPELINES)
    assert dom.count("<tr data-case=") == 20
    assert "Benchmark: 3 regressed" in dom

    png = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,2400", "--hide-scrollbars", report.as_uri())
    assert png.exists()
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape == (2400, 1400, 3)
    assert pixels.std() > 20, "the screenshot is blank"
    red = np.array([int(STATUS_COLOURS[REGRESSED][i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(pixels - red).sum(axis=2) < 30).sum() > 1000, "no red of the regressed banner and verdicts"
