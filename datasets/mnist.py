"""Binarized MNIST with Larochelle's fixed binarization (the Salakhutdinov & Murray 2008 one).

Raw files: `binarized_mnist_{train,valid,test}.amat`, 50,000 / 10,000 / 10,000 rows of 784
space-separated 0/1 values, one image per line (1,568 bytes a row). Primary source: Larochelle's
Toronto URLs, whose sizes and sha256 TensorFlow Datasets also publishes. Fallback: the copies in
`mingzhang-yin/ARM-gradient` (commit bac893cf, unchanged at master 9b5f74da), which despite
their `.amat` name are MATLAB 5 files holding the same array as variable `X` (uint8, (N, 784));
they have their own sha256 sums and are stored here as `*.arm-gradient.mat`.
See shared/data/PROVENANCE.md §1.

Splits:
- `paper` (default), NVIL §4.1-4.2: train and valid merged into the 60,000-image training set;
  100 of those images, chosen with `numpy.random.default_rng(PAPER_VALID_SEED)`, form the
  validation set, leaving 59,900 for training; test is the 10,000 test images. The paper's own
  100 images are not known; this seed fixes ours.
- `standard`: the files as published, 50,000 / 10,000 / 10,000.

Processed cache: `processed/mnist-<split>-v1-<hash>.npz`, bit-packed and compressed, named by
the processing version and the raw files' sha256 sums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import UserError
from datasets import _resources as res
from datasets._data import BINARY, Data, column_mean, hold_out, load_binary_cache, save_binary_cache

NAME = "mnist"
KIND = BINARY
SPLITS = ("paper", "standard")
FETCHABLE = True
NUM_PIXELS = 784
PAPER_VALID_SIZE = 100
PAPER_VALID_SEED = 0
# Bump when the parsing or the split recipe changes: the cache name changes with it.
PROCESSING_VERSION = "v1"

FOLDER = "binarized_mnist"
_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
_ARM_GRADIENT_COMMITS = ("bac893cfcec486bbd00b755b12cf8402053b0e84",
                         "9b5f74da4e4009c5556e8d7a87c88c8e291c253d")

# (part, text sha256, text size, MAT sha256, MAT size), from PROVENANCE.md §1.
_CHECKSUMS = (
    ("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d", 78_400_000,
     "79a0312c7389d855cfc97e3812de3998417c5829d8a51543b56a90a91252ae7e", 2_852_060),
    ("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2", 15_680_000,
     "7436afc856959075c7787025bb8a4ba2b520b9230ee39667c66aa7dd2819dd68", 571_883),
    ("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c", 15_680_000,
     "5bc30222e1e7896cbccd1e1db6b28540cc1230f4d2d5473841a5f6cc54be8d38", 490_132),
)


def _resource(part: str, text_sha: str, text_size: int, mat_sha: str, mat_size: int) -> res.Resource:
    upstream = f"binarized_mnist_{part}.amat"
    text = res.Source(upstream, (f"{_LAROCHELLE}/{upstream}",), text_sha, text_size, "amat")
    matlab = res.Source(
        f"binarized_mnist_{part}.arm-gradient.mat",
        tuple(f"https://raw.githubusercontent.com/mingzhang-yin/ARM-gradient/{commit}/{upstream}"
              for commit in _ARM_GRADIENT_COMMITS),
        mat_sha, mat_size, "mat", mirror_name=upstream)
    return res.Resource(upstream, FOLDER, (text, matlab))


# Order matters: train, valid, test (the loaders read them positionally).
RESOURCES: tuple[res.Resource, ...] = tuple(_resource(*row) for row in _CHECKSUMS)


# --- parsing ----------------------------------------------------------------------------------


def parse_amat(data: bytes, origin: str = "<bytes>") -> np.ndarray:
    """Parse Larochelle's text format (rows of space-separated 0/1) into a uint8 (N, D) array.

    The published files have exactly one byte per value and one separator after it, so the
    fast path reads every other byte with numpy (78 MB in well under a second). Anything else
    (CRLF, trailing spaces) goes through a slower line-by-line parse that checks every value.
    """
    chars = np.frombuffer(data, dtype=np.uint8)
    first_newline = data.find(b"\n")
    if first_newline > 0 and first_newline % 2 == 1 and len(data) % (first_newline + 1) == 0:
        row_bytes = first_newline + 1
        grid = chars.reshape(len(data) // row_bytes, row_bytes)
        values = grid[:, 0::2]
        if ((grid[:, -1] == 10).all() and (grid[:, 1:-1:2] == 32).all()
                and ((values == 48) | (values == 49)).all()):
            return values - np.uint8(48)
    return _parse_amat_lines(data, origin)


def _parse_amat_lines(data: bytes, origin: str) -> np.ndarray:
    rows = []
    for number, line in enumerate(data.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        joined = b"".join(tokens)
        row = np.frombuffer(joined, dtype=np.uint8) - np.uint8(48)
        if len(joined) != len(tokens) or (row > 1).any():
            raise UserError(f"{origin}, line {number}: expected values 0 or 1 separated by spaces")
        if rows and row.size != rows[0].size:
            raise UserError(f"{origin}, line {number}: {row.size} values, but line 1 has "
                            f"{rows[0].size}")
        rows.append(row)
    if not rows:
        raise UserError(f"{origin} holds no images")
    return np.stack(rows)


def read_images(located: res.Located) -> np.ndarray:
    """The (N, 784) uint8 images of one raw file, whichever source it came from."""
    if located.source.fmt == "mat":
        import scipy.io

        images = scipy.io.loadmat(located.path, variable_names=["X"]).get("X")
        if images is None:
            raise UserError(f"{located.path} holds no variable 'X'")
        images = np.asarray(images)
        if images.size and images.max() > 1:
            raise UserError(f"{located.path}: variable 'X' holds values other than 0 and 1")
        images = images.astype(np.uint8)
    else:
        images = parse_amat(located.path.read_bytes(), str(located.path))
    if images.ndim != 2 or images.shape[1] != NUM_PIXELS:
        raise UserError(f"{located.path}: images of shape {images.shape}, expected (N, {NUM_PIXELS})")
    return images


# --- splits and caching -----------------------------------------------------------------------


def make_split(split: str, train: np.ndarray, valid: np.ndarray, test: np.ndarray
               ) -> dict[str, np.ndarray]:
    if split == "standard":
        return {"train": train, "valid": valid, "test": test}
    merged = np.concatenate([train, valid])
    kept, held = hold_out(len(merged), PAPER_VALID_SIZE, PAPER_VALID_SEED)
    return {"train": merged[kept], "valid": merged[held], "test": test}


def _cache_file(root: Path, split: str, located: list[res.Located]) -> Path:
    params = {"valid_size": PAPER_VALID_SIZE, "valid_seed": PAPER_VALID_SEED} if split == "paper" else None
    return res.cache_path(root, f"{NAME}-{split}", PROCESSING_VERSION,
                          [item.source.sha256 for item in located], params)


def _build_caches(root: Path, located: list[res.Located], splits: tuple[str, ...]) -> None:
    train, valid, test = (read_images(item) for item in located)
    for split in splits:
        cache = _cache_file(root, split, located)
        if not cache.is_file():
            save_binary_cache(cache, make_split(split, train, valid, test), extra={
                "processing_version": np.asarray(f"{NAME}-{split}-{PROCESSING_VERSION}"),
                "raw_sha256": np.asarray([item.source.sha256 for item in located]),
            })


def fetch(root: Path) -> list[Path]:
    """Obtain and verify the raw files, and build the caches of every split."""
    located = res.ensure_resources(root, RESOURCES, NAME)
    _build_caches(root, located, SPLITS)
    return [item.path for item in located]


def load(split: str, root: Path) -> Data:
    located = res.located_without_hashing(root, RESOURCES)
    # A cache whose name encodes the present raw files' expected hashes is trusted without
    # re-hashing 110 MB; the raw files were verified when it was built.
    if located is None or not _cache_file(root, split, located).is_file():
        located = res.ensure_resources(root, RESOURCES, NAME)
        # Parsing is most of the cost, so build every split's cache while the images are here.
        _build_caches(root, located, SPLITS)
    cache = _cache_file(root, split, located)
    parts = load_binary_cache(cache)
    return Data(
        name=NAME, split=split, kind=KIND, num_features=NUM_PIXELS,
        train=parts["train"], valid=parts["valid"], test=parts["test"],
        train_mean=column_mean(parts["train"]), vocab=None,
        provenance={**res.provenance_of(located),
                    "processing_version": f"{NAME}-{split}-{PROCESSING_VERSION}",
                    "cache_file": str(cache)},
    )


def check_files(root: Path) -> list[res.FileCheck]:
    return [res.check_resource(root, resource) for resource in RESOURCES]
