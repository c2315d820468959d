"""The C heap under the models: glibc's allocator, told to give memory back.

A gateway loads and unloads models all day. glibc's defaults suit a process that keeps what
it allocates: freed memory stays in the process (RSS) as the high-water mark of each heap.
Measured with ``make bench`` (the memory section), two of its habits made RSS outgrow
``GATEWAY_MAX_MEMORY_MB`` under churn:

- The mmap threshold is dynamic: once a large block (a tensor's storage) is freed, blocks of
  that size are carved from the heap instead of mapped, and a heap with holes between live
  blocks cannot shrink. A fixed threshold keeps large blocks mapped, and unmapped on free.
- Every thread that allocates while another holds the heap's lock gets an arena of its own
  (up to 8 per core); each keeps its own high-water mark. Loads run on several threads.

Elsewhere (musl, macOS) none of this exists and every call here does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's starting value, made fixed
ARENA_MAX = 2


@functools.cache
def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune() -> bool:
    """Fix the mmap threshold and cap the arenas, for the allocations from now on (call it
    before the loader threads start). False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
    if not done:
        log.warning("could not tune the C allocator (mallopt failed); RSS may stay above the model budget")
    return bool(done)


def trim() -> None:
    """Give freed heap pages back to the system now, from every arena."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
