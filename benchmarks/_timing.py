"""Timing helpers shared by the benchmarks: peers measured in turns in one process, medians compared."""

from __future__ import annotations

import statistics
import time


def median_interleaved(fns: dict, reps: int) -> dict:
    """Median wall time of each callable after one warm-up call each; the callables take turns in
    every repetition, so a change in machine load hits all of them alike."""
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (caches, lazy loads, kernels)
        fn()
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
