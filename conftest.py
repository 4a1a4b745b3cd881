"""Settings for every pytest run of this repository: the project's tests (tests/) and its bench cases (bench_cases/).

- pytester, for the tests that run pytest itself on generated bench cases (the plugin's end-to-end tests);
- one torch thread per pytest-xdist worker (the README's `pytest -n 2`): two workers of two threads each on a
  2-core machine would wait on each other at every operation's thread barrier. A benchmark run sets its own
  threads afterwards (--bench-threads).
"""

import os

import torch

pytest_plugins = ["pytester"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
