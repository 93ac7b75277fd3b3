"""Reading NVDM's document format (Miao et al. 2016), shared by 20news and ready-made RCV1.

`*.feat`: one document a line, `label idx:count idx:count ...`, with `idx` 1-based into the
vocabulary. `vocab.new`: one word a line, `word count` (the count is ignored here).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.errors import UserError


def read_vocab(path: Path) -> tuple[str, ...]:
    words = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            words.append(fields[0].decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}, line {number}: not UTF-8 text") from None
    if not words:
        raise UserError(f"{path} holds no words")
    if len(set(words)) != len(words):
        raise UserError(f"{path} lists some words more than once")
    return tuple(words)


def read_feat(path: Path, vocab_size: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """(counts, labels): a float32 CSR matrix (documents x vocab_size) and int64 labels.

    Numbers are parsed by numpy in one pass over the whole file; the per-line counts of
    fields and colons check the layout, so a malformed line is reported rather than misread.
    """
    data = path.read_bytes()
    lines = [line for line in data.split(b"\n") if line.strip()]
    pairs_per_line = np.fromiter((line.count(b":") for line in lines), dtype=np.int64,
                                 count=len(lines))
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if b":" in fields[0] or len(fields) != 1 + line.count(b":"):
            raise UserError(f"{path}, document {number}: expected 'label idx:count ...', "
                            f"got {line[:60]!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            numbers = np.fromstring(data.replace(b":", b" "), dtype=np.int64, sep=" ")
        except ValueError:
            numbers = np.empty(0, dtype=np.int64)
    expected = len(lines) + 2 * int(pairs_per_line.sum())
    if numbers.size != expected:
        raise UserError(f"{path}: expected {expected:,} integers in 'label idx:count' fields, "
                        f"read {numbers.size:,}; the file is malformed")

    # Each line contributes [label, idx, count, idx, count, ...]; pick the pieces by offsets.
    starts = np.concatenate([[0], np.cumsum(1 + 2 * pairs_per_line)[:-1]])
    labels = numbers[starts]
    is_label = np.zeros(numbers.size, dtype=bool)
    is_label[starts] = True
    pair_values = numbers[~is_label]
    indices = pair_values[0::2] - 1
    counts = pair_values[1::2]
    if indices.size and (indices.min() < 0 or indices.max() >= vocab_size):
        raise UserError(f"{path}: word index out of range 1..{vocab_size} (the vocabulary's size)")
    if counts.size and counts.min() <= 0:
        raise UserError(f"{path}: word counts must be positive")
    indptr = np.concatenate([[0], np.cumsum(pairs_per_line)])
    matrix = sp.csr_matrix((counts.astype(np.float32), indices.astype(np.int32), indptr),
                           shape=(len(lines), vocab_size))
    # NVDM's files never repeat an index within a document, but adding repeats is the
    # right reading of a bag of words if some file does.
    matrix.sum_duplicates()
    return matrix, labels
