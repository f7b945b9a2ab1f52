"""Wall-clock timing shared by every evaluation: best of a few repeats after a warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls of `fn`, in seconds, after one untimed warm-up call.
    `fn` must synchronise any device work it starts (e.g. by returning tensors on the CPU)."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
