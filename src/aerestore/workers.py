"""Independent calls run in worker processes, with exactly the serial loop's results.

BM3D (the ``bm3d`` package's C library) runs on one thread, and most of its time on a small
image is a fixed cost per call (the hard-thresholding stage: ~0.27 s per colour channel
whatever the size), so the evaluate stage's BM3D rows gain nothing from a bigger image or more
threads, only from running several calls at once. :func:`run_all` does that: each call
``fn(*args)`` in a pool of worker processes, the results in the order given, the same numbers
as ``[fn(*a) for a in args]`` (the same code on the same inputs in another process;
``tests/test_classical.py`` checks bit for bit).

The pool's size defaults to the current thread setting (:func:`default_workers`: torch's
thread count, which the stages set from ``runtime.threads``, 0 = every core). Workers are
started with ``spawn``, as forking a process whose torch and OpenVINO threads are running is
unsafe; each worker limits itself to one BLAS thread, and runs its own calls serially (no pool
inside a worker). The pool is started once, on first use, and kept for the next calls (a
worker's start imports numpy, scipy and the restorers: ~2 s).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["default_workers", "run_all", "shutdown"]

_IN_WORKER = False
_POOL: tuple[int, ProcessPoolExecutor] | None = None


def _in_child() -> bool:
    """Inside a worker, or in a process that multiprocessing started (e.g. a spawned worker
    importing a main module that runs restorers at import, without ``if __name__ ==
    "__main__"``: a pool started there would fail)."""
    import multiprocessing

    return _IN_WORKER or multiprocessing.parent_process() is not None


def default_workers() -> int:
    """The processes :func:`run_all` uses unless told: torch's thread count where torch is
    loaded (the stages set it from ``runtime.threads``), else 1 (serial); 1 inside a worker."""
    if _in_child():
        return 1
    torch = sys.modules.get("torch")
    return max(1, int(torch.get_num_threads())) if torch is not None else 1


def _exit_with_parent() -> None:
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()  # returns when the parent has gone (killed: the pool's queues never close)
        os._exit(1)


def _init_worker() -> None:
    global _IN_WORKER
    _IN_WORKER = True
    import threading

    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # for libraries loaded from now on
    try:  # those already loaded (the spawned process imports the parent's main module first)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - scikit-learn, a dependency, brings it
        pass


def _pool(workers: int) -> ProcessPoolExecutor:
    global _POOL
    if _POOL is not None and _POOL[0] != workers:
        shutdown()
    if _POOL is None:
        import multiprocessing

        _POOL = (workers, ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_init_worker))
    return _POOL[1]


def shutdown() -> None:
    """Stop the pool's workers (a later :func:`run_all` starts new ones)."""
    global _POOL
    if _POOL is not None:
        _POOL[1].shutdown(wait=True, cancel_futures=True)
        _POOL = None


def run_all(fn: Callable[..., Any], args: Sequence[tuple], workers: int | None = None) -> list[Any]:
    """``[fn(*a) for a in args]``, the calls spread over ``workers`` processes (None:
    :func:`default_workers`; 0: every core). Serial, in this process, for a single call, one
    worker, or inside a worker. ``fn`` and the arguments must pickle (a module-level function
    or a :func:`functools.partial` of one). The first call that raises raises here."""
    n = default_workers() if workers is None else (workers or os.cpu_count() or 1)
    if n <= 1 or len(args) <= 1 or _in_child():
        return [fn(*a) for a in args]
    pool = _pool(n)
    try:
        futures = [pool.submit(fn, *a) for a in args]
        return [f.result() for f in futures]
    except BrokenProcessPool:  # a worker died (e.g. killed): the next call starts a new pool
        shutdown()
        raise
