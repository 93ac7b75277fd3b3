"""Shared test setup: a per-session data root, so that converted datasets are reused across tests
and nothing is written to the user's cache."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def session_data_root(tmp_path_factory):
    if "BENCH_DATA" not in os.environ:
        os.environ["BENCH_DATA"] = str(tmp_path_factory.mktemp("bench-data"))
    return os.environ["BENCH_DATA"]


@pytest.fixture
def data_mirror() -> str:
    """The real-data mirror; tests that need it skip, saying why, when it is not set."""
    mirror = os.environ.get("BENCH_DATA_MIRROR")
    if not mirror or not os.path.isdir(mirror):
        pytest.skip("real data tests need BENCH_DATA_MIRROR (a directory laid out like ../shared/data)")
    return mirror


@pytest.fixture(scope="module")
def single_thread():
    """Tiny float64 ops run fastest (and steadiest on a loaded machine) on one thread: modules of
    such tests use it with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
