"""Dataset loaders for the NVIL benchmark suite (Mnih & Gregor 2014 and successors).

    import datasets
    datasets.names()                   # ['20news', 'mnist', 'rcv1', 'synthetic']
    datasets.splits('mnist')           # ['paper', 'standard']; the first is the default
    data = datasets.load('mnist')      # fetched (mirror or network), verified, cached
    data.train, data.valid, data.test  # uint8 (N, 784) arrays

Datasets (each module's docstring gives its recipe and provenance):
- mnist: binarized MNIST, Larochelle's fixed binarization (`datasets.mnist`);
- 20news: 20 Newsgroups, NVDM's 2,000-word version (`datasets.newsgroups`);
- rcv1: RCV1-v2, 10,000 words, built from the LYRL2004 token files (`datasets.rcv1`);
- synthetic: samples of a small sigmoid belief network with an exact likelihood
  (`datasets.synthetic`).

Data root: `data_dir`, else $BENCH_DATA, else $XDG_CACHE_HOME/nvil-bench (~/.cache/nvil-bench).
Set $BENCH_DATA_MIRROR to a local copy of the upstream files to work offline; see
`datasets._resources` for how files are fetched, verified and written.

This package is named `datasets`, like the Hugging Face package; run the suite from its
checkout (or install it) so that this one is found first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bench.errors import unknown_name
from datasets import mnist, newsgroups, rcv1, synthetic
from datasets._data import Data
from datasets._resources import (
    MIRROR_ENV,
    ChecksumMismatchError,
    DataNotFoundError,
    FileCheck,
    resolve_data_dir,
)

__all__ = [
    "MIRROR_ENV",
    "ChecksumMismatchError",
    "Data",
    "DataNotFoundError",
    "FileCheck",
    "check_files",
    "fetch",
    "fetchable_names",
    "load",
    "names",
    "resolve_data_dir",
    "splits",
]

_MODULES = {module.NAME: module for module in (mnist, newsgroups, rcv1, synthetic)}


def names() -> list[str]:
    """Every registered dataset, sorted."""
    return sorted(_MODULES)


def fetchable_names() -> list[str]:
    """Datasets with files to obtain (all but the generated ones), sorted."""
    return [name for name in names() if _MODULES[name].FETCHABLE]


def _module(name: str):
    if name not in _MODULES:
        raise unknown_name("dataset", name, _MODULES)
    return _MODULES[name]


def splits(name: str) -> list[str]:
    """Valid split names for a dataset; the first is the default."""
    return list(_module(name).SPLITS)


def load(name: str, split: str | None = None, data_dir: str | os.PathLike | None = None) -> Data:
    """One dataset under one split, fetching and verifying its raw files if needed."""
    module = _module(name)
    split = module.SPLITS[0] if split is None else split
    if split not in module.SPLITS:
        raise unknown_name("split", split, module.SPLITS)
    root = resolve_data_dir(data_dir)
    with _fetching(root, name):
        return module.load(split, root)


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Obtain and verify a dataset's raw files and build its processed caches; the raw paths."""
    module = _module(name)
    root = resolve_data_dir(data_dir)
    with _fetching(root, name):
        return module.fetch(root)


@contextlib.contextmanager
def _fetching(root: Path, name: str):
    """One process at a time obtains, verifies and caches a dataset in a data root: workers of one
    node (the processes of `bench run --jobs`, Ray's tasks) fetch it once; the others wait, then
    find it there. A data root this process cannot write in (a read-only copy) is read unlocked."""
    from bench import locks

    try:
        locks.acquire(root / ".locks" / name, wait=True)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        locks.release(root / ".locks" / name)


def check_files(name: str, data_dir: str | os.PathLike | None = None) -> list[FileCheck]:
    """Hash every raw file of a dataset in the data root: OK, MISMATCH, MISSING or UNCHECKED."""
    return _module(name).check_files(resolve_data_dir(data_dir))
