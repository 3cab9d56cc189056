"""Shared test settings: keep torch to one thread per worker (CI has 2 cores, pytest runs 2 workers)."""

from __future__ import annotations

import os

# Wide, colourless rich output so tests that read tables do not depend on the terminal.
os.environ["COLUMNS"] = "200"
os.environ.setdefault("NO_COLOR", "1")
# Tests run on the CPU even where CUDA is visible: what they compare with was made on CPUs. A test
# about the GPU sets the device itself (and is marked ``gpu``).
os.environ["FSSBENCH_DEVICE"] = "cpu"

import fssbench  # noqa: E402,F401  (pins the CPU kernel dispatch before torch does any work)
import matplotlib  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is fastest, and immune to a busy machine (2 threads on 2
    shared cores can spin-wait for seconds per op). Modules opt in with ``pytestmark``."""
    from fssbench.workers import threads

    with threads(1):
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests: skipped without CUDA (the only tests that may leave the CPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
