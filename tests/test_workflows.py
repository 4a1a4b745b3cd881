"""The CI workflows parse, and every plugin option and `harness` command they use exists.

GitHub Actions cannot run here; this catches the drift that would only show on a runner: an option
renamed in the plugin but not in a workflow, a `harness` flag that does not parse.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PLUGIN_OPTIONS = set(re.findall(r'addoption\(\s*"(--[a-z-]+)"', (ROOT / "harness" / "plugin" / "options.py").read_text()))


def run_scripts(path: Path) -> list[str]:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def commands(script: str) -> list[list[str]]:
    """Shell commands of a step, continuation lines joined, variables replaced by placeholders."""
    joined = re.sub(r"\\\n\s*", " ", script)
    joined = re.sub(r"\$\{\{[^}]*\}\}|\$\{[A-Za-z_]+\}|\$[A-Za-z_]+", "X", joined)
    found = []
    for line in joined.splitlines():
        line = line.strip().split(">>")[0]
        if line and not line.startswith("#"):
            try:
                found.append(shlex.split(line))
            except ValueError:
                continue
    return found


def test_there_is_a_cpu_and_a_gpu_workflow() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"bench-cpu.yml", "bench-gpu.yml"} <= names
    gpu = yaml.safe_load((ROOT / ".github" / "workflows" / "bench-gpu.yml").read_text())
    assert "self-hosted" in gpu["jobs"]["gate"]["runs-on"] and "gpu" in gpu["jobs"]["gate"]["runs-on"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_gates_publishes_and_uploads(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert "pytest --benchmark" in scripts and "--bench-ratchet" in scripts
    assert "GITHUB_STEP_SUMMARY" in scripts
    uploads = [step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and all(step.get("if") == "always()" for step in uploads)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_plugin_options_used_in_workflows_exist(path: Path) -> None:
    used = {word.split("=")[0] for script in run_scripts(path) for command in commands(script) for word in command
            if word.startswith("--bench-") or word == "--benchmark"}  # --benchmark-* are pytest-benchmark's
    assert used and used <= PLUGIN_OPTIONS, used - PLUGIN_OPTIONS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_harness_commands_in_workflows_parse(path: Path) -> None:
    parser = build_parser()
    used = [command for script in run_scripts(path) for command in commands(script) if command[0] == "harness"]
    for command in used:
        parser.parse_args(command[1:])  # exits (SystemExit) on an unknown flag
    assert used or path.name != "bench-cpu.yml"  # the CPU workflow diffs the baselines a pull request changes
