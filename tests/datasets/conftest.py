"""Fixtures for the dataset tests: an isolated data root, no network, and small fake files.

Every test gets its own data root ($BENCH_DATA in tmp_path), no $BENCH_DATA_MIRROR, and an
`_open_url` that fails the test if called, so nothing here touches the real network or the
user's cache. Tests that need downloads take `fake_web` and give it bytes per URL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_fakes import (
    REAL_MIRROR,
    FakeFeatCorpus,
    FakeMnist,
    FakeWeb,
    make_fake_feat_corpus,
    make_fake_mnist,
    no_network,
    register_fake_20news,
    register_fake_mnist,
)

import datasets
from datasets import _resources


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path, monkeypatch):
    """A fresh data root per test, no mirror, and no network."""
    root = tmp_path / "data-root"
    monkeypatch.setenv(_resources.DATA_DIR_ENV, str(root))
    monkeypatch.delenv(_resources.MIRROR_ENV, raising=False)
    monkeypatch.setattr(_resources, "_open_url", no_network)
    return root


@pytest.fixture
def data_root(isolated_data_env) -> Path:
    return isolated_data_env


@pytest.fixture
def fake_web(monkeypatch) -> FakeWeb:
    web = FakeWeb()
    monkeypatch.setattr(_resources, "_open_url", web)
    return web


@pytest.fixture
def use_mirror(monkeypatch):
    def install(directory: Path) -> Path:
        monkeypatch.setenv(_resources.MIRROR_ENV, str(directory))
        return directory
    return install


@pytest.fixture
def fake_mnist(monkeypatch) -> FakeMnist:
    fake = make_fake_mnist()
    register_fake_mnist(monkeypatch, fake)
    return fake


@pytest.fixture
def fake_20news(monkeypatch) -> FakeFeatCorpus:
    fake = make_fake_feat_corpus()
    register_fake_20news(monkeypatch, fake)
    return fake


@pytest.fixture(scope="session")
def real_data_root(tmp_path_factory) -> Path:
    """A data root filled once per session from the real mirror ($BENCH_DATA_MIRROR)."""
    if not REAL_MIRROR:
        pytest.skip(reason=f"{_resources.MIRROR_ENV} is not set; point it at a copy of the "
                           f"upstream files (e.g. /work/shared/data) to run the real-data tests")
    root = tmp_path_factory.mktemp("real-data-root")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_resources.MIRROR_ENV, REAL_MIRROR)
        datasets.fetch("mnist", root)
        datasets.fetch("20news", root)
    return root
