"""Reference models fitted in closed form (bench/references.py): the unigram sanity row of
Table 3, checked against a hand computation, and its place in a suite and a report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse

import datasets
from bench import references, suites
from bench.errors import UserError


def tiny_documents() -> datasets.Data:
    """Three words. Train counts 3, 1, 0 (so add-one frequencies 4/7, 2/7, 1/7)."""
    train = scipy.sparse.csr_matrix(np.array([[2, 1, 0], [1, 0, 0]], dtype=np.float32))
    valid = scipy.sparse.csr_matrix(np.array([[1, 0, 0]], dtype=np.float32))
    test = scipy.sparse.csr_matrix(np.array([[0, 1, 1], [2, 0, 0]], dtype=np.float32))
    return datasets.Data("tiny", "paper", "counts", 3, train, valid, test,
                         np.asarray(train.mean(0)).ravel())


def test_unigram_matches_a_hand_computation():
    record = references.reference_record("unigram", tiny_documents())
    test = next(m for m in record["metrics"] if m["split"] == "test")
    first = math.log(2 / 7) + math.log(1 / 7)    # words 2 and 3, length 2
    second = 2 * math.log(4 / 7)                   # word 1 twice, length 2
    assert test["mean"] == pytest.approx((first + second) / 2)
    assert test["nll"] == pytest.approx(-(first + second) / 2)
    assert test["perplexity"] == pytest.approx(math.exp(-(first / 2 + second / 2) / 2))
    assert (test["bound"], test["k"], test["num_examples"]) == ("exact", None, 2)
    assert record["status"] == "complete" and record["config"]["reference"]["name"] == "unigram"


def test_unigram_needs_documents():
    data = tiny_documents()
    binary = datasets.Data("pixels", "paper", "binary", 3, data.train, data.valid, data.test,
                           data.train_mean)
    with pytest.raises(UserError, match="needs a document dataset"):
        references.reference_record("unigram", binary)


def test_table3_has_the_unigram_rows():
    suite = suites.load("table3")
    assert {(r.name, r.dataset, r.label) for r in suite.references} == {
        ("unigram", "20news", "Unigram"), ("unigram", "rcv1", "Unigram")}


def test_an_unknown_reference_is_a_user_error_listing_the_valid_ones(tmp_path):
    text = suites.load("table3").path.read_text().replace('name = "unigram"', 'name = "bigram"', 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="unknown reference 'bigram'; valid: unigram"):
        suites.load(path)
