"""Runs the work of one study context: inline, or in a :class:`WorkerPool` of spawned processes.

Each pool process rebuilds the context from the raw-result cache (:func:`context_for`), pins
its BLAS/OpenMP/numba threads (threadpoolctl) so processes do not oversubscribe the cores,
and keeps its own crash-isolating :class:`~lossbound.codecs.CodecWorker`. The same processes share
the counting-noise re-samplings (:meth:`WorkerPool.resampler`) and then evaluate the points
(:class:`PointRunner`): each starts once per study.
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

from lossbound.codecs import CodecSetting, CodecWorker
from lossbound.core.processes import pin_threads, spawn_context
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
            worker.roundtrip(frame, setting, valid=ctx.data.mask, geometry=ctx.data.geometry,
                             timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the real point reports it
            log.debug("warm-up of %s failed: %s", setting.label, exc)


def _init_worker(spec: ContextSpec, threads: int, isolate: bool, timeout) -> None:
    pin_threads(threads)
    raw_part(spec)  # what a re-sampling needs; a point's context is completed on its first point
    worker = CodecWorker(isolate=isolate)
    # A pool worker ends through multiprocessing's exit function, which joins its children:
    # the codec process must be shut down first, by a finalizer that runs before that join.
    multiprocessing.util.Finalize(worker, worker.close, kwargs={"kill": True}, exitpriority=10)
    _STATE.update(spec=spec, worker=worker, timeout=timeout, warm=set())


def _ready() -> None:
    """Nothing: submitted to start a pool process (its initializer does the work)."""


def _resample_metrics(payload: np.ndarray) -> dict[str, float]:
    return raw_part(_STATE["spec"]).evaluate_payload(payload)


def _evaluate(setting: dict, known_outputs: Mapping[str, str]) -> PointResult:
    ctx = context_for(_STATE["spec"])  # built here once: the raw part is, the noise reference is cached
    setting = CodecSetting.from_dict(setting)
    if setting.codec not in _STATE["warm"]:
        _warm_up(_STATE["worker"], ctx, [setting], _STATE["timeout"])
        _STATE["warm"].add(setting.codec)
    return evaluate_point(ctx, setting, codec_worker=_STATE["worker"], timeout=_STATE["timeout"],
                          known_outputs=known_outputs)


class WorkerPool:
    """``workers`` spawned processes for one study context: they share its counting-noise
    re-samplings (:meth:`resampler`), then evaluate its points (:class:`PointRunner`).

    Each process starts once per study (Python, the dataset, the raw result from the cache)
    and serves both phases, so the points need no second start-up. Processes start as work
    arrives; BLAS/OpenMP/numba threads are pinned to ``cores // workers`` in each.

    Parameters
    ----------
    spec : ContextSpec
        The context each process rebuilds from the raw-result cache.
    workers : int
        Processes (>= 1).
    isolate : bool
        Run codec round trips in a crash-isolating child of each process.
    timeout : float or None
        Seconds a codec round trip may take.
    """

    def __init__(self, spec: ContextSpec, *, workers: int, isolate: bool = True, timeout: float | None = None
                 ) -> None:
        self.spec = spec
        self.workers = max(1, int(workers))
        self.isolate = isolate
        self.timeout = timeout
        self.threads = max(1, available_cores() // self.workers)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self.restarts = 0

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(wait=exc_type is None)

    @property
    def executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            # Small arguments only: a spawned child reads them once Python has started, and
            # arguments larger than the pipe's buffer would hold this process until then.
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=spawn_context(), initializer=_init_worker,
                initargs=(self.spec, self.threads, self.isolate, self.timeout))
        return self._executor

    def submit(self, fn: Callable, *args: Any) -> concurrent.futures.Future:
        """``fn(*args)`` in a pool process; a pool broken before the call gives a future holding
        that error (as one broken during it does)."""
        try:
            return self.executor.submit(fn, *args)
        except BrokenProcessPool as exc:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            fut.set_exception(exc)
            return fut

    def start(self) -> None:
        """Start every process now (each loads the data while this process works)."""
        for _ in range(self.workers - len(getattr(self.executor, "_processes", None) or ())):
            self.submit(_ready)

    def restart(self) -> None:
        """After a process died: a fresh pool (the calls in flight were lost with it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self.restarts += 1

    def close(self, *, wait: bool = True) -> None:
        """Shut the processes down (queued calls cancelled); without ``wait``, a busy one
        ends after its current call, unwaited for (after an error or an interrupt)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def resampler(self, inline: Callable[[np.ndarray], dict[str, float]]
                  ) -> Callable[[Iterator[np.ndarray]], Iterator[dict[str, float]]]:
        """Share counting-noise re-samplings between this process (``inline``) and the pool:
        payloads in, their metrics out, in order.

        Every pool process starts at once and loads the data while this process evaluates
        the first payload; then whoever is free takes the next one: a feeder thread hands one
        to an idle process while this process evaluates the others, so neither side waits for
        the other. ``workers - 1`` processes evaluate at a time besides this one (one per
        core); the others only start, for the points that follow, so their start-up is paid
        once. A short reference (tiny data) is over before a process has started: at the end
        this process does not wait for one that has delivered nothing, it evaluates that
        payload itself (a call already sent to a process still runs there, before its first
        point). Payloads are drawn in order (the draw of payload i does not depend on who
        evaluates it) and the pipelines are deterministic: where a re-sampling ran does not
        change its metrics. Payloads sent to the pool stay in memory until the end (one may be
        taken back); BLAS/OpenMP threads are pinned here as in the pool.
        """
        in_pool = max(1, self.workers - 1)

        def run(payloads: Iterator[np.ndarray]) -> Iterator[dict[str, float]]:
            from threadpoolctl import threadpool_limits

            self.start()
            source, source_lock = enumerate(payloads), threading.Lock()

            def pull() -> tuple[int, np.ndarray] | None:
                with source_lock:
                    return next(source, None)

            results: dict[int, dict[str, float]] = {}
            jobs: dict[int, tuple[concurrent.futures.Future, np.ndarray]] = {}
            idle, done = threading.Semaphore(in_pool), threading.Event()
            feed_errors: list[BaseException] = []

            def feed() -> None:  # a payload to each idle process; only this thread submits
                try:
                    while idle.acquire() and not done.is_set() and (item := pull()) is not None:
                        i, payload = item
                        fut = self.submit(_resample_metrics, payload)
                        jobs[i] = (fut, payload)
                        fut.add_done_callback(lambda _: idle.release())
                except BaseException as exc:  # noqa: BLE001 - re-raised in the study process
                    feed_errors.append(exc)

            def delivered(fut: concurrent.futures.Future) -> bool:
                return fut.done() and not fut.cancelled() and fut.exception() is None

            feeder = threading.Thread(target=feed, name="resample-feeder", daemon=True)
            here = 0
            try:
                with threadpool_limits(limits=self.threads):
                    feeder.start()
                    while (item := pull()) is not None:
                        results[item[0]] = inline(item[1])
                        here += 1
                    done.set()
                    idle.release()  # wake the feeder if it waits for a process
                    feeder.join()
                    if feed_errors:  # drawing a payload failed there: no reference from fewer
                        raise feed_errors[0]
                    for j in sorted(jobs):
                        fut, payload = jobs[j]
                        if not fut.done() and not any(delivered(f) for f, _ in jobs.values()):
                            # the pool still starting: not worth waiting for
                            fut.cancel()
                            results[j] = inline(payload)
                            here += 1
                            continue
                        try:
                            results[j] = fut.result()
                        except BrokenProcessPool as exc:  # a process died: this one does its share
                            log.warning("noise-reference worker process died (%s); continuing here", exc)
                            self.restart()
                            results[j] = inline(payload)
                            here += 1
            finally:
                done.set()
                idle.release()
            log.info("counting-noise re-samplings: %d here, %d in %d worker process%s", here, len(results) - here,
                     self.workers, "" if self.workers == 1 else "es")
            for i in sorted(results):
                yield results[i]

        return run


class PointRunner:
    """Submit points, get futures of :class:`PointResult`.

    Parameters
    ----------
    ctx : StudyContext
        The context, already built in this process.
    pool : WorkerPool, optional
        Evaluate in the pool's processes (each rebuilds the context from the cache); None
        evaluates here, when ``submit`` is called.
    isolate, timeout
        Without a pool: run codec round trips in a crash-isolating child process, with this
        many seconds each (a pool has its own).
    """

    def __init__(self, ctx: StudyContext, *, pool: WorkerPool | None = None, isolate: bool = True,
                 timeout: float | None = None) -> None:
        self.ctx = ctx
        self.pool = pool
        self.workers = pool.workers if pool is not None else 1
        self.isolate = isolate
        self.timeout = timeout
        self._inline: CodecWorker | None = None
        self._warm: set[str] = set()

    def __enter__(self) -> "PointRunner":
        if self.pool is None:
            self._inline = CodecWorker(isolate=self.isolate)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._inline is not None:  # a pool is closed by its owner
            self._inline.close(kill=exc_type is not None)

    def restart(self) -> None:
        """After a worker process died: a fresh pool (its in-flight points were failed)."""
        if self.pool is not None:
            self.pool.restart()

    def submit(self, setting: CodecSetting, *, known_outputs: Mapping[str, str] | None = None
               ) -> concurrent.futures.Future:
        """``known_outputs``: :func:`~lossbound.study.point.evaluate_point`'s. Each process
        runs a codec once on one frame before its first point with it, so no measured point
        pays the plugin's start-up."""
        known = dict(known_outputs or {})
        if self.pool is not None:
            return self.pool.submit(_evaluate, setting.as_dict(), known)
        if setting.codec not in self._warm:
            _warm_up(self._inline, self.ctx, [setting], self.timeout)
            self._warm.add(setting.codec)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(evaluate_point(self.ctx, setting, codec_worker=self._inline, timeout=self.timeout,
                                      known_outputs=known))
        return fut


def is_broken_pool(exc: BaseException | None) -> bool:
    return isinstance(exc, BrokenProcessPool)
