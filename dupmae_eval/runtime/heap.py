"""How a training process gives freed tensor memory back to the system, one registry entry per policy.

Why this matters on a CPU: PyTorch takes CPU tensors from the C library's malloc. glibc serves a request of
at least its mmap threshold with a mapping of its own (unmapped on free) and a smaller one from its heap, and
it raises that threshold, up to 32 MiB, each time a mapped block is freed. A BERT-base step at 16 x 256
tokens frees activations of 12 MiB (16 x 256 x 768 floats) within its first layers, so from then on such
tensors come from the heap. Freed heap memory stays resident and fragments: the step's resident high-water
mark exceeds its live tensors by 0.7 to 1.3 GB and moves by about 200 MB between identical runs
(docs/performance.md, "One pre-training step", measures it). Fixing the threshold (`release`) gives every
tensor of 64 KiB or more a mapping of its own, returned on free, so the process's memory follows its live
tensors; smaller objects (Python's, the tokenizer's) still come from the heap.

The price is that every page of a new large tensor is faulted in and zeroed by the kernel again: at
splade-tiny size (the CPU recipes' model, 32 x 256 tokens) a pre-training step takes 1.08-1.12x the time for
0.83-0.86x the memory; at BERT-base size with `--recompute layers`, 0.68-0.78x the memory and a slower step
(docs/performance.md). So the default stays `glibc` (the C library as it is) and `release` is for runs that
memory bounds. Other C libraries (musl, macOS) have no such threshold: there every policy is the library's
own behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from dataclasses import dataclass
from typing import Optional

from dupmae_eval.registry import Registry

_M_MMAP_THRESHOLD = -3      # glibc's mallopt parameter (malloc.h); setting it also ends the dynamic threshold


@dataclass(frozen=True)
class Heap:
    """A malloc policy: the size from which an allocation gets its own mapping (None: the library's default)."""

    name: str
    mmap_threshold: Optional[int]
    summary: str


HEAPS: Registry = Registry("heap policy")
for _heap in (
        Heap("glibc", None, "the C library's default (a threshold that rises to 32 MiB: freed activations "
                            "stay resident in the heap)"),
        Heap("release", 64 * 1024, "allocations of 64 KiB or more get their own mapping and go back to the "
                                   "system when freed (resident memory follows the live tensors)")):
    HEAPS.register(_heap)


def _glibc():
    """The process's glibc, or None under another C library."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def use_heap(name: str) -> bool:
    """Apply policy `name` (`HEAPS`) to this process from now on; True when it changed malloc's behaviour."""
    entry = HEAPS.lookup(name)
    if entry.mmap_threshold is None:
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(entry.mmap_threshold)))
