"""Keep freed CPU memory inside the process, so large tensors are not page-faulted anew on every call.

On Linux, glibc's malloc serves large allocations with fresh ``mmap`` pages and hands freed memory back to the
operating system. A network allocates the same large activations on every call, so each call pays the page faults
of touching them again: 7-28 % of a keypoint transfer on the CPU of docs/benchmarks.md. `keep_freed_memory` raises
glibc's two thresholds so that freed blocks are reused from call to call (what the jemalloc and tcmalloc
allocators do, which PyTorch's CPU tuning guide suggests preloading). The peak memory stays the same; what changes
is that the process no longer shrinks back between calls. `mmnet`'s command lines turn it on for their own process
unless MMNET_KEEP_FREED_MEMORY=0.

No torch import: the command line calls it before loading anything heavy.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from .checks import check_int

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest mmap threshold that glibc versions capping it accept on 64-bit systems (HEAP_MAX_SIZE / 2).
_CLASSIC_MMAP_CAP_MIB = 32


def keep_freed_memory(mmap_threshold_mib: int = 256, trim_threshold_mib: int = 1024) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the operating system.

    Allocations up to `mmap_threshold_mib` come from malloc's heap instead of their own ``mmap`` (glibc versions
    that cap this threshold get their cap, 32 MiB), and up to `trim_threshold_mib` of free memory at the top of
    the heap is kept. Process-wide and not undoable; call it once, early. Returns True when applied, False where
    the C library is not glibc (macOS, Windows, musl-based Linux): nothing changes there.
    """
    check_int("mmap_threshold_mib", mmap_threshold_mib, min=1, max=2047)
    check_int("trim_threshold_mib", trim_threshold_mib, min=1, max=2047)
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, mmap_threshold_mib << 20) or mallopt(
        _M_MMAP_THRESHOLD, min(mmap_threshold_mib, _CLASSIC_MMAP_CAP_MIB) << 20
    )
    return bool(applied and mallopt(_M_TRIM_THRESHOLD, trim_threshold_mib << 20))


def command_line_default() -> bool:
    """What `mmnet` and `mmnet.train.cli.main` do first: `keep_freed_memory()` unless MMNET_KEEP_FREED_MEMORY=0."""
    return os.environ.get("MMNET_KEEP_FREED_MEMORY", "1") != "0" and keep_freed_memory()
