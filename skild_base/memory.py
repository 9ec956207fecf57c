"""Keep freed memory in the process instead of returning it to the kernel after every large tensor.

glibc's malloc serves allocations above a threshold (at most 32 MiB, adjusted at run time) with
fresh mmap'd pages and unmaps them on free; the network's activations on a 128 × 128 lattice are
larger than that, so every convolution maps, page-faults in and unmaps tens of megabytes. On 2
cores that kernel work took half the wall time of `superres` at L = 128
(docs/scaling.md, "Allocator"). Raising the mmap and trim thresholds makes malloc reuse its heap:
results are bit-identical, the process keeps its peak memory until it exits.

SKILD_PHYS_KEEP_FREED_MEMORY=0 in the environment leaves malloc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # bytes: allocations below 1 GiB come from the heap, which is not trimmed below this


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if applied (False elsewhere or opted out)."""
    if os.environ.get("SKILD_PHYS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
