"""Settings for the test run as a whole."""

import os

import pytest
import torch

_XDIST_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")

# Under pytest-xdist (the README's `pytest -n 2`) each worker runs torch on one thread: two workers of two
# threads each on a 2-core machine would wait on each other at every operation's thread barrier.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _runs_inside_a_test_are_not_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest runs a test starts (pytester) must not inherit its xdist worker's variables: pytest-benchmark
    and the plugin would take them for workers of their own and time nothing through pytest-benchmark."""
    for name in _XDIST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
