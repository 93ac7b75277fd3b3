"""RCV1-v2: the token-file recipe on tiny self-written LYRL2004 files, and the ready-made route.

The real token files are not available here; these tests check the recipe against a plain
in-memory reference implementation, with small vocabulary and test sizes.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter

import numpy as np
import pytest
from dataset_fakes import (
    make_fake_feat_corpus,
    make_token_documents,
    sha256_of,
    token_file_bytes,
    write_mirror,
)

import datasets
from bench.errors import UserError
from datasets import rcv1

TOKEN_NAMES = [name for name, _, _ in rcv1._TOKEN_FILES]


def write_token_files(directory, docs_per_file=30):
    """Five small token files named like the real ones; returns (paths, all documents in order)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, documents = [], []
    for index, name in enumerate(TOKEN_NAMES):
        docs = make_token_documents(seed=index, num_documents=docs_per_file,
                                    first_docid=10_000 * (index + 1))
        path = directory / name
        path.write_bytes(token_file_bytes(docs, seed=index))
        paths.append(path)
        documents.extend(docs)
    return paths, documents


def reference_recipe(documents, vocab_size, test_size, min_count, seed):
    """The recipe written the obvious way, holding everything in memory."""
    counts = Counter(token for _, tokens in documents for token in tokens)
    ranked = sorted((item for item in counts.items() if item[1] >= min_count),
                    key=lambda item: (-item[1], item[0]))
    vocab = [token for token, _ in ranked[:vocab_size]]
    column = {token: i for i, token in enumerate(vocab)}
    test_positions = set(np.random.default_rng(seed).choice(len(documents), size=test_size,
                                                            replace=False).tolist())
    train_rows, test_rows = [], []
    for position, (docid, tokens) in enumerate(documents):
        row = np.zeros(len(vocab))
        for token in tokens:
            if token in column:
                row[column[token]] += 1
        if row.sum() > 0:
            (test_rows if position in test_positions else train_rows).append((docid, row))
    return vocab, train_rows, test_rows


@pytest.mark.parametrize("batch_tokens", [1 << 20, 7], ids=["one-batch", "many-batches"])
def test_recipe_matches_reference(tmp_path, monkeypatch, batch_tokens):
    monkeypatch.setattr(rcv1._CsrRows, "BATCH_TOKENS", batch_tokens)
    paths, documents = write_token_files(tmp_path)
    corpus = rcv1.build_from_tokens(paths, vocab_size=50, test_size=5, min_count=3, test_seed=7)
    vocab, train_rows, test_rows = reference_recipe(documents, 50, 5, 3, 7)

    assert corpus.vocab == tuple(vocab) and len(vocab) == 50
    assert corpus.num_documents == len(documents) == 150
    assert corpus.num_dropped == len(documents) - len(train_rows) - len(test_rows) > 0
    assert corpus.test.shape == (len(test_rows), 50) and 0 < len(test_rows) <= 5
    np.testing.assert_array_equal(corpus.train.toarray(), [row for _, row in train_rows])
    np.testing.assert_array_equal(corpus.test.toarray(), [row for _, row in test_rows])
    np.testing.assert_array_equal(corpus.train_docids, [docid for docid, _ in train_rows])
    np.testing.assert_array_equal(corpus.test_docids, [docid for docid, _ in test_rows])
    assert corpus.train.dtype == np.float32 and corpus.train.has_sorted_indices


def test_vocabulary_keeps_only_stems_counted_more_than_twice(tmp_path):
    paths, documents = write_token_files(tmp_path)
    corpus = rcv1.build_from_tokens(paths, vocab_size=10_000, test_size=5)
    counts = Counter(token for _, tokens in documents for token in tokens)
    assert set(corpus.vocab) == {token for token, count in counts.items() if count > 2}
    assert len(corpus.vocab) < len(counts)  # the cut removed something


def test_test_set_is_seeded(tmp_path):
    paths, _ = write_token_files(tmp_path)
    first = rcv1.build_from_tokens(paths, vocab_size=50, test_size=5, test_seed=0)
    again = rcv1.build_from_tokens(paths, vocab_size=50, test_size=5, test_seed=0)
    other = rcv1.build_from_tokens(paths, vocab_size=50, test_size=5, test_seed=1)
    np.testing.assert_array_equal(first.test_docids, again.test_docids)
    assert not np.array_equal(first.test_docids, other.test_docids)


def test_token_records_parse_across_lines(tmp_path):
    path = tmp_path / "t.dat"
    path.write_bytes(b".I 5\n.W\nalpha beta\nbeta\n\n.I 9\n.W\n\n.I 12\n.W\ngamma\n")
    assert list(rcv1.iter_token_records(path)) == [
        (5, [b"alpha", b"beta", b"beta"]), (9, []), (12, [b"gamma"])]


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 7, 64, 1000])
def test_token_records_do_not_depend_on_read_blocks(tmp_path, monkeypatch, block_bytes):
    # Blocks that cut records, and the '\n.I ' marks themselves, anywhere.
    documents = make_token_documents(seed=3, num_documents=12)
    path = tmp_path / "t.dat"
    path.write_bytes(token_file_bytes(documents))
    monkeypatch.setattr(rcv1, "READ_BLOCK_BYTES", block_bytes)
    expected = [(docid, [token.encode() for token in tokens]) for docid, tokens in documents]
    assert list(rcv1.iter_token_records(path)) == expected


@pytest.mark.parametrize("text, problem", [
    (b"alpha beta\n.I 5\n.W\nalpha\n", "text before the first '.I <docid>' record"),
    (b".I five\n.W\nalpha\n", "expected '.I <docid>'"),
    (b".I 5\nalpha\n", "has no '.W' line"),
])
def test_malformed_token_file(tmp_path, text, problem):
    path = tmp_path / "bad.dat"
    path.write_bytes(text)
    with pytest.raises(UserError, match=problem):
        rcv1.build_from_tokens([path], vocab_size=5, test_size=1)


def test_test_size_must_leave_training_documents(tmp_path):
    paths, _ = write_token_files(tmp_path, docs_per_file=2)
    with pytest.raises(UserError, match="cannot draw 10 test documents from 10"):
        rcv1.build_from_tokens(paths, vocab_size=5, test_size=10, min_count=1)


def test_recipe_streams_instead_of_holding_all_tokens(tmp_path, monkeypatch):
    # 600 documents of 250 tokens over 80 stems (1.3 MB of text): holding every token as a
    # bytes object takes about 7.5 MB (measured with tracemalloc); streaming needs one read
    # block, one batch of column ids, the stem counts and the CSR rows (about 0.7 MB). Read
    # blocks (8 MB) and batches (2^20 tokens) are shrunk to stay well below this corpus's size.
    monkeypatch.setattr(rcv1, "READ_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(rcv1._CsrRows, "BATCH_TOKENS", 4096)
    rng = np.random.default_rng(0)
    stems = [f"stem{i:04d}" for i in range(80)]
    documents = [(i, [stems[j] for j in rng.integers(0, 80, 250)]) for i in range(600)]
    path = tmp_path / "big.dat"
    path.write_bytes(token_file_bytes(documents))
    tracemalloc.start()
    try:
        corpus = rcv1.build_from_tokens([path], vocab_size=300, test_size=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert corpus.num_documents == 600
    assert peak < 2_500_000, f"peak {peak:,} bytes: the recipe seems to hold the whole corpus"


# --- the registered dataset -------------------------------------------------------------------


@pytest.fixture
def tiny_rcv1_recipe(monkeypatch):
    """The registered recipe with a tiny vocabulary and test set, for tiny token files."""
    monkeypatch.setattr(rcv1, "VOCAB_SIZE", 50)
    monkeypatch.setattr(rcv1, "TEST_SIZE", 5)


def register_token_files(monkeypatch, paths):
    resources = tuple(rcv1._resource(path.name, path.stat().st_size, sha256_of(path.read_bytes()))
                      for path in paths)
    monkeypatch.setattr(rcv1, "RESOURCES", resources)


def test_load_builds_from_token_files_in_the_mirror(data_root, tmp_path, use_mirror, monkeypatch,
                                                    tiny_rcv1_recipe):
    paths, documents = write_token_files(tmp_path / "upstream", docs_per_file=40)
    register_token_files(monkeypatch, paths)
    use_mirror(write_mirror(tmp_path / "mirror",
                            {f"rcv1/{p.name}": p.read_bytes() for p in paths}, gzipped=True))
    data = datasets.load("rcv1")
    vocab, train_rows, test_rows = reference_recipe(documents, 50, 5, rcv1.MIN_COUNT,
                                                    rcv1.TEST_SEED)
    assert data.vocab == tuple(vocab) and data.num_features == 50
    assert data.valid.shape[0] == 100
    assert data.train.shape[0] + data.valid.shape[0] == len(train_rows)
    np.testing.assert_array_equal(data.test.toarray(), [row for _, row in test_rows])
    assert (data_root / "rcv1" / TOKEN_NAMES[0]).read_bytes() == paths[0].read_bytes()
    assert data.provenance["cache_file"].startswith(
        str(data_root / "processed" / "rcv1-paper-tokens-v1-"))
    assert set(data.provenance["raw_files"]) == set(TOKEN_NAMES)

    # A different recipe parameter is a different cache.
    monkeypatch.setattr(rcv1, "VOCAB_SIZE", 40)
    smaller = datasets.load("rcv1")
    assert smaller.num_features == 40
    assert smaller.provenance["cache_file"] != data.provenance["cache_file"]


def test_ready_made_files_in_the_data_root(data_root):
    fake = make_fake_feat_corpus(seed=3)
    folder = data_root / "rcv1"
    folder.mkdir(parents=True)
    for name, payload in fake.files.items():
        (folder / name).write_bytes(payload)
    data = datasets.load("rcv1")
    assert data.vocab == fake.vocab
    np.testing.assert_array_equal(data.test.toarray(), fake.test)
    assert data.train.shape[0] + data.valid.shape[0] == len(fake.train)
    # No published checksum: the sha256 found is recorded.
    assert data.provenance["raw_files"] == {name: sha256_of(payload)
                                            for name, payload in fake.files.items()}
    assert "rcv1-paper-feat-v1-" in data.provenance["cache_file"]
    checks = datasets.check_files("rcv1")
    assert [c.status for c in checks] == ["UNCHECKED"] * 3
    assert checks[0].actual_sha256 == sha256_of(fake.files["train.feat"])


def test_ready_made_files_in_the_mirror_are_copied(data_root, tmp_path, use_mirror):
    fake = make_fake_feat_corpus(seed=4)
    use_mirror(write_mirror(tmp_path / "mirror",
                            {f"rcv1/{name}": payload for name, payload in fake.files.items()},
                            gzipped=True))
    data = datasets.load("rcv1")
    np.testing.assert_array_equal(data.test.toarray(), fake.test)
    assert (data_root / "rcv1" / "train.feat").read_bytes() == fake.files["train.feat"]


def test_part_of_a_ready_made_copy_is_an_error(data_root):
    folder = data_root / "rcv1"
    folder.mkdir(parents=True)
    (folder / "train.feat").write_bytes(b"1 1:1\n")
    with pytest.raises(UserError, match="not test.feat, vocab.new"):
        datasets.load("rcv1")


def test_no_data_anywhere_explains_both_routes(data_root, fake_web):
    with pytest.raises(datasets.DataNotFoundError) as caught:
        datasets.load("rcv1")
    message = str(caught.value)
    for resource in rcv1.RESOURCES:
        for url in resource.urls:
            assert url in message
    assert "BENCH_DATA_MIRROR" in message
    assert "train.feat, test.feat, vocab.new" in message and str(data_root / "rcv1") in message


def test_registered_recipe_is_nvdms():
    assert (rcv1.VOCAB_SIZE, rcv1.TEST_SIZE, rcv1.MIN_COUNT, rcv1.VALID_SIZE) == (
        10_000, 10_000, 3, 100)
    assert [r.name for r in rcv1.RESOURCES] == TOKEN_NAMES == [
        "lyrl2004_tokens_train.dat", *(f"lyrl2004_tokens_test_pt{i}.dat" for i in range(4))]
    assert sum(r.sources[0].size for r in rcv1.RESOURCES) == 626_175_590
