"""Child processes that start the same way wherever we run."""
from __future__ import annotations

import concurrent.futures
import multiprocessing
from multiprocessing.context import SpawnContext
from typing import Any

__all__ = ["pin_threads", "spawn_context", "stop_pool"]


def spawn_context() -> SpawnContext:
    """The 'spawn' multiprocessing context, safe inside a joblib (loky) worker.

    A process started by joblib's loky backend records 'loky' as its start method, and a
    child spawned from it then fails with "cannot find context for 'loky'"; resetting the
    start method to 'spawn' first avoids that. 'spawn', not 'fork': a forked child would
    inherit HDF5 library state and locks.
    """
    if multiprocessing.get_start_method(allow_none=True) not in (None, "spawn", "fork", "forkserver"):
        multiprocessing.set_start_method("spawn", force=True)
    return multiprocessing.get_context("spawn")


def pin_threads(threads: int) -> None:
    """Limit this process's BLAS/OpenMP pools (threadpoolctl) and numba to ``threads``, so
    worker processes side by side do not oversubscribe the cores (for the process's life)."""
    from threadpoolctl import threadpool_limits

    _PINNED.append(threadpool_limits(limits=threads))  # kept: the limit lasts while referenced
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba comes with algotom
        pass


_PINNED: list = []


def stop_pool(pool: concurrent.futures.ProcessPoolExecutor, *, kill: bool) -> list[Any]:
    """Shut ``pool`` down without waiting for its queued calls; with ``kill``, its busy
    processes are killed rather than allowed to finish. Returns the processes (joined)."""
    # ProcessPoolExecutor has no public handle on its workers before Python 3.14.
    procs = list((getattr(pool, "_processes", None) or {}).values())
    if kill:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.join(timeout=5)
    return procs
