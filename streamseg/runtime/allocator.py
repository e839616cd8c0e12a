"""Host memory kept for reuse while a pipeline runs, instead of handed back to the OS after each batch.

glibc serves large blocks with fresh mappings and trims freed memory off its heaps, so each batch's large
temporaries (decoded and drawn frames, masks resized to the frame's size, the forward pass's activations on
a CPU) come back as new pages: a page fault for each page touched, thousands a frame, each paid in system
time; about none once freed blocks stay. Closing gives the memory back. Elsewhere than glibc (musl,
macOS, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import sys
import threading

__all__ = ["keep_freed_memory", "release_freed_memory"]

log = logging.getLogger(__name__)

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit
DEFAULT_MMAP_MAX = 65536  # glibc's
TOP_PAD = 64 << 20  # the heap grows in steps this large, so growing it rarely faults page by page
TRIM_THRESHOLD = 2**31 - 1  # never trim while running: release_freed_memory() does it once at the end
DEFAULT_TOP_PAD = 128 << 10  # glibc's

_lock = threading.Lock()
_users = 0  # pipelines running in this process


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> None:
    """Keep freed blocks in the process for the next allocation; a pipeline calls it on starting, and
    :func:`release_freed_memory` on closing."""
    global _users
    libc = _glibc()
    if libc is None:
        return
    with _lock:
        _users += 1
        # No block of its own mapping either: a thread's heap serves up to 64 MB, and glibc still maps a
        # larger block when no heap can take it.
        values = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_MMAP_MAX, 0), (M_TOP_PAD, TOP_PAD),
                  (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        if not all(libc.mallopt(param, value) for param, value in values):
            log.debug("mallopt refused a setting: freed memory goes back to the OS as before")


def release_freed_memory() -> None:
    """Hand the memory freed by the last running pipeline back to the OS, and trim as glibc's adaptive
    setting would at this threshold (twice it) from then on."""
    global _users
    libc = _glibc()
    if libc is None:
        return
    with _lock:
        _users = max(0, _users - 1)
        if _users:
            return
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
        libc.mallopt(M_TOP_PAD, DEFAULT_TOP_PAD)
        libc.malloc_trim(0)
