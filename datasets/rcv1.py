"""Reuters RCV1-v2 with a 10,000-word vocabulary, in the manner of NVDM (Miao et al. 2016).

No preprocessed copy is public (NVDM's is on Google Drive only; see shared/data/PROVENANCE.md
§3), so the count matrices are built here from the LYRL2004 token files (Lewis et al. 2004,
appendix 12): `lyrl2004_tokens_train.dat` and `lyrl2004_tokens_test_pt{0,1,2,3}.dat`,
804,414 documents together. Their sizes and sha256 sums come from Git LFS pointers in
`safinal/text-embedding-clustering` and are unverified against the real files.

Token-file format: a record per document, `.I <docid>`, then `.W`, then lines of
space-separated stemmed tokens, with a blank line between records.

Recipe (NVDM's preprocessing as described by its authors, re-implemented; `build_from_tokens`):
1. the five files are read in the order of `RESOURCES`, as one corpus;
2. the vocabulary is the `vocab_size` (10,000) most frequent stems over the whole corpus among
   those counted more than twice; ties are broken alphabetically, columns are in order of
   decreasing frequency;
3. `test_size` (10,000) documents are drawn without replacement with
   `numpy.random.default_rng(TEST_SEED)`; NVDM's draw was unseeded, so its exact split cannot
   be rebuilt and ours differs from it;
4. documents with no in-vocabulary word are dropped (after the draw, so the test set may end
   up slightly smaller than `test_size`);
5. (split `paper`, NVIL §4.1) `VALID_SIZE` (100) training documents are held out for
   validation with `numpy.random.default_rng(VALID_SEED)`.
The files are streamed twice, once to count stems and once to build the CSR rows, holding one
document's tokens at a time, so the full corpus needs well under 4 GiB of memory.

Alternatively, a ready-made copy in NVDM's `.feat` format (`train.feat`, `test.feat`,
`vocab.new`) placed in `<data root>/rcv1/` or in the mirror's `rcv1/` is used as is (only step
5 applies). No checksum is known for it: the sha256 it has is recorded in the provenance.

Processed caches: `processed/rcv1-paper-tokens-v1-<hash>.npz` (from token files; the hash also
covers the recipe's parameters) or `processed/rcv1-paper-feat-v1-<hash>.npz` (ready-made).
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.errors import UserError
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
from datasets.newsgroups import read_feat_directory

NAME = "rcv1"
KIND = COUNTS
SPLITS = ("paper",)
FETCHABLE = True
VOCAB_SIZE = 10_000
TEST_SIZE = 10_000
MIN_COUNT = 3  # "count > 2"
TEST_SEED = 0
VALID_SIZE = 100
VALID_SEED = 0
TOKENS_VERSION = "tokens-v1"
FEAT_VERSION = "feat-v1"

FOLDER = "rcv1"
READY_MADE_FILES = ("train.feat", "test.feat", "vocab.new")
_LYRL_MIRRORS = (
    "http://www.ai.mit.edu/projects/jmlr/papers/volume5/lewis04a/a12-token-files",
    "http://jmlr.csail.mit.edu/papers/volume5/lewis04a/a12-token-files",
)

# (file, uncompressed size, sha256), from the LFS pointers listed in PROVENANCE.md §3.
_TOKEN_FILES = (
    ("lyrl2004_tokens_train.dat", 17_590_105,
     "7671361f75776fd1e6503ea73e78bcd4179bb332c1a8297ebed102f4eb1b31c0"),
    ("lyrl2004_tokens_test_pt0.dat", 153_955_383,
     "b8c319839c75def02becf5afea42d9007cd3b9dd0b9f7ec191d627cb64e165a9"),
    ("lyrl2004_tokens_test_pt1.dat", 156_091_348,
     "a6a9244e93449985aec0371c1f0d9e73a9f5a2cb651859474efd213550e733b4"),
    ("lyrl2004_tokens_test_pt2.dat", 153_363_982,
     "d1a07c68a636bb5638552d3facb13a6ff58115653b55d8318bca1252a9c43193"),
    ("lyrl2004_tokens_test_pt3.dat", 145_174_772,
     "9a70be1a2ec0ecd554fa97eacc87cf99d086843495683289d12f99911b00a14e"),
)



def _resource(name: str, size: int, sha256: str) -> res.Resource:
    urls = tuple(f"{base}/{name}.gz" for base in _LYRL_MIRRORS)
    return res.Resource(name, FOLDER, (res.Source(name, urls, sha256, size, "tokens"),))


# Order matters: it is the order of the corpus, hence of the seeded test-set draw.
RESOURCES: tuple[res.Resource, ...] = tuple(_resource(*row) for row in _TOKEN_FILES)


# --- the recipe -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TokenCorpus:
    """The count matrices built from token files (before the validation hold-out)."""

    train: sp.csr_matrix
    test: sp.csr_matrix
    vocab: tuple[str, ...]
    train_docids: np.ndarray
    test_docids: np.ndarray
    num_documents: int
    num_dropped: int


READ_BLOCK_BYTES = 8 << 20
RECORD_MARK = b"\n.I "


def _parse_record(record: bytes, path: Path) -> tuple[int, list[bytes]]:
    """The text after a record's '.I ' (docid, newline, '.W', token lines) -> (docid, tokens)."""
    head, _, body = record.partition(b"\n")
    marker, _, text = body.partition(b"\n")
    try:
        docid = int(head)
    except ValueError:
        raise UserError(f"{path}: expected '.I <docid>', got {b'.I ' + head[:40]!r}") from None
    if marker.strip() != b".W":
        raise UserError(f"{path}: record .I {docid} has no '.W' line; not a LYRL2004 token file")
    return docid, text.split()


def iter_token_records(path: Path, on_bytes: Callable[[int], None] | None = None
                       ) -> Iterator[tuple[int, list[bytes]]]:
    """(docid, tokens) for each record of a LYRL2004 token file, one document at a time.

    The file is read in blocks of a few MB and cut at record starts (RECORD_MARK), so memory
    stays constant whatever the file's size, and Python loops over documents, not lines.
    """
    tail = b"\n"  # a leading newline, so that the first record too starts with RECORD_MARK
    at_start = True
    with open(path, "rb") as handle:
        while True:
            block = handle.read(READ_BLOCK_BYTES)
            pieces = (tail + block).split(RECORD_MARK)
            if block:
                tail = pieces.pop()  # the last record may continue in the next block
                if not pieces:
                    continue
            head, complete = pieces[0], pieces[1:]
            if at_start:
                if head.strip():
                    raise UserError(f"{path}: text before the first '.I <docid>' record; not a "
                                    f"LYRL2004 token file")
                at_start = False
            else:
                complete.insert(0, head)  # the record carried over from the previous block
            for record in complete:
                if on_bytes is not None:
                    on_bytes(len(record) + len(RECORD_MARK))
                yield _parse_record(record, path)
            if not block:
                return


def _progress(paths: Sequence[Path], desc: str):
    from tqdm import tqdm

    total = sum(path.stat().st_size for path in paths)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False, disable=None)


def choose_vocabulary(counts: Counter, vocab_size: int, min_count: int) -> list[bytes]:
    """The `vocab_size` most frequent tokens counted at least `min_count` times; ties alphabetical."""
    eligible = ((token, count) for token, count in counts.items() if count >= min_count)
    return [token for token, _ in
            heapq.nsmallest(vocab_size, eligible, key=lambda item: (-item[1], item[0]))]


class _CsrRows:
    """Rows of a count matrix, added a document at a time into compact typed arrays.

    Documents are buffered as lists of column ids and counted in batches with one np.unique
    over (document, column) keys, which is much faster than a call per document.
    """

    BATCH_TOKENS = 1 << 20

    def __init__(self, num_columns: int) -> None:
        self.num_columns = num_columns
        self.indices = array("i")
        self.counts = array("f")
        self.indptr = array("q", [0])
        self.docids = array("q")
        self._columns = array("i")
        self._lengths = array("q")

    def add(self, docid: int, columns: list[int]) -> None:
        """A document given by the column of each of its in-vocabulary tokens (not empty)."""
        self._columns.extend(columns)
        self._lengths.append(len(columns))
        self.docids.append(docid)
        if len(self._columns) >= self.BATCH_TOKENS:
            self._flush()

    def _flush(self) -> None:
        if not self._lengths:
            return
        lengths = np.frombuffer(self._lengths, dtype=np.int64)
        document = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        keys = document * self.num_columns + np.frombuffer(self._columns, dtype=np.int32)
        unique, counts = np.unique(keys, return_counts=True)  # sorted: by document, then column
        per_document = np.bincount(unique // self.num_columns, minlength=lengths.size)
        self.indices.frombytes((unique % self.num_columns).astype(np.int32).tobytes())
        self.counts.frombytes(counts.astype(np.float32).tobytes())
        self.indptr.frombytes((self.indptr[-1] + np.cumsum(per_document)).astype(np.int64).tobytes())
        self._columns, self._lengths = array("i"), array("q")

    def matrix(self) -> sp.csr_matrix:
        self._flush()
        index_dtype = np.int32 if len(self.indices) < np.iinfo(np.int32).max else np.int64
        return sp.csr_matrix(
            (np.frombuffer(self.counts, dtype=np.float32),
             np.frombuffer(self.indices, dtype=np.int32).astype(index_dtype, copy=False),
             np.frombuffer(self.indptr, dtype=np.int64).astype(index_dtype)),
            shape=(len(self.docids), self.num_columns))


def build_from_tokens(token_paths: Sequence[Path], vocab_size: int = VOCAB_SIZE,
                      test_size: int = TEST_SIZE, min_count: int = MIN_COUNT,
                      test_seed: int = TEST_SEED) -> TokenCorpus:
    """Run the recipe (steps 1-4 of the module docstring) over LYRL2004 token files."""
    paths = [Path(path) for path in token_paths]

    stem_counts: Counter = Counter()
    num_documents = 0
    with _progress(paths, "rcv1 pass 1/2: counting stems") as bar:
        for path in paths:
            for _, tokens in iter_token_records(path, bar.update):
                stem_counts.update(tokens)
                num_documents += 1
    vocab = choose_vocabulary(stem_counts, vocab_size, min_count)
    del stem_counts
    if not vocab:
        raise UserError(f"no stem occurs {min_count} times or more in {', '.join(map(str, paths))}")
    if not 0 < test_size < num_documents:
        raise UserError(f"cannot draw {test_size:,} test documents from {num_documents:,}")

    is_test = np.zeros(num_documents, dtype=bool)
    is_test[np.random.default_rng(test_seed).choice(num_documents, size=test_size, replace=False)] = True
    column_of = {token: column for column, token in enumerate(vocab)}.get

    train, test = _CsrRows(len(vocab)), _CsrRows(len(vocab))
    position = 0
    dropped = 0
    with _progress(paths, "rcv1 pass 2/2: building count rows") as bar:
        for path in paths:
            for docid, tokens in iter_token_records(path, bar.update):
                columns = [c for c in map(column_of, tokens) if c is not None]
                if columns:
                    (test if is_test[position] else train).add(docid, columns)
                else:
                    dropped += 1
                position += 1
    if position != num_documents:
        raise UserError(f"the token files changed while being read ({num_documents:,} documents "
                        f"in the first pass, {position:,} in the second)")

    words = tuple(token.decode("latin-1") for token in vocab)  # LYRL2004 stems are ASCII
    return TokenCorpus(
        train=train.matrix(), test=test.matrix(), vocab=words,
        train_docids=np.frombuffer(train.docids, dtype=np.int64).copy(),
        test_docids=np.frombuffer(test.docids, dtype=np.int64).copy(),
        num_documents=num_documents, num_dropped=dropped)


# --- locating the inputs ----------------------------------------------------------------------


def _ready_made_in(folder: Path, where: str) -> list[Path] | None:
    """NVDM's three files in `folder` (each as-is, or .gz in the mirror), all or none."""
    found, missing = [], []
    for name in READY_MADE_FILES:
        candidates = [folder / name] + ([folder / f"{name}.gz"] if where == "mirror" else [])
        present = next((path for path in candidates if path.is_file()), None)
        (found if present else missing).append(present or folder / name)
    if not found:
        return None
    if missing:
        raise UserError(
            f"{folder} holds part of a ready-made RCV1 ({', '.join(p.name for p in found)}) but "
            f"not {', '.join(p.name for p in missing)}; NVDM's format needs all of "
            f"{', '.join(READY_MADE_FILES)}. Add the missing files, or remove these to build "
            f"RCV1 from the LYRL2004 token files")
    return found


def _ready_made(root: Path) -> list[Path] | None:
    """The ready-made files in the data root, copying them from the mirror if they are there."""
    folder = root / FOLDER
    local = _ready_made_in(folder, "data root")
    if local is not None:
        return local
    mirror = res.mirror_dir()
    in_mirror = _ready_made_in(mirror / FOLDER, "mirror") if mirror is not None else None
    if in_mirror is None:
        return None
    copied = []
    for path, name in zip(in_mirror, READY_MADE_FILES, strict=True):
        destination = folder / name
        res.copy_unverified(path, destination, path.name.endswith(".gz"),
                            f"rcv1: {path.name} from mirror")
        copied.append(destination)
    return copied


def _not_found_hint(error: res.DataNotFoundError, root: Path) -> res.DataNotFoundError:
    return res.DataNotFoundError(
        f"{error}\nRCV1-v2 has no public preprocessed copy (shared/data/PROVENANCE.md §3). "
        f"Either provide the five LYRL2004 token files as above, or put NVDM's ready-made "
        f"{', '.join(READY_MADE_FILES)} in {root / FOLDER} (or in the mirror's {FOLDER}/)")


def _tokens_cache_file(root: Path, located: list[res.Located]) -> Path:
    return res.cache_path(root, f"{NAME}-paper", TOKENS_VERSION,
                          [item.source.sha256 for item in located],
                          {"vocab_size": VOCAB_SIZE, "test_size": TEST_SIZE, "min_count": MIN_COUNT,
                           "test_seed": TEST_SEED, "valid_size": VALID_SIZE,
                           "valid_seed": VALID_SEED})


def _prepare_from_tokens(root: Path, located: list[res.Located] | None = None
                         ) -> tuple[Path, dict]:
    """The cache built from the token files; `located` when the caller has just verified them."""
    if located is None:
        located = res.located_without_hashing(root, RESOURCES)
        if located is not None and not _tokens_cache_file(root, located).is_file():
            located = None  # a cache must be built: verify the raw files first
    if located is None:
        try:
            located = res.ensure_resources(root, RESOURCES, NAME)
        except res.DataNotFoundError as error:
            raise _not_found_hint(error, root) from None
    cache = _tokens_cache_file(root, located)
    if not cache.is_file():
        corpus = build_from_tokens([item.path for item in located], VOCAB_SIZE, TEST_SIZE,
                                   MIN_COUNT, TEST_SEED)
        kept, held = hold_out(corpus.train.shape[0], VALID_SIZE, VALID_SEED)
        save_counts_cache(cache, {"train": rows(corpus.train, kept),
                                  "valid": rows(corpus.train, held), "test": corpus.test},
                          corpus.vocab, extra={
            "processing_version": np.asarray(f"{NAME}-paper-{TOKENS_VERSION}"),
            "raw_sha256": np.asarray([item.source.sha256 for item in located]),
            "train_docids": corpus.train_docids[kept],
            "valid_docids": corpus.train_docids[held],
            "test_docids": corpus.test_docids,
            "num_dropped": np.asarray(corpus.num_dropped),
        })
    return cache, {**res.provenance_of(located),
                   "processing_version": f"{NAME}-paper-{TOKENS_VERSION}"}


def _prepare_ready_made(root: Path, paths: list[Path]) -> tuple[Path, dict]:
    # No published checksum: hash what is there each time, so the cache still follows the files.
    actual = [res.sha256_file(path) for path in paths]
    cache = res.cache_path(root, f"{NAME}-paper", FEAT_VERSION, actual,
                           {"valid_size": VALID_SIZE, "valid_seed": VALID_SEED})
    if not cache.is_file():
        by_name = dict(zip(READY_MADE_FILES, paths, strict=True))
        parts, vocab = read_feat_directory(by_name["train.feat"], by_name["test.feat"],
                                           by_name["vocab.new"], VALID_SIZE, VALID_SEED)
        save_counts_cache(cache, parts, vocab, extra={
            "processing_version": np.asarray(f"{NAME}-paper-{FEAT_VERSION}"),
            "raw_sha256": np.asarray(actual),
        })
    return cache, {
        "raw_files": {path.name: sha for path, sha in zip(paths, actual, strict=True)},
        "raw_upstream": {path.name: "ready-made NVDM files (no published checksum; sha256 as found)"
                         for path in paths},
        "processing_version": f"{NAME}-paper-{FEAT_VERSION}",
    }


def _prepare(root: Path) -> tuple[Path, dict]:
    ready_made = _ready_made(root)
    if ready_made is not None:
        return _prepare_ready_made(root, ready_made)
    return _prepare_from_tokens(root)


def fetch(root: Path) -> list[Path]:
    ready_made = _ready_made(root)
    if ready_made is not None:
        _prepare_ready_made(root, ready_made)
        return ready_made
    try:
        located = res.ensure_resources(root, RESOURCES, NAME)
    except res.DataNotFoundError as error:
        raise _not_found_hint(error, root) from None
    _prepare_from_tokens(root, located)
    return [item.path for item in located]


def load(split: str, root: Path) -> Data:
    cache, provenance = _prepare(root)
    parts, vocab = load_counts_cache(cache)
    return Data(
        name=NAME, split=split, kind=KIND, num_features=len(vocab),
        train=parts["train"], valid=parts["valid"], test=parts["test"],
        train_mean=column_mean(parts["train"]), vocab=vocab,
        provenance={**provenance, "cache_file": str(cache)},
    )


def check_files(root: Path) -> list[res.FileCheck]:
    folder = root / FOLDER
    if all((folder / name).is_file() for name in READY_MADE_FILES):
        return [res.FileCheck(folder / name, "UNCHECKED", None, res.sha256_file(folder / name),
                              "ready-made NVDM file; no published checksum")
                for name in READY_MADE_FILES]
    return [res.check_resource(root, resource) for resource in RESOURCES]
