"""Settings for the project's own tests (the run-wide ones are in the top-level conftest.py)."""

import pytest

_XDIST_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def _runs_inside_a_test_are_not_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest runs a test starts (pytester) must not inherit its xdist worker's variables: pytest-benchmark
    and the plugin would take them for workers of their own and time nothing through pytest-benchmark."""
    for name in _XDIST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
