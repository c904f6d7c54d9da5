"""Whether glibc's malloc keeps freed memory in a process (mdmonitor.common.freed_memory), seen
from inside it: Python code that a test runs in a fresh process after the code under test,
printing what malloc did with a 64 MiB block allocated, written and freed three times."""

import json
import subprocess
import sys

BLOCK = 64 << 20  # bytes: above glibc's largest dynamic mmap threshold (32 MiB)

PROBE = f"""
import ctypes, json, resource

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
libc.mallinfo2.restype = MallInfo2
faults, mmapped = [], []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    mmapped_before = libc.mallinfo2().hblkhd
    block = libc.malloc({BLOCK})
    libc.memset(block, 1, {BLOCK})
    mmapped.append(libc.mallinfo2().hblkhd - mmapped_before)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print("PROBE", json.dumps({{"mmapped": mmapped, "faults": faults,
                           "heap_after_free": libc.mallinfo2().arena}}))
"""


def probe(setup: str, env: dict | None = None) -> dict:
    """Run `setup` (Python code) and then the probe in a new interpreter; the probe's findings:
    mmapped (bytes of mmap'd chunks added by the block), faults (minor page faults of each
    round), heap_after_free (bytes of heap after the last free), and the process's stdout."""
    done = subprocess.run([sys.executable, "-c", setup + "\n" + PROBE], capture_output=True,
                          text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"probe process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    return {**json.loads(line.removeprefix("PROBE ")), "stdout": done.stdout}


def keeps_freed_memory(found: dict) -> bool:
    """True if malloc served the block from its heap and reused it without page faults; False
    if it mmap'd it afresh each time (glibc's default for 64 MiB); AssertionError otherwise."""
    pages = BLOCK // 4096
    if max(found["mmapped"]) == 0:
        assert found["heap_after_free"] >= BLOCK, found  # not trimmed
        assert sum(found["faults"][1:]) < pages // 20, found  # the block's pages were kept
        return True
    assert min(found["mmapped"]) >= BLOCK, found
    return False
