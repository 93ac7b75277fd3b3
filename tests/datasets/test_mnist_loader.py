"""Binarized MNIST on small fake files: parsing, both sources, splits, caching, corruption."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_fakes import (
    amat_bytes,
    make_fake_mnist,
    register_fake_mnist,
    sha256_of,
    write_mirror,
)

import datasets
from bench.errors import UserError
from datasets import _resources, mnist


def test_parse_amat_fast_path_matches_line_parser():
    images = (np.random.default_rng(1).random((7, 784)) < 0.5).astype(np.uint8)
    text = amat_bytes(images)
    np.testing.assert_array_equal(mnist.parse_amat(text), images)
    np.testing.assert_array_equal(mnist._parse_amat_lines(text, "fake"), images)


def test_parse_amat_accepts_other_whitespace():
    images = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.uint8)
    text = b"0 1 1 0 \r\n1  0 0 1\r\n\r\n"
    np.testing.assert_array_equal(mnist.parse_amat(text), images)


@pytest.mark.parametrize("text, problem", [
    (b"0 1 2 0\n1 0 0 1\n", "expected values 0 or 1"),
    (b"0 1 10 0\n1 0 0 1\n", "expected values 0 or 1"),
    (b"0 1 1 0\n1 0 0\n", "3 values, but line 1 has 4"),
    (b"\n\n", "holds no images"),
])
def test_parse_amat_rejects_malformed_text(text, problem):
    with pytest.raises(UserError, match=problem):
        mnist.parse_amat(text, "fake.amat")


@pytest.mark.parametrize("gzipped", [False, True], ids=["as-is", "gz"])
def test_standard_split_from_mirror(data_root, tmp_path, use_mirror, fake_mnist, gzipped):
    use_mirror(write_mirror(tmp_path / "mirror", fake_mnist.mirror_files(), gzipped))
    data = datasets.load("mnist", "standard")
    assert (data.name, data.split, data.kind, data.num_features, data.vocab) == (
        "mnist", "standard", "binary", 784, None)
    for part in ("train", "valid", "test"):
        assert data.part(part).dtype == np.uint8
        np.testing.assert_array_equal(data.part(part), fake_mnist.images[part])
    np.testing.assert_allclose(data.train_mean, fake_mnist.images["train"].mean(axis=0))
    assert data.train_mean.dtype == np.float64
    # The raw files stay in the data root after conversion, uncompressed and verified.
    for part in ("train", "valid", "test"):
        raw = data_root / "binarized_mnist" / f"binarized_mnist_{part}.amat"
        assert raw.read_bytes() == fake_mnist.text[part]
        assert data.provenance["raw_files"][raw.name] == sha256_of(fake_mnist.text[part])


def test_paper_split_holds_out_100_of_the_merged_training_images(data_root, tmp_path, use_mirror,
                                                                 fake_mnist):
    use_mirror(write_mirror(tmp_path / "mirror", fake_mnist.mirror_files(), True))
    data = datasets.load("mnist")  # 'paper' is the default
    assert data.split == "paper"
    merged = np.concatenate([fake_mnist.images["train"], fake_mnist.images["valid"]])
    assert data.train.shape == (len(merged) - 100, 784) and data.valid.shape == (100, 784)
    np.testing.assert_array_equal(data.test, fake_mnist.images["test"])
    # Together train and valid are exactly the merged set, each image once, in file order.
    kept, held = mnist.hold_out(len(merged), 100, mnist.PAPER_VALID_SEED)
    np.testing.assert_array_equal(data.train, merged[kept])
    np.testing.assert_array_equal(data.valid, merged[held])
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(merged)))
    # The seed is fixed: a second build from scratch picks the same images.
    again = mnist.make_split("paper", fake_mnist.images["train"], fake_mnist.images["valid"],
                             fake_mnist.images["test"])
    np.testing.assert_array_equal(again["valid"], data.valid)


def test_cache_named_by_version_and_raw_hashes(data_root, tmp_path, use_mirror, fake_mnist):
    use_mirror(write_mirror(tmp_path / "mirror", fake_mnist.mirror_files(), True))
    data = datasets.load("mnist")
    cache = data.provenance["cache_file"]
    assert cache.startswith(str(data_root / "processed" / "mnist-paper-v1-"))
    assert data.provenance["processing_version"] == "mnist-paper-v1"


def test_loading_from_a_valid_cache_does_not_rehash(data_root, tmp_path, use_mirror, fake_mnist,
                                                    monkeypatch):
    use_mirror(write_mirror(tmp_path / "mirror", fake_mnist.mirror_files(), True))
    first = datasets.load("mnist")

    def no_hashing(path):
        raise AssertionError(f"{path} re-hashed although its cache exists")

    monkeypatch.setattr(_resources, "sha256_file", no_hashing)
    monkeypatch.delenv("BENCH_DATA_MIRROR")
    second = datasets.load("mnist")
    np.testing.assert_array_equal(first.valid, second.valid)
    assert datasets.load("mnist", "standard").train.shape == fake_mnist.images["train"].shape


def test_changed_raw_file_gets_a_new_cache(data_root, tmp_path, use_mirror, monkeypatch):
    old = make_fake_mnist(seed=0)
    register_fake_mnist(monkeypatch, old)
    use_mirror(write_mirror(tmp_path / "mirror-old", old.mirror_files(), True))
    before = datasets.load("mnist", "standard")

    new = make_fake_mnist(seed=1)
    register_fake_mnist(monkeypatch, new)  # e.g. a corrected upstream file with a new checksum
    for part in ("train", "valid", "test"):
        (data_root / "binarized_mnist" / f"binarized_mnist_{part}.amat").unlink()
    use_mirror(write_mirror(tmp_path / "mirror-new", new.mirror_files(), True))
    after = datasets.load("mnist", "standard")

    assert after.provenance["cache_file"] != before.provenance["cache_file"]
    np.testing.assert_array_equal(after.train, new.images["train"])
    assert not np.array_equal(after.train, before.train)


def test_corrupt_raw_file_is_reported_when_the_cache_is_rebuilt(data_root, tmp_path, use_mirror,
                                                                fake_mnist):
    use_mirror(write_mirror(tmp_path / "mirror", fake_mnist.mirror_files(), True))
    datasets.load("mnist", "standard")
    for cache in (data_root / "processed").iterdir():
        cache.unlink()
    raw = data_root / "binarized_mnist" / "binarized_mnist_valid.amat"
    truncated = fake_mnist.text["valid"][:5000]
    raw.write_bytes(truncated)
    with pytest.raises(datasets.ChecksumMismatchError) as caught:
        datasets.load("mnist", "standard")
    message = str(caught.value)
    assert str(raw) in message
    assert sha256_of(fake_mnist.text["valid"]) in message and sha256_of(truncated) in message
    assert "python -m bench data fetch mnist" in message
    assert raw.read_bytes() == truncated  # never overwritten behind the user's back


def test_matlab_fallback_when_larochelle_is_unreachable(data_root, fake_web, fake_mnist):
    for resource in mnist.RESOURCES:
        _, matlab = resource.sources
        part = resource.name.split("_")[-1].split(".")[0]
        fake_web.pages[matlab.urls[0]] = fake_mnist.mat[part]
    data = datasets.load("mnist", "standard")
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(data.part(part), fake_mnist.images[part])
        assert (data_root / "binarized_mnist" / f"binarized_mnist_{part}.arm-gradient.mat").is_file()
    larochelle = [r.sources[0].urls[0] for r in mnist.RESOURCES]
    assert all(url in fake_web.requested for url in larochelle)
    assert all("cs.toronto.edu" in url for url in larochelle)


def test_matlab_copy_in_the_mirror_is_recognised_by_its_checksum(data_root, tmp_path, use_mirror,
                                                                 fake_mnist):
    # ARM-gradient's MAT files carry the upstream .amat names.
    use_mirror(write_mirror(tmp_path / "mirror", fake_mnist.mirror_files("mat"), False))
    data = datasets.load("mnist", "standard")
    np.testing.assert_array_equal(data.test, fake_mnist.images["test"])
    assert "binarized_mnist_test.arm-gradient.mat" in data.provenance["raw_files"]


def test_no_network_no_mirror_lists_both_sources(data_root, fake_web, fake_mnist):
    with pytest.raises(datasets.DataNotFoundError) as caught:
        datasets.load("mnist")
    message = str(caught.value)
    for resource in mnist.RESOURCES:
        for url in resource.urls:
            assert url in message
    assert "BENCH_DATA_MIRROR" in message


def test_unknown_split_lists_valid_ones():
    with pytest.raises(UserError, match=r"unknown split 'tiny'; valid splits: paper, standard"):
        datasets.load("mnist", "tiny")


def test_registered_checksums_match_provenance():
    # The sums in PROVENANCE.md §1 (text: TFDS; MAT: ARM-gradient's committed files).
    sums = {source.filename: source.sha256 for r in mnist.RESOURCES for source in r.sources}
    assert sums["binarized_mnist_train.amat"].startswith("ad693b29")
    assert sums["binarized_mnist_valid.amat"].startswith("1de3d397")
    assert sums["binarized_mnist_test.amat"].startswith("e6687bfe")
    assert sums["binarized_mnist_train.arm-gradient.mat"].startswith("79a0312c")
    assert [r.sources[0].size for r in mnist.RESOURCES] == [78_400_000, 15_680_000, 15_680_000]
