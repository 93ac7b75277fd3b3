"""Raw files: where they live, where they come from, and how they are checked.

Every dataset declares its upstream files as `Resource`s. A resource has one or more
`Source`s: the same data as published in different places, possibly in different formats,
each with its own sha256 (binarized MNIST is Larochelle's text `.amat` at Toronto, or a MATLAB
copy of the same array on GitHub). A source has a primary URL and fallbacks.

Layout. The data root (`resolve_data_dir`) holds one folder per dataset, laid out like the
mirror (`binarized_mnist/`, `20news/`, `rcv1/`), plus `processed/` for the caches that loaders
build from the raw files. Raw files are kept after conversion so that they can be re-verified.

Obtaining a file, in order:
1. it is already in the data root: used as is (verified by sha256 when a cache is (re)built
   and by `bench data verify`; a file that fails is reported and never overwritten);
2. `BENCH_DATA_MIRROR` is set: copied from `<mirror>/<folder>/<name>` or `<name>.gz` (gunzipped),
   and never from the network;
3. otherwise downloaded, trying every URL of every source in order (a URL ending in `.gz` is
   gunzipped on the fly).

Every copy streams into a hidden temporary file in the destination folder while hashing the
uncompressed bytes, is fsynced, and only then renamed into place (`os.replace`), and only if the
sha256 matches. An interrupted or corrupt transfer therefore never leaves a file under the
final name.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bench.errors import UserError
from bench.io import current_umask

DATA_DIR_ENV = "BENCH_DATA"
MIRROR_ENV = "BENCH_DATA_MIRROR"
CACHE_DIR_NAME = "nvil-bench"
PROCESSED_DIR = "processed"

# Long enough for a slow academic server to start answering, short enough that an offline
# machine gives up on each URL quickly.
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20
USER_AGENT = "nvil-bench-datasets/1 (+python urllib)"


class DataNotFoundError(UserError):
    """A raw file is neither in the data root nor obtainable from the mirror or any URL."""


class ChecksumMismatchError(UserError):
    """A raw file (local, in the mirror, or downloaded) does not have the expected sha256."""


@dataclass(frozen=True)
class Source:
    """One published copy of a resource.

    filename: the name it is stored under in the dataset's folder of the data root.
    urls: primary first, then fallbacks; a URL ending in `.gz` is gunzipped while downloading.
    sha256, size: of the uncompressed file.
    fmt: how a loader reads it ('amat', 'mat', 'feat', 'vocab', 'tokens').
    mirror_name: its name in the mirror folder (and upstream); defaults to `filename`.
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str
    size: int | None
    fmt: str
    mirror_name: str | None = None

    @property
    def name_in_mirror(self) -> str:
        return self.mirror_name or self.filename


@dataclass(frozen=True)
class Resource:
    """One upstream file a dataset needs, with the alternative sources it may come from."""

    name: str
    folder: str
    sources: tuple[Source, ...]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(url for source in self.sources for url in source.urls)


@dataclass(frozen=True)
class Located:
    """A resource's raw file in the data root, and which source it is a copy of."""

    resource: Resource
    source: Source
    path: Path


@dataclass(frozen=True)
class FileCheck:
    """The result of checking one raw file: status is OK, MISMATCH, MISSING or UNCHECKED."""

    path: Path
    status: str
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    detail: str = ""


# --- the data root and the mirror -------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: `data_dir` (--data-dir), else $BENCH_DATA, else the per-user cache dir.

    The per-user cache dir is $XDG_CACHE_HOME/nvil-bench, or ~/.cache/nvil-bench. Nothing is
    created here; folders are made when something is written.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache_home).expanduser() if cache_home else Path.home() / ".cache"
    return base / CACHE_DIR_NAME


def mirror_dir() -> Path | None:
    """The directory named by $BENCH_DATA_MIRROR, or None when it is unset."""
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(
            f"{MIRROR_ENV}={value} is not a directory; point it at a folder laid out like "
            f"binarized_mnist/, 20news/, rcv1/ or unset it to download from the upstream URLs"
        )
    return path


def processed_dir(root: Path) -> Path:
    return root / PROCESSED_DIR


def cache_path(root: Path, stem: str, version: str, raw_sha256s: Sequence[str],
               params: dict | None = None) -> Path:
    """The processed-cache file for `stem` (e.g. 'mnist-paper'), named by recipe and inputs.

    The name carries the processing version and the first 12 hex digits of a hash over the raw
    files' sha256s and the recipe's parameters, so a changed recipe or a changed raw file gets
    a new cache name instead of a stale cache.
    """
    digest = hashlib.sha256()
    for sha in raw_sha256s:
        digest.update(sha.encode() + b"\n")
    if params:
        digest.update(json.dumps(params, sort_keys=True).encode())
    return processed_dir(root) / f"{stem}-{version}-{digest.hexdigest()[:12]}.npz"


# --- hashing and atomic writes ----------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create {directory}: {error.strerror or error}; choose another data root with "
            f"--data-dir or ${DATA_DIR_ENV}"
        ) from None


class AtomicFile:
    """A hidden temporary file next to its destination, renamed into place only on `commit`.

    Used as a context manager: leaving the block without `commit` (an exception, Ctrl-C, a
    checksum mismatch) deletes the temporary file, so no half-written file ever carries a
    final name.
    """

    def __init__(self, directory: Path, hint: str):
        _make_dir(directory)
        try:
            fd, name = tempfile.mkstemp(dir=directory, prefix=f".{hint}.", suffix=".part")
        except OSError as error:
            raise UserError(
                f"cannot write in {directory}: {error.strerror or error}; choose another data "
                f"root with --data-dir or ${DATA_DIR_ENV}"
            ) from None
        self.temp_path = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        self.committed = False

    def commit(self, destination: Path) -> Path:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        # mkstemp creates files readable by the owner only; finished files get the usual mode.
        os.chmod(self.temp_path, 0o666 & ~current_umask())
        os.replace(self.temp_path, destination)
        self.committed = True
        # Persist the rename itself, not just the bytes (matters after a power cut).
        with contextlib.suppress(OSError):
            dir_fd = os.open(destination.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return destination

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.committed:
            self.handle.close()
            with contextlib.suppress(FileNotFoundError):
                self.temp_path.unlink()


def write_npz_atomic(path: Path, arrays: dict, compressed: bool = True) -> Path:
    """Write a .npz under `path` atomically (numpy would otherwise write it in place)."""
    import numpy as np

    with AtomicFile(path.parent, path.name) as atomic:
        (np.savez_compressed if compressed else np.savez)(atomic.handle, **arrays)
        return atomic.commit(path)


# --- locating and checking raw files ----------------------------------------------------------


def dataset_dir(root: Path, resource: Resource) -> Path:
    return root / resource.folder


def find_local(root: Path, resource: Resource) -> Located | None:
    """The first source whose file is present in the data root (not hashed)."""
    for source in resource.sources:
        path = dataset_dir(root, resource) / source.filename
        if path.is_file():
            return Located(resource, source, path)
    return None


def fetch_command(dataset: str) -> str:
    return f"python -m bench data fetch {dataset}"


def mismatch_message(path: Path, expected: str, actual: str, actual_size: int,
                     expected_size: int | None, dataset: str) -> str:
    sizes = f"{actual_size:,} bytes"
    if expected_size is not None and expected_size != actual_size:
        sizes += f", expected {expected_size:,}: truncated or corrupt"
    return (
        f"{path} fails verification: sha256 {actual} ({sizes}), expected sha256 {expected}. "
        f"It was left untouched. Delete it and run `{fetch_command(dataset)}`"
    )


def check_local(located: Located) -> FileCheck:
    actual = sha256_file(located.path)
    status = "OK" if actual == located.source.sha256 else "MISMATCH"
    return FileCheck(located.path, status, located.source.sha256, actual)


def verify_local(located: Located, dataset: str) -> None:
    """Raise ChecksumMismatchError naming the file, both sha256s and the fix."""
    check = check_local(located)
    if check.status != "OK":
        raise ChecksumMismatchError(mismatch_message(
            located.path, located.source.sha256, check.actual_sha256,
            located.path.stat().st_size, located.source.size, dataset))


def check_resource(root: Path, resource: Resource) -> FileCheck:
    """OK / MISMATCH for the file present in the data root, or MISSING."""
    located = find_local(root, resource)
    if located is None:
        primary = resource.sources[0]
        return FileCheck(dataset_dir(root, resource) / primary.filename, "MISSING",
                         expected_sha256=primary.sha256)
    return check_local(located)


# --- obtaining raw files ----------------------------------------------------------------------


class _TransferFailed(Exception):
    """One attempt (a URL or a mirror file) failed; the message says why."""


class _HashMismatch(_TransferFailed):
    def __init__(self, actual: str, size: int):
        super().__init__(f"sha256 {actual} ({size:,} bytes) matches no expected checksum")
        self.actual = actual
        self.size = size


def _open_url(url: str, timeout: float) -> BinaryIO:
    """Open `url` for reading. Tests replace this function so that they never touch the network."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs and captured output.
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False, disable=None)


def _stream_into(stream: BinaryIO, atomic: AtomicFile, gunzip: bool, total: int | None,
                 desc: str) -> tuple[str, int]:
    """Copy `stream` (gunzipped if asked) into `atomic`; return sha256 and size of what was written."""
    reader: BinaryIO = gzip.GzipFile(fileobj=stream, mode="rb") if gunzip else stream
    digest = hashlib.sha256()
    size = 0
    with _progress(total, desc) as bar:
        try:
            while chunk := reader.read(CHUNK_BYTES):
                digest.update(chunk)
                atomic.handle.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise _TransferFailed(f"not a complete gzip file ({error})") from None
    return digest.hexdigest(), size


def _copy_verified(stream: BinaryIO, gunzip: bool, resource: Resource,
                   candidates: Sequence[Source], directory: Path, desc: str) -> Located:
    """Stream into a temp file; keep it under the name of the candidate source whose sha256 matches."""
    total = next((s.size for s in candidates if s.size is not None), None)
    with AtomicFile(directory, candidates[0].filename) as atomic:
        actual, size = _stream_into(stream, atomic, gunzip, total, desc)
        for source in candidates:
            if actual == source.sha256:
                path = atomic.commit(directory / source.filename)
                return Located(resource, source, path)
        raise _HashMismatch(actual, size)


def copy_unverified(source_path: Path, destination: Path, gunzip: bool, desc: str) -> str:
    """Copy a file that has no published checksum (atomically); return the sha256 it has."""
    with open(source_path, "rb") as stream, AtomicFile(destination.parent, destination.name) as atomic:
        try:
            actual, _ = _stream_into(stream, atomic, gunzip, None, desc)
        except _TransferFailed as failure:
            raise UserError(f"{source_path} is unreadable: {failure}") from None
        atomic.commit(destination)
    return actual


class _Unobtainable(Exception):
    """No attempt gave a verified copy; `attempts` lists each URL or path tried, with the reason."""

    def __init__(self, resource: Resource, attempts: list[str]):
        super().__init__(resource.name)
        self.resource = resource
        self.attempts = attempts


def _from_mirror(mirror: Path, root: Path, resource: Resource, dataset: str) -> Located:
    directory = dataset_dir(root, resource)
    attempts: list[str] = []
    names = list(dict.fromkeys(source.name_in_mirror for source in resource.sources))
    for name in names:
        candidates = [s for s in resource.sources if s.name_in_mirror == name]
        for path, gunzip in ((mirror / resource.folder / name, False),
                             (mirror / resource.folder / f"{name}.gz", True)):
            if not path.is_file():
                attempts.append(f"{path}: not there")
                continue
            try:
                with open(path, "rb") as stream:
                    return _copy_verified(stream, gunzip, resource, candidates, directory,
                                          f"{dataset}: {path.name} from mirror")
            except _HashMismatch as mismatch:
                expected = " or ".join(s.sha256 for s in candidates)
                raise ChecksumMismatchError(
                    f"mirror file {path} fails verification: sha256 of its "
                    f"{'gunzipped ' if gunzip else ''}content is {mismatch.actual} "
                    f"({mismatch.size:,} bytes), expected sha256 {expected}. Nothing was copied. "
                    f"Replace it with the upstream file, or unset {MIRROR_ENV} to download it "
                    f"from {', '.join(resource.urls)}"
                ) from None
            except _TransferFailed as failure:
                raise ChecksumMismatchError(
                    f"mirror file {path} is unreadable: {failure}. Nothing was copied. Replace "
                    f"it with the upstream file, or unset {MIRROR_ENV} to download it"
                ) from None
    raise _Unobtainable(resource, attempts)


def _from_network(root: Path, resource: Resource, dataset: str) -> Located:
    directory = dataset_dir(root, resource)
    attempts: list[str] = []
    for source in resource.sources:
        for url in source.urls:
            try:
                with _open_url(url, DOWNLOAD_TIMEOUT_S) as response:
                    return _copy_verified(response, url.endswith(".gz"), resource, [source],
                                          directory, f"{dataset}: {source.filename}")
            except _TransferFailed as failure:
                attempts.append(f"{url}: {failure}")
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                attempts.append(f"{url}: {reason}")
    raise _Unobtainable(resource, attempts)


def _not_found_message(failures: list[_Unobtainable], root: Path, dataset: str,
                       mirror: Path | None) -> str:
    files = "1 raw file" if len(failures) == 1 else f"{len(failures)} raw files"
    lines = []
    for failure in failures:
        lines.append(f"  {failure.resource.name}:")
        lines.extend(f"    {attempt}" for attempt in failure.attempts)
    folders = sorted({str(root / f.resource.folder) for f in failures})
    if mirror is not None:
        return (
            f"{files} of {dataset} not found in the mirror {MIRROR_ENV}={mirror}; tried:\n"
            + "\n".join(lines)
            + f"\nCopy them into the mirror (as-is or .gz), put verified copies in "
              f"{', '.join(folders)}, or unset {MIRROR_ENV} to download them from the upstream "
              f"URLs, then run `{fetch_command(dataset)}`"
        )
    return (
        f"could not download {files} of {dataset}; every URL failed:\n"
        + "\n".join(lines)
        + f"\nWithout network access, set {MIRROR_ENV} to a directory laid out like the upstream "
          f"(e.g. {failures[0].resource.folder}/{failures[0].resource.sources[0].name_in_mirror}"
          f" or .gz), or put verified copies in {', '.join(folders)}, then run "
          f"`{fetch_command(dataset)}`"
    )


def ensure_resources(root: Path, resources: Sequence[Resource], dataset: str) -> list[Located]:
    """Every resource present in the data root and verified by sha256 (fetching the missing ones).

    A present file that fails verification raises at once. Missing files are all attempted
    before raising, so that one error lists everything that could not be obtained. With
    $BENCH_DATA_MIRROR set, missing files come from the mirror only, never from the network.
    """
    mirror = mirror_dir()
    located: list[Located] = []
    failures: list[_Unobtainable] = []
    for resource in resources:
        present = find_local(root, resource)
        if present is not None:
            verify_local(present, dataset)
            located.append(present)
            continue
        try:
            if mirror is not None:
                located.append(_from_mirror(mirror, root, resource, dataset))
            else:
                located.append(_from_network(root, resource, dataset))
        except _Unobtainable as failure:
            failures.append(failure)
    if failures:
        raise DataNotFoundError(_not_found_message(failures, root, dataset, mirror))
    return located


def located_without_hashing(root: Path, resources: Sequence[Resource]) -> list[Located] | None:
    """All resources' files if every one is present (not hashed), else None."""
    located = [find_local(root, resource) for resource in resources]
    if any(item is None for item in located):
        return None
    return located  # type: ignore[return-value]


def provenance_of(located: Sequence[Located]) -> dict:
    return {
        "raw_files": {item.path.name: item.source.sha256 for item in located},
        # Which published copy each file is (its primary URL), whether it came from there,
        # a fallback URL or the mirror.
        "raw_upstream": {item.path.name: item.source.urls[0] for item in located},
    }

