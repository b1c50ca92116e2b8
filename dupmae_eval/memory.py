"""Keeping the resident memory of long runs flat (glibc's allocator).

Encoding a corpus allocates and frees buffers of many sizes for every batch (token-level activations
whose length follows the batch's longest passage, the vocabulary tiles, the pooled rows), and each shard
sweeps those sizes again from the longest passages to the shortest. glibc serves buffers under its
mmap threshold from the main heap; after the first large buffer is freed, that threshold rises (up to
32 MB), so nearly every per-batch buffer comes from the heap. Freed space in the middle of the heap is
never given back by glibc on its own (only the top is trimmed), and each shard's sweep leaves it in pieces
the next shard's larger buffers do not fit, so the heap grows by a roughly constant amount per shard:
measured with splade-tiny on MS MARCO passages, in-use bytes level off after about 10,000 passages
while free bytes held in the heap grow ~70 MB per shard (docs/performance.md, "Memory over long runs").

`release()` hands the heap's free pages back to the operating system (`malloc_trim(0)`, which also
releases free pages in the middle of the heap, not only at its top). The long-running loops call it at
shard boundaries: encoding after each shard is written, and the shard-streamed searches after each
shard is scored. One call costs a few milliseconds; the pages it returns are faulted in again only when
reused. Setting `DUPMAE_EVAL_MEMORY_GUARD=0` turns it off (the old behaviour, for comparisons). Where
the C library is not glibc (macOS, musl) `release()` does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import lru_cache
from typing import Dict, Optional

ENV = "DUPMAE_EVAL_MEMORY_GUARD"


def enabled() -> bool:
    """Whether `release()` acts (default yes; DUPMAE_EVAL_MEMORY_GUARD=0 turns it off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
    """The process's glibc, or None elsewhere (other platforms, musl, or a C library without these calls)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only; musl has malloc_trim-less allocators
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def release() -> bool:
    """Return the allocator's free pages to the operating system; True when something was released."""
    libc = _glibc()
    if libc is None or not enabled():
        return False
    return bool(libc.malloc_trim(0))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_stats() -> Optional[Dict[str, int]]:
    """glibc's heap statistics in bytes (mallinfo2, glibc 2.33+): `heap` (the arenas' size), `in_use`,
    `free` (held by the heap, not in use) and `mmapped` (large blocks served by mmap); None elsewhere."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def resident_mb(pid: Optional[int] = None) -> Optional[float]:
    """Resident memory (VmRSS) of a process in MB, from /proc; None where /proc has no such process."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
