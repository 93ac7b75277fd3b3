"""The real files, when $BENCH_DATA_MIRROR points at a copy of them (e.g. /work/shared/data).

Skipped otherwise. The files are copied and converted once per session (`real_data_root`);
the expected numbers are those in shared/data/PROVENANCE.md §1-2.
"""

from __future__ import annotations

import numpy as np
import pytest

import datasets


def test_real_raw_files_verify(real_data_root):
    for name in ("mnist", "20news"):
        checks = datasets.check_files(name, real_data_root)
        assert [c.status for c in checks] == ["OK"] * 3, checks


def test_real_mnist_standard_split(real_data_root):
    data = datasets.load("mnist", "standard", real_data_root)
    assert [data.part(p).shape for p in data.PARTS] == [(50_000, 784), (10_000, 784), (10_000, 784)]
    assert int(data.train.sum()) == 5_118_041
    assert int(data.valid.sum()) == 1_028_036
    assert int(data.test.sum()) == 1_038_896
    assert data.train.mean() == pytest.approx(0.13056, abs=5e-6)
    assert data.train_mean.mean() == pytest.approx(0.13056, abs=5e-6)


def test_real_mnist_paper_split(real_data_root):
    data = datasets.load("mnist", "paper", real_data_root)
    assert [data.part(p).shape[0] for p in data.PARTS] == [59_900, 100, 10_000]
    assert int(data.train.sum()) + int(data.valid.sum()) == 5_118_041 + 1_028_036


def test_real_20news(real_data_root):
    data = datasets.load("20news", data_dir=real_data_root)
    assert len(data.vocab) == 2_000 and data.num_features == 2_000
    assert data.train.shape[0] + data.valid.shape[0] == 11_268
    assert data.valid.shape[0] == 100
    assert data.test.shape[0] == 7_505
    train_words = data.document_lengths("train").sum() + data.document_lengths("valid").sum()
    assert train_words == 1_128_881
    assert data.document_lengths("test").sum() == 720_898
    assert data.train.nnz + data.valid.nnz == 729_545 and data.test.nnz == 477_078
    lengths = data.document_lengths("test")
    assert (lengths.min(), lengths.max()) == (1, 4_306)
    # vocab.new's counts equal each word's total count in train.feat (PROVENANCE §2).
    train_totals = np.asarray(data.train.sum(axis=0) + data.valid.sum(axis=0)).ravel()
    vocab_counts = [int(line.split()[1]) for line in
                    (real_data_root / "20news" / "vocab.new").read_text().splitlines()]
    np.testing.assert_array_equal(train_totals, vocab_counts)
