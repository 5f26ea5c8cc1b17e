"""Runs points of one study context: inline, or in ``workers`` spawned processes.

Each worker process rebuilds the context from the raw-result cache (:func:`context_for`),
pins its BLAS/OpenMP/numba threads (threadpoolctl) so workers do not oversubscribe the
cores, and keeps its own crash-isolating :class:`~compressors.CodecWorker`. The
counting-noise re-samplings are shared with helper processes built the same way
(:func:`resample_runner`), before the points' pool starts.
"""
from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import multiprocessing.util
import os
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from compressors import CodecSetting, CodecWorker
from lossbound.core.processes import pin_threads, spawn_context, stop_pool
from lossbound.core.types import PointResult
from lossbound.study.context import ContextSpec, StudyContext, context_for, raw_part
from lossbound.study.point import evaluate_point

log = logging.getLogger(__name__)

_STATE: dict[str, Any] = {}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _warm_up(worker: CodecWorker, ctx: StudyContext, settings: Sequence[CodecSetting], timeout) -> None:
    """Load each codec's plugin on one frame, so no measured point pays the plugin start-up."""
    frame = ctx.data.payload_array[:1]
    for setting in settings:
        try:
            # with the mask and geometry: a codec that models the frame builds its integrator here
            worker.roundtrip(frame, setting, valid=ctx.data.mask, geometry=ctx.data.meta.get("geometry"),
                             timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the real point reports it
            log.debug("warm-up of %s failed: %s", setting.label, exc)


def _init_worker(spec: ContextSpec, threads: int, isolate: bool, timeout, warm: list[dict]) -> None:
    pin_threads(threads)
    ctx = context_for(spec)
    worker = CodecWorker(isolate=isolate)
    # A pool worker ends through multiprocessing's exit function, which joins its children:
    # the codec process must be shut down first, by a finalizer that runs before that join.
    multiprocessing.util.Finalize(worker, worker.close, kwargs={"kill": True}, exitpriority=10)
    _warm_up(worker, ctx, [CodecSetting.from_dict(d) for d in warm], timeout)
    _STATE.update(ctx=ctx, worker=worker, timeout=timeout)


def _init_resample_worker(spec: ContextSpec, threads: int) -> None:
    pin_threads(threads)
    _STATE["raw_part"] = raw_part(spec)


def _resample_metrics(payload: np.ndarray) -> dict[str, float]:
    return _STATE["raw_part"].evaluate_payload(payload)


def resample_runner(spec: ContextSpec, *, workers: int, inline: Callable[[np.ndarray], dict[str, float]]
                    ) -> Callable[[Iterator[np.ndarray]], Iterator[dict[str, float]]]:
    """Share counting-noise re-samplings of ``spec``'s raw data between this process
    (``inline``) and ``workers - 1`` spawned helpers (each rebuilds the raw part of the context
    from the cache): payloads in, their metrics out, in order.

    Whoever is free takes the next payload: a feeder thread hands one to each helper as soon
    as it is idle while this process evaluates the others, so neither side waits for the other
    (choosing per payload left a helper idle while this process was busy, then this process
    idle waiting for the helper's last one). A helper takes seconds to start (Python, the
    dataset, the cached raw result, an integrator), which a short reference never wins back:
    at the end this process does not wait for a helper that has delivered nothing yet, it
    evaluates that payload itself. So a short reference costs what it costs in one process and
    a long one (thaumatin: 20 s per re-sampling) is shared. Payloads are drawn in order (the
    draw of payload i does not depend on who evaluates it) and the pipelines are
    deterministic: where a re-sampling ran does not change its metrics. At most ``workers + 1``
    payloads are in memory; BLAS/OpenMP threads are pinned here as in the helpers.
    """
    helpers = max(1, workers - 1)
    threads = max(1, available_cores() // workers)

    def run(payloads: Iterator[np.ndarray]) -> Iterator[dict[str, float]]:
        from threadpoolctl import threadpool_limits

        source, source_lock = enumerate(payloads), threading.Lock()

        def pull() -> tuple[int, np.ndarray] | None:
            with source_lock:
                return next(source, None)

        results: dict[int, dict[str, float]] = {}
        jobs: dict[int, tuple[concurrent.futures.Future, np.ndarray]] = {}
        idle, done = threading.Semaphore(helpers), threading.Event()
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=helpers, mp_context=spawn_context(),
                                                      initializer=_init_resample_worker, initargs=(spec, threads))

        def feed() -> None:  # a payload to each idle helper; only this thread submits
            while idle.acquire() and not done.is_set() and (item := pull()) is not None:
                i, payload = item
                try:
                    fut = pool.submit(_resample_metrics, payload)
                except BrokenProcessPool as exc:  # raised by submit: no future to collect
                    fut = concurrent.futures.Future()
                    fut.set_exception(exc)
                jobs[i] = (fut, payload)
                fut.add_done_callback(lambda _: idle.release())

        feeder = threading.Thread(target=feed, name="resample-feeder", daemon=True)
        here = 0
        try:
            with threadpool_limits(limits=threads):
                feeder.start()
                while (item := pull()) is not None:
                    results[item[0]] = inline(item[1])
                    here += 1
                done.set()
                idle.release()  # wake the feeder if it waits for a helper
                feeder.join()
                for j in sorted(jobs):
                    fut, payload = jobs[j]
                    delivered = any(f.done() and f.exception() is None for f, _ in jobs.values())
                    if not (fut.done() or delivered):  # a helper still starting: not worth waiting for
                        results[j] = inline(payload)
                        here += 1
                        continue
                    try:
                        results[j] = fut.result()
                    except BrokenProcessPool as exc:  # a helper died: this process does its share
                        log.warning("noise-reference helper process died (%s); continuing here", exc)
                        results[j] = inline(payload)
                        here += 1
        finally:
            done.set()
            idle.release()
            stop_pool(pool, kill=True)  # a helper still starting or duplicating work is not waited for
        log.info("counting-noise re-samplings: %d here, %d in %d helper process%s", here, len(results) - here,
                 helpers, "" if helpers == 1 else "es")
        for i in sorted(results):
            yield results[i]

    return run


def _evaluate(setting: dict, known_outputs: Mapping[str, str]) -> PointResult:
    return evaluate_point(_STATE["ctx"], CodecSetting.from_dict(setting), codec_worker=_STATE["worker"],
                          timeout=_STATE["timeout"], known_outputs=known_outputs)


class PointRunner:
    """Submit points, get futures of :class:`PointResult`.

    Parameters
    ----------
    ctx : StudyContext
        The context, already built in this process (its spec is sent to worker processes).
    workers : int
        1 evaluates in this process (when ``submit`` is called); more start that many
        spawned processes.
    isolate : bool
        Run codec round trips in a crash-isolating child process.
    timeout : float or None
        Seconds a codec round trip may take.
    warm : settings
        One setting per codec, run once per process on one frame before any point.
    """

    def __init__(self, ctx: StudyContext, *, workers: int = 1, isolate: bool = True,
                 timeout: float | None = None, warm: Sequence[CodecSetting] = ()) -> None:
        self.ctx = ctx
        self.workers = max(1, int(workers))
        self.isolate = isolate
        self.timeout = timeout
        self.warm = list(warm)
        self.threads = max(1, available_cores() // self.workers)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._inline: CodecWorker | None = None
        self.restarts = 0

    def __enter__(self) -> "PointRunner":
        if self.workers == 1:
            self._inline = CodecWorker(isolate=self.isolate)
            _warm_up(self._inline, self.ctx, self.warm, self.timeout)
        else:
            self._start_pool()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._inline is not None:
            self._inline.close(kill=exc_type is not None)
        if self._pool is not None:
            self._pool.shutdown(wait=exc_type is None, cancel_futures=True)

    def _start_pool(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=spawn_context(),
            initializer=_init_worker,
            initargs=(self.ctx.spec, self.threads, self.isolate, self.timeout, [s.as_dict() for s in self.warm]),
        )

    def restart(self) -> None:
        """After a worker process died: a fresh pool (its in-flight points were failed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        self._start_pool()

    def submit(self, setting: CodecSetting, *, known_outputs: Mapping[str, str] | None = None
               ) -> concurrent.futures.Future:
        """``known_outputs``: :func:`~lossbound.study.point.evaluate_point`'s."""
        known = dict(known_outputs or {})
        if self._pool is None:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            fut.set_result(evaluate_point(self.ctx, setting, codec_worker=self._inline, timeout=self.timeout,
                                          known_outputs=known))
            return fut
        try:
            return self._pool.submit(_evaluate, setting.as_dict(), known)
        except BrokenProcessPool:
            self.restart()
            return self._pool.submit(_evaluate, setting.as_dict(), known)


def is_broken_pool(exc: BaseException | None) -> bool:
    return isinstance(exc, BrokenProcessPool)
