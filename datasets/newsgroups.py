"""20 Newsgroups with NVDM's 2,000-word vocabulary (Miao et al. 2016; registered as '20news').

The same corpus as Mnih & Gregor (2014) and Salakhutdinov & Hinton (2009): 2,000-word
vocabulary, 20 class labels. Raw files from `ysmiao/nvdm`, `data/20news/` (initial commit
6330256c, unchanged at master): `train.feat` (11,268 documents), `test.feat` (7,505) and
`vocab.new` (2,000 words). `jiacheng-xu/vmf_vae_nlp` (commit a990b495) commits byte-identical
`test.feat` and `vocab.new`, used as fallbacks. See shared/data/PROVENANCE.md §2.

Documents are bags of words: float32 CSR count matrices of shape (N, 2000); labels are not
kept. Document lengths are the row sums (`Data.document_lengths`).

Split `paper` (the only one), NVIL §4.1: 100 documents held out from train for validation,
chosen with `numpy.random.default_rng(VALID_SEED)`; test is `test.feat`.

Processed cache: `processed/20news-paper-v1-<hash>.npz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets import _resources as res
from datasets._data import (
    COUNTS,
    Data,
    column_mean,
    hold_out,
    load_counts_cache,
    rows,
    save_counts_cache,
)
from datasets._feat import read_feat, read_vocab

NAME = "20news"
KIND = COUNTS
SPLITS = ("paper",)
FETCHABLE = True
VALID_SIZE = 100
VALID_SEED = 0
PROCESSING_VERSION = "v1"

FOLDER = "20news"
_NVDM = "https://raw.githubusercontent.com/ysmiao/nvdm/{commit}/data/20news/{name}"
_NVDM_COMMITS = ("6330256cd2ad4e091238f80dbb00355ca4a2a949", "master")
_VMF_VAE_NLP = ("https://raw.githubusercontent.com/jiacheng-xu/vmf_vae_nlp/"
                "a990b495060ac1b7fefdef51acd9934304266efb/data/20ng/{name}")


def _resource(name: str, sha256: str, size: int, fmt: str, extra_urls: tuple[str, ...] = ()
              ) -> res.Resource:
    urls = tuple(_NVDM.format(commit=commit, name=name) for commit in _NVDM_COMMITS) + extra_urls
    return res.Resource(name, FOLDER, (res.Source(name, urls, sha256, size, fmt),))


RESOURCES: tuple[res.Resource, ...] = (
    _resource("train.feat", "55dfc0cc4e8aac22484ed93a4d785bb171959a00e8ffbca6f13c1c80d8cc4ce5",
              4_335_856, "feat"),
    _resource("test.feat", "344eff7e61116d72abd6ebc3d3c1e286c0474b41bf85ab09c8b898e0a5ff80c1",
              2_830_914, "feat", (_VMF_VAE_NLP.format(name="test.feat"),)),
    _resource("vocab.new", "afbe73140a0d39578e6ae33914e049e6587768c088a0501392afda20ca3c85a8",
              21_748, "vocab", (_VMF_VAE_NLP.format(name="vocab.new"),)),
)


def read_feat_directory(train_path: Path, test_path: Path, vocab_path: Path, valid_size: int,
                        valid_seed: int) -> tuple[dict, tuple[str, ...]]:
    """NVDM's three files as parts train/valid/test, `valid_size` documents held out of train."""
    vocab = read_vocab(vocab_path)
    train_all, _ = read_feat(train_path, len(vocab))
    test, _ = read_feat(test_path, len(vocab))
    kept, held = hold_out(train_all.shape[0], valid_size, valid_seed)
    return {"train": rows(train_all, kept), "valid": rows(train_all, held), "test": test}, vocab


def _by_name(located: list[res.Located]) -> dict[str, Path]:
    return {item.resource.name: item.path for item in located}


def _cache_file(root: Path, located: list[res.Located]) -> Path:
    return res.cache_path(root, f"{NAME}-paper", PROCESSING_VERSION,
                          [item.source.sha256 for item in located],
                          {"valid_size": VALID_SIZE, "valid_seed": VALID_SEED})


def _build_cache(root: Path, located: list[res.Located]) -> None:
    cache = _cache_file(root, located)
    if cache.is_file():
        return
    paths = _by_name(located)
    parts, vocab = read_feat_directory(paths["train.feat"], paths["test.feat"], paths["vocab.new"],
                                       VALID_SIZE, VALID_SEED)
    save_counts_cache(cache, parts, vocab, extra={
        "processing_version": np.asarray(f"{NAME}-paper-{PROCESSING_VERSION}"),
        "raw_sha256": np.asarray([item.source.sha256 for item in located]),
    })


def fetch(root: Path) -> list[Path]:
    located = res.ensure_resources(root, RESOURCES, NAME)
    _build_cache(root, located)
    return [item.path for item in located]


def load(split: str, root: Path) -> Data:
    located = res.located_without_hashing(root, RESOURCES)
    if located is None or not _cache_file(root, located).is_file():
        located = res.ensure_resources(root, RESOURCES, NAME)
        _build_cache(root, located)
    cache = _cache_file(root, located)
    parts, vocab = load_counts_cache(cache)
    return Data(
        name=NAME, split=split, kind=KIND, num_features=len(vocab),
        train=parts["train"], valid=parts["valid"], test=parts["test"],
        train_mean=column_mean(parts["train"]), vocab=vocab,
        provenance={**res.provenance_of(located),
                    "processing_version": f"{NAME}-paper-{PROCESSING_VERSION}",
                    "cache_file": str(cache)},
    )


def check_files(root: Path) -> list[res.FileCheck]:
    return [res.check_resource(root, resource) for resource in RESOURCES]
