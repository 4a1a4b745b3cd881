"""Reports: the frame, the terminal table, Markdown headline/regressions/tables, JSON, and write_report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.gate.diff import Diff, compare
from harness.records import (
    IMPROVED,
    NEW,
    PASSED,
    REGRESSED,
    CaseRecord,
    Finding,
    PipelineOutput,
    ResultSet,
    Speed,
    Speedup,
    Verdict,
)
from harness.report import (
    json_report,
    markdown_report,
    summary_frame,
    terminal_table,
    write_report,
)
from harness.report.tables import COLUMNS
from harness.store.results import read_results

REFERENCE = {"kv_cache": "off", "early_stop": "off"}
REGRESSION = "accuracy 0.71 -> 0.52 (-19.0 pts, paired test p<0.001, budget -1.0 pt): stop strings cut the answer"


def make_record(case_id: str, pipeline: str = "eval", speedup: float | None = None, **toggles: str) -> CaseRecord:
    variant = {**REFERENCE, **toggles}
    return CaseRecord(
        case_id=case_id,
        pipeline=pipeline,
        group="math",
        variant=variant,
        reference_variant=dict(REFERENCE),
        fidelity={k: "budgeted" for k in toggles},
        speed=Speed(
            round_seconds=[2.0, 2.0, 3.0],
            items_per_round=20,
            tokens_per_round=1000,
            peak_memory_bytes=3 * 2**20,
            memory_kind="cpu_peak_rss",
        ),
        output=PipelineOutput(
            quality={"accuracy": 0.84},
            counters={"generated_tokens": 2048, "forward_passes": 2080, "padding_tokens": 0},
            item_ids=["a", "b"],
            item_scores=[1.0, 0.0],
            item_outputs=["1", "2"],
        ),
        speedup=None if speedup is None else Speedup(ratio=speedup, low=speedup - 0.3, high=speedup + 0.3),
        agreement=None if not toggles else 0.95,
    )


def diff_of(records: list[CaseRecord], verdicts: dict[str, Verdict]) -> Diff:
    run = ResultSet("run.json", "report", "cpu", "embedded-reference", {"torch": "2.13.0"},
                    {r.case_id: r for r in records})
    return compare(None, run, verdicts=verdicts)


@pytest.fixture
def session() -> Diff:
    records = [
        make_record("eval[math]"),
        make_record("eval[math|early_stop=on]", speedup=5.1, early_stop="on"),
        make_record("eval[math|kv_cache=on]", speedup=1.03, kv_cache="on"),
        make_record("search[math]", pipeline="search"),
        make_record("search[math|kv_cache=on]", pipeline="search", speedup=2.5, kv_cache="on"),
    ]
    verdicts = {
        "eval[math]": Verdict("eval[math]", PASSED, (Finding("median_seconds", "baseline", PASSED, "2.0 s -> 2.0 s"),)),
        "eval[math|early_stop=on]": Verdict(
            "eval[math|early_stop=on]",
            REGRESSED,
            (
                Finding("speedup", "baseline", IMPROVED, "speedup 3.0x -> 5.1x"),
                Finding("accuracy", "baseline", REGRESSED, REGRESSION),
                Finding("counter:generated_tokens", "baseline", REGRESSED, "generated_tokens 900 -> 2048 (+127.6%)"),
            ),
        ),
        "eval[math|kv_cache=on]": Verdict(
            "eval[math|kv_cache=on]", IMPROVED, (Finding("speedup", "baseline", IMPROVED, "speedup 0.8x -> 1.03x"),)
        ),
        "search[math]": Verdict("search[math]", NEW),
        "search[math|kv_cache=on]": Verdict("search[math|kv_cache=on]", PASSED),
    }
    return diff_of(records, verdicts)


def test_summary_frame(session: Diff) -> None:
    frame = summary_frame(session)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["case"]) == [c.case_id for c in session.cases]
    rows = frame.set_index("case")
    assert rows.loc["eval[math]", "variant"] == "reference"
    assert rows.loc["eval[math]", "speedup"] == "—"
    assert math.isnan(rows.loc["eval[math]", "agreement"])
    early = rows.loc["eval[math|early_stop=on]"]
    assert early["variant"] == "early_stop=on"
    assert early["speedup"] == "5.1x [4.8-5.4]"
    assert rows.loc["eval[math|kv_cache=on]", "speedup"] == "1.03x [0.73-1.33]"
    assert early["items/min"] == pytest.approx(600.0)  # 20 items, median round 2.0 s
    assert early["tokens/s"] == pytest.approx(500.0)
    assert early["peak memory (MiB)"] == pytest.approx(3.0)
    assert early["quality"] == "accuracy 0.840"
    assert early["agreement"] == pytest.approx(0.95)
    assert early["counters"] == "gen=2048 fwd=2080 pad=0"  # no baseline: every counter
    assert early["verdict"] == REGRESSED
    assert early["reason"] == REGRESSION  # the regression, not the improvement listed before it
    assert rows.loc["eval[math|kv_cache=on]", "reason"] == "speedup 0.8x -> 1.03x"
    assert rows.loc["eval[math]", "reason"] == ""


def test_case_without_verdict_is_judged_new_without_baseline(session: Diff) -> None:
    diff = diff_of([session.cases[0].current], {})
    assert diff.cases[0].status == NEW
    assert markdown_report(diff).splitlines()[0] == "## Benchmark: 0 regressed, 0 improved, 0 passed, 1 new"


def test_markdown_headline_regressions_and_tables(session: Diff) -> None:
    text = markdown_report(session)
    assert text.splitlines()[0] == "## Benchmark: 1 regressed, 1 improved, 2 passed, 1 new"
    assert "report `run.json` (cpu, embedded-reference, torch 2.13.0) with no baseline" in text
    regressions = text[text.index("### Regressions") : text.index("### Improved")]
    assert f"- `eval[math|early_stop=on]`: {REGRESSION} [vs baseline]" in regressions
    assert "generated_tokens 900 -> 2048" in regressions
    assert "speedup 3.0x -> 5.1x" not in regressions
    improved = text[text.index("### Improved beyond the baseline") : text.index("### eval")]
    assert "`eval[math|kv_cache=on]`: speedup 0.8x -> 1.03x" in improved and "harness accept" in improved
    assert text.index("### eval") < text.index("### search")
    eval_table = text[text.index("### eval") : text.index("### search")]
    rows = [line for line in eval_table.splitlines() if line.startswith("| math")]
    assert len(rows) == 3
    assert rows[0].startswith("| math | reference | — |")
    header = eval_table.splitlines()[2]
    assert header.startswith("| group | variant | speedup (baseline) |") and header.endswith("| verdict | reason |")
    split = lambda line: [c for c in line.replace("\\|", "").split("|")]  # noqa: E731
    assert all(len(split(row)) == len(split(header)) for row in rows)
    assert "<details>" in text and "</details>" in text
    details = text[text.index("<details>") :]
    assert "regressed (accuracy vs baseline)" in details and "median 2 s wall over 3 rounds" in details


def test_markdown_without_regressions_has_no_regression_section(session: Diff) -> None:
    text = markdown_report(diff_of([session.cases[0].current], {"eval[math]": session.cases[0].verdict}))
    assert text.splitlines()[0] == "## Benchmark: 0 regressed, 0 improved, 1 passed, 0 new"
    assert "### Regressions" not in text and "### Improved" not in text


def test_terminal_table(session: Diff) -> None:
    text = terminal_table(session)
    lines = text.splitlines()
    assert all(len(line) <= 120 for line in lines if not line.startswith("    -> "))
    assert lines[0].split() == ["case", "speedup", "items/min", "tok/s", "peak", "MiB", "accuracy", "agree", "verdict"]
    reference = lines.index(next(line for line in lines if line.startswith("eval[math] ")))
    assert "—" in lines[reference] and lines[reference].endswith("passed")
    # the counters do not fit beside these columns in 120, so each case gets a counters line
    assert lines[reference + 1] == "    counters: gen=2048 fwd=2080 pad=0"
    early = lines.index(next(line for line in lines if line.startswith("eval[math|early_stop=on]")))
    assert "5.1x [4.8-5.4]" in lines[early] and "regressed" in lines[early] and "95.0%" in lines[early]
    assert lines[early + 2] == f"    -> {REGRESSION}"
    assert lines[-1] == "1 regressed, 1 improved, 2 passed, 1 new"


def test_terminal_table_counters_inline_when_they_fit(session: Diff) -> None:
    lines = terminal_table(diff_of([session.cases[0].current], {"eval[math]": session.cases[0].verdict})).splitlines()
    assert lines[0].split()[-1] == "counters"
    assert lines[2].startswith("eval[math] ") and lines[2].split()[-4:] == ["passed", "gen=2048", "fwd=2080", "pad=0"]
    assert len(lines) == 4 and all(len(line) <= 120 for line in lines)


def test_terminal_table_moves_long_counters_and_case_ids_to_their_own_lines() -> None:
    long_id = "eval[math|kv_cache=on,early_stop=on,topk=50,batching=dynamic,attention=sdpa]"
    record = make_record(long_id, speedup=2.0, kv_cache="on")
    record.output.counters = {f"counter_{i}": i * 1000 for i in range(30)}
    lines = terminal_table(diff_of([record], {})).splitlines()
    assert all(len(line) <= 120 for line in lines)
    assert "counters" not in lines[0]
    assert lines[2] == long_id
    assert lines[3].startswith(" " * 40) and "2.0x [1.7-2.3]" in lines[3]
    assert lines[4].startswith("    counters: counter_0=0 counter_1=1000") and lines[4].endswith("…")


def test_json_report_round_trips_through_read_results(session: Diff, tmp_path: Path) -> None:
    report = json_report(session)
    assert json.loads(json.dumps(report)) == report
    assert report["schema_version"] == 2 and report["fingerprint"] == {"torch": "2.13.0"}
    assert (report["device_class"], report["model_id"]) == ("cpu", "embedded-reference")
    assert report["summary"] == {"regressed": 1, "improved": 1, "passed": 2, "new": 1, "missing": 0}
    records = [c.current for c in session.cases]
    assert [c["record"]["case_id"] for c in report["cases"]] == [r.case_id for r in records]
    assert CaseRecord.from_dict(report["cases"][1]["record"]) == records[1]
    early = report["cases"][1]["verdict"]
    assert early["status"] == REGRESSED
    assert Finding(**early["findings"][1]) == session.cases[1].verdict.findings[1]
    path = tmp_path / "report.json"
    write_report(path, session)
    back = read_results(path)
    assert back.kind == "report" and list(back.records) == [r.case_id for r in records]
    assert back.verdicts["eval[math|early_stop=on]"] == session.cases[1].verdict


def test_write_report_by_suffix(session: Diff, tmp_path: Path) -> None:
    write_report(tmp_path / "out" / "report.md", session)
    assert (tmp_path / "out" / "report.md").read_text(encoding="utf-8") == markdown_report(session)
    write_report(tmp_path / "report.JSON", session)
    assert json.loads((tmp_path / "report.JSON").read_text(encoding="utf-8")) == json_report(session)


@pytest.mark.parametrize("name", ["report.txt", "report"])
def test_unknown_suffix(session: Diff, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"supported: \.md, \.html, \.json") as info:
        write_report(tmp_path / name, session)
    assert name in str(info.value)
    assert not (tmp_path / name).exists()


def test_markdown_stays_under_the_pull_request_comment_limit() -> None:
    import copy

    from diff_fixtures import as_run, recorded

    from harness.report.markdown import MARKDOWN_LIMIT

    run = as_run(recorded())
    many = {}
    for copy_index in range(12):  # 240 real records under distinct ids
        for case_id, record in run.records.items():
            clone = copy.deepcopy(record)
            clone.case_id = case_id.replace("[", f"[g{copy_index}-", 1)
            clone.group = f"g{copy_index}-{clone.group}"
            many[clone.case_id] = clone
    run.records = many
    text = markdown_report(compare(None, run))
    assert len(text) <= MARKDOWN_LIMIT
    assert "every finding is in the HTML and JSON reports" in text or "passed findings: see the HTML" in text
    small = markdown_report(compare(recorded(), as_run(recorded())))
    assert "passed findings: see" not in small and "- findings:" in small  # everything, when it fits
