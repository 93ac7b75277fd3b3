"""One process at a time per run directory (and per dataset fetch): advisory file locks.

A run directory holds `.lock` (bench/layout.py). Whoever trains or evaluates the run holds an
exclusive `flock` on it for as long as it writes there, and writes into it who it is (host, pid,
command, since when), so that a second process is told who holds the run instead of training it
again and overwriting the first one's checkpoints and record. The kernel drops the lock when its
holder exits, however it exits (a killed worker, a lost node on a shared file system whose client
drops its locks), so a stale `.lock` file never blocks anything: only a live holder does.

Locks are re-entrant within a process: `bench run` takes the locks of the cells it is about to
train, and the training code takes them again without deadlocking on itself (two `flock`s on two
descriptors of one file conflict even within one process).

flock works on local file systems and, on Linux, on NFS (the client maps it onto NFS byte-range
locks); on a file system without working locks (some FUSE mounts) two commands on one run
directory are not kept apart, and README.md says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.errors import UserError

LOCK_FILE = ".lock"

# path -> [file descriptor, depth] of the locks this process holds
_HELD: dict[str, list[int]] = {}


class RunLocked(UserError):
    """Another live process holds the lock of a run directory."""

    def __init__(self, directory: Path, holder: dict | None):
        self.directory = Path(directory)
        self.holder = holder or {}
        super().__init__(f"{directory} is being trained by another process ({describe(holder)}); "
                         f"wait for it to finish, or give this run another --out directory")


def describe(holder: dict | None) -> str:
    """'pid 123 on host h since 2026-12-03T06:00:00Z: python -m bench run quick' (or 'unknown')."""
    if not holder:
        return "holder unknown"
    text = f"pid {holder.get('pid')} on host {holder.get('host')}"
    if holder.get("since"):
        text += f" since {holder['since']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


def holder_of(directory: Path) -> dict | None:
    """Who wrote the lock file of `directory` last (the holder, if the lock is held)."""
    try:
        return json.loads((Path(directory) / LOCK_FILE).read_text() or "null")
    except (OSError, ValueError):
        return None


def is_locked(directory: Path) -> bool:
    """Whether another process holds `directory`'s lock now (this process's own locks: False)."""
    path = Path(directory) / LOCK_FILE
    if str(path.resolve()) in _HELD or not path.exists():
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(descriptor)  # closing drops the shared lock taken to probe
    return False


def _whoami() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # (a Ray worker's command line runs to a kilobyte: its start is what tells)
            "command": " ".join(["python", *sys.argv])[:200] if sys.argv and sys.argv[0] else ""}


def acquire(directory: Path, wait: bool = False) -> None:
    """Take `directory`'s lock (re-entrant); raise RunLocked if another process holds it and
    `wait` is false, else block until it is free."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    key = str(path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(directory, holder_of(directory)) from None
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_whoami()).encode(), 0)
    except BaseException:
        os.close(descriptor)
        raise
    _HELD[key] = [descriptor, 1]


def release(directory: Path) -> None:
    key = str((Path(directory) / LOCK_FILE).resolve())
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        os.close(held[0])  # drops the flock


@contextlib.contextmanager
def locked(directories, wait: bool = False) -> Iterator[None]:
    """Hold the locks of every directory in `directories` (in a fixed order) for the block."""
    taken: list[Path] = []
    try:
        for directory in sorted({str(Path(d)) for d in directories}):
            acquire(Path(directory), wait)
            taken.append(Path(directory))
        yield
    finally:
        for directory in reversed(taken):
            release(directory)
