"""The `Data` record every loader returns, and the helpers the loaders share.

Two kinds of data:
- 'binary': numpy uint8 arrays of shape (N, D) holding 0/1 (MNIST, synthetic);
- 'counts': scipy.sparse.csr_matrix of float32 word counts, shape (N, V) (20news, rcv1).

Processed caches are .npz files written atomically; binary images are stored bit-packed
(np.packbits, 8 pixels a byte) and compressed, count matrices as their CSR arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from bench.errors import UserError
from datasets._resources import write_npz_atomic

BINARY = "binary"
COUNTS = "counts"


@dataclass(frozen=True, eq=False)
class Data:
    """One dataset under one split.

    train, valid, test: uint8 (N, D) arrays for kind 'binary'; float32 CSR count matrices
    (N, V) for kind 'counts'. train_mean: float64 (D,), the mean of the train rows (used e.g.
    to initialise output biases). vocab: the words of the columns for 'counts', else None.
    provenance: raw file names and their sha256, the processing version, the cache file.
    """

    name: str
    split: str
    kind: str
    num_features: int
    train: object
    valid: object
    test: object
    train_mean: np.ndarray
    vocab: tuple[str, ...] | None = None
    provenance: dict = field(default_factory=dict)

    PARTS: ClassVar[tuple[str, ...]] = ("train", "valid", "test")

    def part(self, which: str):
        if which not in self.PARTS:
            raise UserError(f"unknown part {which!r}; valid parts: {', '.join(self.PARTS)}")
        return getattr(self, which)

    def document_lengths(self, which: str = "train") -> np.ndarray:
        """Words per document (row sums of the count matrix), as int64."""
        if self.kind != COUNTS:
            raise UserError(f"{self.name} holds {self.kind} data, not documents; "
                            f"document lengths exist only for count data")
        return np.asarray(self.part(which).sum(axis=1)).ravel().round().astype(np.int64)

    def statistics(self) -> dict:
        """Per part: rows and features, plus mean pixel (binary) or document-length statistics."""
        stats: dict = {}
        for which in self.PARTS:
            matrix = self.part(which)
            entry: dict = {"rows": int(matrix.shape[0]), "features": int(matrix.shape[1])}
            if self.kind == BINARY:
                entry["mean_pixel"] = float(matrix.mean(dtype=np.float64)) if matrix.size else 0.0
            else:
                lengths = self.document_lengths(which)
                entry.update({
                    "total_words": int(lengths.sum()),
                    "mean_length": float(lengths.mean()) if lengths.size else 0.0,
                    "min_length": int(lengths.min()) if lengths.size else 0,
                    "max_length": int(lengths.max()) if lengths.size else 0,
                    "nonzeros": int(matrix.nnz),
                    "vocab_size": len(self.vocab) if self.vocab is not None else int(matrix.shape[1]),
                })
            stats[which] = entry
        return stats


def hold_out(num_rows: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): `count` rows chosen at random with a fixed seed, both sorted.

    Sorting keeps the original row order inside each part, so a part does not depend on the
    order in which numpy happens to return the random choice.
    """
    if not 0 < count < num_rows:
        raise UserError(f"cannot hold out {count} of {num_rows} rows for validation")
    held = np.sort(np.random.default_rng(seed).choice(num_rows, size=count, replace=False))
    kept = np.setdiff1d(np.arange(num_rows), held, assume_unique=True)
    return kept, held


def column_mean(matrix) -> np.ndarray:
    """float64 mean of the rows of a dense array or a CSR matrix."""
    if sp.issparse(matrix):
        csr = matrix.tocsr()
        totals = np.bincount(csr.indices, weights=csr.data.astype(np.float64),
                             minlength=csr.shape[1])
        return totals / max(csr.shape[0], 1)
    return np.asarray(matrix).mean(axis=0, dtype=np.float64)


# --- binary caches ----------------------------------------------------------------------------


def save_binary_cache(path: Path, parts: dict[str, np.ndarray], extra: dict | None = None) -> None:
    arrays = {}
    for which, images in parts.items():
        arrays[f"{which}_bits"] = np.packbits(images.astype(np.uint8), axis=1)
        arrays[f"{which}_shape"] = np.asarray(images.shape, dtype=np.int64)
    arrays.update(extra or {})
    write_npz_atomic(path, arrays)


def load_binary_cache(path: Path, parts: tuple[str, ...] = Data.PARTS) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        out = {}
        for which in parts:
            rows, cols = (int(v) for v in archive[f"{which}_shape"])
            out[which] = np.unpackbits(archive[f"{which}_bits"], axis=1, count=cols).reshape(rows, cols)
        return out


# --- count caches -----------------------------------------------------------------------------


def save_counts_cache(path: Path, parts: dict[str, sp.csr_matrix], vocab: tuple[str, ...],
                      extra: dict | None = None) -> None:
    arrays = {}
    for which, matrix in parts.items():
        arrays[f"{which}_data"] = matrix.data.astype(np.float32)
        arrays[f"{which}_indices"] = matrix.indices
        arrays[f"{which}_indptr"] = matrix.indptr
        arrays[f"{which}_shape"] = np.asarray(matrix.shape, dtype=np.int64)
    arrays["vocab"] = np.asarray(vocab, dtype=str)
    arrays.update(extra or {})
    write_npz_atomic(path, arrays)


def load_counts_cache(path: Path, parts: tuple[str, ...] = Data.PARTS
                      ) -> tuple[dict[str, sp.csr_matrix], tuple[str, ...]]:
    with np.load(path, allow_pickle=False) as archive:
        out = {}
        for which in parts:
            shape = tuple(int(v) for v in archive[f"{which}_shape"])
            out[which] = sp.csr_matrix(
                (archive[f"{which}_data"], archive[f"{which}_indices"], archive[f"{which}_indptr"]),
                shape=shape)
        vocab = tuple(str(word) for word in archive["vocab"])
    return out, vocab


def rows(matrix: sp.csr_matrix, index: np.ndarray) -> sp.csr_matrix:
    """Rows of a CSR matrix, as a CSR matrix with sorted indices."""
    picked = matrix[index]
    picked.sort_indices()
    return picked
