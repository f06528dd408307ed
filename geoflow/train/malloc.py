"""Keep freed CPU memory for reuse: the glibc allocator settings that large-tensor training on a CPU wants.

glibc's ``malloc`` serves every block above its mmap threshold with a fresh ``mmap`` and hands it back to the
operating system on ``free``.  The threshold adapts to the blocks a program frees, but never beyond 32 MiB
(64-bit Linux), so each tensor of more than 32 MiB that PyTorch allocates on the CPU is new memory whose pages
fault in one by one on first write.  An EGNN on LJ55 at batch 64 has ~190 000 edges, so each of its
per-edge activations is a (190 080, 64) float32 tensor of 46 MiB: every elementwise op pays those page faults,
and they, not arithmetic, dominate its time (``benchmarks/README.md``, "CPU allocator").

:func:`keep_freed_memory` raises the mmap threshold and the trim threshold with ``mallopt`` so that such
blocks come from the heap and stay there once freed, to be reused by the next op and the next training step.
It is what ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do when set in the environment before
Python starts, done from inside the process.  The price is that the process keeps (up to the trim threshold)
the memory it freed instead of returning it to the system.  The ``geoflow`` command line calls it at start
(``GEOFLOW_MALLOC=default`` in the environment turns that off); a script that uses the Python API may call it
itself.  It does nothing, and returns False, where the C library is not glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

# mallopt parameters (glibc <malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
"""Blocks up to 1 GiB come from the heap (glibc's own ceiling for its adaptive threshold is 32 MiB)."""
TRIM_THRESHOLD = (1 << 31) - 1
"""Free memory at the top of the heap is returned to the system only beyond 2 GiB (glibc default: 128 KiB,
adapting to twice the mmap threshold)."""


def _is_glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # no such confstr name / not POSIX
        return False


def _libc():
    if not _is_glibc():
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) for this process; True if both were accepted.

    Idempotent; affects the whole process (every library's allocations), from this call on.  Returns False,
    changing nothing, where the C library is not glibc.
    """
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"`{name}` must be an int (bytes), got {type(v).__name__}")
        if not 0 < v < 1 << 31:
            raise ValueError(f"`{name}` must be in [1, 2**31 - 1] bytes (a C int), got {v}")
    libc = _libc()
    if libc is None:
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    return ok_mmap and ok_trim
