"""Keeping the resident memory of long runs flat (glibc's allocator).

Encoding allocates and frees buffers of many sizes for every batch (token activations sized by the batch's
longest passage, vocabulary tiles, pooled rows, top-k parts), and each shard sweeps those sizes again,
from its longest passages down to its shortest. glibc serves them from the main heap (its mmap threshold
rises to the size of the largest block freed, up to 32 MB, so hardly anything is mmapped), and freed
space in the middle of the heap goes back to the system only when it is at the top. The space each
shard frees is left in pieces the next shard's large buffers do not fit, so the heap grows by a roughly
constant amount per shard while the bytes in use stay level: measured with glibc's mallinfo2 while
encoding MS MARCO passages with splade-tiny, in 2,500-passage shards, in-use bytes levelled off at
~595 MB after 10,000 passages while the free bytes held in the heap grew ~70 MB per shard (57 -> 414 MB
over six shards), all in the main arena (the per-thread arenas held under 1.2 MB each); with the oneDNN
route off the same growth showed. Details and the soak: docs/performance.md, "Memory over long runs".

`release()` hands the heap's free pages back to the operating system with glibc's `malloc_trim(0)`,
which also releases whole free pages inside the heap, not only at its top. The long-running loops call it
at shard boundaries: encoding after each shard is written, the shard-streamed searches after each shard
is scored. A call takes milliseconds; the pages it returns are faulted in again only when reused.
Serving the large buffers by mmap instead (MALLOC_MMAP_THRESHOLD_) also stops the growth, but faults
every buffer in afresh and ran 2.5x slower. `DUPMAE_EVAL_MEMORY_GUARD=0` turns `release()` off (the old
behaviour, for comparisons); where the C library is not glibc (macOS, musl) it does nothing.
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
