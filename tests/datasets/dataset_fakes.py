"""Small fake dataset files and a fake web for the dataset tests (imported by conftest.py).

The tests write their own fakes (.amat text, .mat via scipy.io.savemat, .feat, LYRL2004 token
files); `register_*` patch a dataset's registered resources to the fakes' sha256 and sizes,
built with the dataset's own resource builder so that file names and URLs stay the real ones.
The module has a name of its own so that it cannot be confused with another conftest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from datasets import _resources, mnist, newsgroups

# Captured before any fixture removes it: real-data tests use it explicitly.
REAL_MIRROR = os.environ.get(_resources.MIRROR_ENV)
ORIGINAL_OPEN_URL = _resources._open_url


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_network(url, timeout):
    raise AssertionError(f"a test tried to open {url}; install a FakeWeb instead")


# --- a fake web -------------------------------------------------------------------------------


class InterruptedStream:
    """A response that delivers the first `good` bytes of `payload`, then fails with `error`."""

    def __init__(self, payload: bytes, good: int, error: BaseException):
        self.payload, self.good, self.error, self.position = payload, good, error, 0
        self.delivered = 0

    def read(self, size: int = -1) -> bytes:
        if self.position >= self.good:
            raise self.error
        end = self.good if size < 0 else min(self.good, self.position + size)
        chunk = self.payload[self.position:end]
        self.position = end
        self.delivered += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None


@dataclass
class FakeWeb:
    """Replacement for `_open_url`: serves bytes (or a stream factory) per URL, records requests."""

    pages: dict = field(default_factory=dict)
    requested: list = field(default_factory=list)

    def __call__(self, url: str, timeout: float):
        self.requested.append(url)
        page = self.pages.get(url)
        if page is None:
            raise urllib.error.URLError("unreachable from the tests")
        if callable(page):
            return page()
        return io.BytesIO(page)


def write_mirror(root: Path, files: dict[str, bytes], gzipped: bool) -> Path:
    """A mirror directory holding `files` (relative path -> bytes), as-is or as NAME.gz."""
    for relative, payload in files.items():
        path = root / (relative + (".gz" if gzipped else ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(payload, compresslevel=1, mtime=0) if gzipped else payload)
    return root


# --- fake binarized MNIST ---------------------------------------------------------------------


def amat_bytes(images: np.ndarray) -> bytes:
    """Larochelle's layout: 0/1 separated by single spaces, one row a line."""
    return b"".join(b" ".join(b"%d" % value for value in row) + b"\n" for row in images)


def mat_bytes(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"X": images.astype(np.uint8)})
    return buffer.getvalue()


@dataclass
class FakeMnist:
    images: dict[str, np.ndarray]
    text: dict[str, bytes]
    mat: dict[str, bytes]

    def mirror_files(self, fmt: str = "text") -> dict[str, bytes]:
        payloads = self.text if fmt == "text" else self.mat
        return {f"binarized_mnist/binarized_mnist_{part}.amat": payload
                for part, payload in payloads.items()}


def make_fake_mnist(seed: int = 0, rows=(90, 30, 12)) -> FakeMnist:
    rng = np.random.default_rng(seed)
    images = {part: (rng.random((n, mnist.NUM_PIXELS)) < 0.3).astype(np.uint8)
              for part, n in zip(("train", "valid", "test"), rows, strict=True)}
    return FakeMnist(images, {p: amat_bytes(x) for p, x in images.items()},
                     {p: mat_bytes(x) for p, x in images.items()})


def register_fake_mnist(monkeypatch, fake: FakeMnist) -> None:
    resources = tuple(
        mnist._resource(part, sha256_of(fake.text[part]), len(fake.text[part]),
                        sha256_of(fake.mat[part]), len(fake.mat[part]))
        for part in ("train", "valid", "test"))
    monkeypatch.setattr(mnist, "RESOURCES", resources)


# --- fake 20 Newsgroups -----------------------------------------------------------------------


def feat_bytes(counts: np.ndarray, labels: np.ndarray) -> bytes:
    """NVDM's layout: `label idx:count ...` with 1-based indices, one document a line."""
    lines = []
    for label, row in zip(labels, counts, strict=True):
        pairs = " ".join(f"{index + 1}:{int(row[index])}" for index in np.flatnonzero(row))
        lines.append(f"{label} {pairs}".rstrip())
    return ("\n".join(lines) + "\n").encode()


def vocab_bytes(words, counts) -> bytes:
    return "".join(f"{word} {int(count)}\n" for word, count in zip(words, counts, strict=True)).encode()


@dataclass
class FakeFeatCorpus:
    vocab: tuple[str, ...]
    train: np.ndarray  # dense counts, (N, V)
    test: np.ndarray
    files: dict[str, bytes]  # train.feat, test.feat, vocab.new


def make_fake_feat_corpus(seed: int = 0, vocab_size: int = 30, train_docs: int = 130,
                          test_docs: int = 20) -> FakeFeatCorpus:
    rng = np.random.default_rng(seed)
    vocab = tuple(f"word{i:02d}" for i in range(vocab_size))

    def documents(n):
        counts = rng.poisson(0.4, size=(n, vocab_size))
        counts[np.arange(n), rng.integers(0, vocab_size, n)] += 1  # no empty documents
        return counts

    train, test = documents(train_docs), documents(test_docs)
    files = {
        "train.feat": feat_bytes(train, rng.integers(1, 21, train_docs)),
        "test.feat": feat_bytes(test, rng.integers(1, 21, test_docs)),
        "vocab.new": vocab_bytes(vocab, train.sum(axis=0)),
    }
    return FakeFeatCorpus(vocab, train, test, files)


def register_fake_20news(monkeypatch, fake: FakeFeatCorpus) -> None:
    resources = tuple(
        newsgroups._resource(name, sha256_of(fake.files[name]), len(fake.files[name]),
                             "vocab" if name == "vocab.new" else "feat")
        for name in ("train.feat", "test.feat", "vocab.new"))
    monkeypatch.setattr(newsgroups, "RESOURCES", resources)


# --- real data --------------------------------------------------------------------------------


# --- fake LYRL2004 token files ----------------------------------------------------------------


def token_file_bytes(documents: list[tuple[int, list[str]]], seed: int = 0) -> bytes:
    """LYRL2004 layout: `.I docid`, `.W`, token lines of varying length, a blank line between."""
    rng = np.random.default_rng(seed)
    out = []
    for docid, tokens in documents:
        out.append(f".I {docid}\n.W\n")
        start = 0
        while start < len(tokens):
            width = int(rng.integers(1, 12))
            out.append(" ".join(tokens[start:start + width]) + "\n")
            start += width
        out.append("\n")
    return "".join(out).encode()


def make_token_documents(seed: int, num_documents: int, first_docid: int = 2286,
                         num_stems: int = 120, max_length: int = 40) -> list[tuple[int, list[str]]]:
    """Documents over a Zipf-like stem distribution; every 10th uses only once-seen stems."""
    rng = np.random.default_rng(seed)
    stems = [f"st{i:03d}" for i in range(num_stems)]
    weights = 1.0 / np.arange(1, num_stems + 1)
    weights /= weights.sum()
    documents = []
    for number in range(num_documents):
        docid = first_docid + number
        if number % 10 == 9:
            # Stems seen once in the whole corpus never make the vocabulary: dropped document.
            tokens = [f"rare{seed}x{number}x{k}" for k in range(int(rng.integers(0, 4)))]
        else:
            length = int(rng.integers(1, max_length))
            tokens = [stems[i] for i in rng.choice(num_stems, size=length, p=weights)]
        documents.append((docid, tokens))
    return documents
