"""Keeping freed memory in the process: glibc's malloc settings for repeated force calls.

Every force call of a MACE model allocates and frees the same large tensors (hundreds of MB at
a few thousand atoms). glibc serves allocations above its mmap threshold with fresh mmap'd
pages and returns freed memory at the top of the heap to the operating system, so each call
faults all of it back in, page by page (about 50 000 minor page faults per step at 864 atoms).
`keep_freed_memory()` turns both off: large allocations come from the heap (M_MMAP_MAX = 0) and
the heap is never trimmed (M_TRIM_THRESHOLD = -1), so freed memory is reused by the next call.
The price: the process keeps its peak heap size until it exits.

The setting is process-wide. mdmonitor makes it only in processes it owns: the `mdmonitor md`
and `mdmonitor demo` commands and pair_style mdmonitor in LAMMPS (lammps_plugin/freed_memory.h,
same parameters); a Python user opts in by calling `keep_freed_memory()`. The environment variable
MDMONITOR_KEEP_FREED_MEMORY=0 turns it off everywhere.
"""

from __future__ import annotations

import ctypes
import os

SWITCH = "MDMONITOR_KEEP_FREED_MEMORY"
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def switched_off() -> bool:
    """Whether MDMONITOR_KEEP_FREED_MEMORY=0 asks mdmonitor to leave malloc as it is."""
    return os.environ.get(SWITCH) == "0"


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in this process (module docstring): True if set,
    False without glibc (nothing to do there) or with MDMONITOR_KEEP_FREED_MEMORY=0."""
    if switched_off():
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
