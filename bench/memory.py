"""Keep freed memory in the process for reuse (glibc's malloc), set once by the command line.

Why. Evaluation allocates tens of MiB per chunk of samples, and validation during training does
the same for its 1,000-example batches. By default glibc serves blocks above its mmap threshold
(which grows to at most 32 MiB) with a fresh mmap and trims the top of the heap on free, so every
chunk's temporaries are faulted in again, page by page. `python -m bench.perf.keep_memory_ab`
(the iw bound, K=1000, 20 random MNIST-shaped rows, two threads) measured 30,000-50,000 page
faults a call by default against none kept, and 1.15-1.3x more examples/s on `sbn:200-200-200`
(`fdarn:200` alike); `bench eval` with K=5000 on `sbn:200` spent 4 of its 8 minutes in the kernel,
and 1.5 s of 5 minutes with freed memory kept. Code that calls bench.evaluation from Python
rather than through the command line can call keep_freed_memory() itself.

The cost: memory the process freed stays mapped until it exits, so its resident size stays at its
peak (the peak itself is unchanged).
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Serve blocks up to this size from the heap; glibc versions that cap the threshold lower
# (at 32 MiB on 64-bit systems) refuse it, and the cap is used instead.
_MMAP_THRESHOLDS = (1 << 30, 32 << 20)
_NEVER_TRIM = 2 ** 31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel.
    Returns False, changing nothing, where the C library has no mallopt (macOS, musl, Windows)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the symbols already loaded: the C library's
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not any(mallopt(_M_MMAP_THRESHOLD, threshold) for threshold in _MMAP_THRESHOLDS):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
