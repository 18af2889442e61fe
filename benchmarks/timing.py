"""Shared measurement for the benchmark scripts: median wall time and peak memory of a callable."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch


def measure(work: Callable[[], object], repeats: int, device: str) -> tuple[float, float]:
    """Run `work` `repeats` times (after the caller's warm-up) -> (median ms, peak MiB).

    Peak memory is torch's peak allocation on CUDA, else the growth of the process's peak RSS over its RSS
    before the first timed run.
    """
    cuda = device.startswith("cuda")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return statistics.median(times), peak
