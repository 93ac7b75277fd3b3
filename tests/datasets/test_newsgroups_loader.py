"""20 Newsgroups (NVDM format) on small fake .feat files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from dataset_fakes import sha256_of, write_mirror

import datasets
from bench.errors import UserError
from datasets import newsgroups
from datasets._feat import read_feat, read_vocab


def mirror_of(fake) -> dict[str, bytes]:
    return {f"20news/{name}": payload for name, payload in fake.files.items()}


def test_load_from_mirror(data_root, tmp_path, use_mirror, fake_20news):
    use_mirror(write_mirror(tmp_path / "mirror", mirror_of(fake_20news), True))
    data = datasets.load("20news")
    assert (data.name, data.split, data.kind) == ("20news", "paper", "counts")
    assert data.vocab == fake_20news.vocab and data.num_features == len(fake_20news.vocab)
    for part in ("train", "valid", "test"):
        matrix = data.part(part)
        assert sp.isspmatrix_csr(matrix) and matrix.dtype == np.float32
        assert matrix.has_sorted_indices
    np.testing.assert_array_equal(data.test.toarray(), fake_20news.test)

    # 100 training documents held out with the fixed seed; the rest stay in file order.
    kept, held = newsgroups.hold_out(len(fake_20news.train), 100, newsgroups.VALID_SEED)
    assert data.valid.shape == (100, 30) and data.train.shape == (len(fake_20news.train) - 100, 30)
    np.testing.assert_array_equal(data.train.toarray(), fake_20news.train[kept])
    np.testing.assert_array_equal(data.valid.toarray(), fake_20news.train[held])
    np.testing.assert_allclose(data.train_mean, fake_20news.train[kept].mean(axis=0))

    np.testing.assert_array_equal(data.document_lengths("test"), fake_20news.test.sum(axis=1))
    assert data.document_lengths().dtype == np.int64
    assert data.provenance["raw_files"]["train.feat"] == sha256_of(fake_20news.files["train.feat"])
    assert (data_root / "20news" / "vocab.new").read_bytes() == fake_20news.files["vocab.new"]
    assert data.provenance["cache_file"].startswith(str(data_root / "processed" / "20news-paper-v1-"))


def test_download_from_primary_urls(data_root, fake_web, fake_20news):
    for resource in newsgroups.RESOURCES:
        fake_web.pages[resource.sources[0].urls[0]] = fake_20news.files[resource.name]
    data = datasets.load("20news")
    assert data.test.shape == fake_20news.test.shape
    assert all("ysmiao/nvdm/6330256c" in url for url in fake_web.requested)


def test_statistics_of_count_data(data_root, tmp_path, use_mirror, fake_20news):
    use_mirror(write_mirror(tmp_path / "mirror", mirror_of(fake_20news), False))
    stats = datasets.load("20news").statistics()["test"]
    lengths = fake_20news.test.sum(axis=1)
    assert stats == {
        "rows": 20, "features": 30, "total_words": int(lengths.sum()),
        "mean_length": pytest.approx(lengths.mean()), "min_length": int(lengths.min()),
        "max_length": int(lengths.max()), "nonzeros": int((fake_20news.test > 0).sum()),
        "vocab_size": 30,
    }


def test_document_lengths_only_for_counts():
    with pytest.raises(UserError, match="not documents"):
        datasets.load("synthetic").document_lengths()


def test_read_feat_sums_repeated_indices_and_reads_labels(tmp_path):
    path = tmp_path / "x.feat"
    path.write_bytes(b"3 1:2 4:1 1:5\n7 2:1\n")
    matrix, labels = read_feat(path, 4)
    np.testing.assert_array_equal(matrix.toarray(), [[7, 0, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(labels, [3, 7])


@pytest.mark.parametrize("line, problem", [
    (b"3 1:2 5:1\n", "out of range"),
    (b"3 0:2\n", "out of range"),
    (b"3 1:0\n", "must be positive"),
    (b"3 1:2:3\n", "document 1"),
    (b"3 1:2 7\n", "document 1"),
    (b"3:1 2:2\n", "document 1"),
    (b"3 1:x\n", "malformed"),
])
def test_read_feat_rejects_malformed_lines(tmp_path, line, problem):
    path = tmp_path / "bad.feat"
    path.write_bytes(line)
    with pytest.raises(UserError, match=problem):
        read_feat(path, 4)


def test_read_vocab_rejects_duplicates(tmp_path):
    path = tmp_path / "vocab.new"
    path.write_bytes(b"apple 3\nbanana 2\napple 1\n")
    with pytest.raises(UserError, match="more than once"):
        read_vocab(path)


def test_registered_checksums_match_provenance():
    sums = {r.name: (r.sources[0].sha256[:8], r.sources[0].size) for r in newsgroups.RESOURCES}
    assert sums == {"train.feat": ("55dfc0cc", 4_335_856), "test.feat": ("344eff7e", 2_830_914),
                    "vocab.new": ("afbe7314", 21_748)}
