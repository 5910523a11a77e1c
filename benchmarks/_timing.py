"""Timing helpers shared by the benchmarks: peers measured in turns in one process, medians compared."""

from __future__ import annotations

import statistics
import time


def interleaved(fns: dict, reps: int, clock=time.perf_counter) -> dict[str, list[float]]:
    """Wall times of each callable over ``reps`` repetitions, after one warm-up call each; the callables
    take turns in every repetition (alternating order), so a change in machine load hits all of them alike.
    ``clock=time.process_time`` counts the process's CPU seconds instead (all its threads): steadier than
    wall time on a machine whose cores other jobs share."""
    times = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (caches, lazy loads, kernels)
        fn()
    for rep in range(reps):
        for k, fn in (fns.items() if rep % 2 == 0 else reversed(fns.items())):
            t = clock()
            fn()
            times[k].append(clock() - t)
    return times


def median_interleaved(fns: dict, reps: int) -> dict:
    """Median wall time of each callable (``interleaved``)."""
    return {k: statistics.median(v) for k, v in interleaved(fns, reps).items()}


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """(median, min, max) of the per-repetition ratios ``num / den`` (each pair timed back to back)."""
    ratios = sorted(a / b for a, b in zip(times[num], times[den]))
    return statistics.median(ratios), ratios[0], ratios[-1]
