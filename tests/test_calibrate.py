"""`harness calibrate`: bad input is refused before any gate run; the A/A runs go on where a log left off.

How the noise is learned and stored is tested in test_gate_study.py (test_calibrate_stores_...).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import calibrate as calibration
from harness.cli import main


def test_too_few_runs_and_a_missing_baseline_are_refused_before_any_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(calibration, "run_gate", lambda *args: pytest.fail("no gate run was due"))
    assert main(["calibrate", "--runs", "3"]) == 2
    assert "needs 8 A/A runs or more" in capsys.readouterr().err
    assert main(["calibrate", "--baseline", str(tmp_path / "none.json")]) == 2
    error = capsys.readouterr().err
    assert "no baseline at" in error and "--bench-save-baseline" in error


def test_pytest_arguments_go_only_to_calibrate(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["diff", "a.json", "b.json", "--", "-k", "eval"])
    assert exit_info.value.code == 2
    assert "only harness calibrate runs" in capsys.readouterr().err


def test_the_a_a_runs_continue_a_log_and_hand_pytest_its_arguments(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "aa.jsonl"
    log.write_text(json.dumps({"cases": {}, "exit_code": 0, "seconds": 1.0}) + "\n")
    calls = []

    def gate(pytest_args, baseline):
        calls.append((pytest_args, baseline))
        return {"cases": {}, "exit_code": 0, "seconds": 1.0}

    monkeypatch.setattr(calibration, "run_gate", gate)
    calibration.run_aa(log, 3, ["-k", "eval"], Path("b.json"))
    assert calls == [(["-k", "eval"], Path("b.json"))] * 2  # the logged run counts
    assert len(calibration.logged_runs(log)) == 3
