"""Crash isolation: run codecs in a reusable child process.

Some C codecs kill their host on bad input (SZ ``pointwise_relative`` calls ``exit(0)`` on
integers, SPERR segfaults). :class:`CodecWorker` runs round trips in a single spawned worker
process that is reused across calls; when it dies or times out the call raises
:class:`CodecCrash` and the next call transparently starts a fresh worker.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import os
import shutil
import signal
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, TypeVar

import numpy as np

from lossbound.core.processes import spawn_context, stop_pool

from .hdf5 import RoundTrip, roundtrip
from .specs import CodecSetting

__all__ = ["CodecCrash", "CodecWorker"]

T = TypeVar("T")


class CodecCrash(RuntimeError):
    """The worker process died or timed out while running a codec."""


def _warm_up() -> None:
    # Throughput is reported per single thread: pin the thread pools of filters that have
    # them (Blosc2, OpenMP builds) before the plugins load.
    for var in ("OMP_NUM_THREADS", "BLOSC_NTHREADS"):
        os.environ[var] = "1"
    # Import the HDF5 stack once per worker so the first round trip is not charged for it.
    import h5py  # noqa: F401
    import hdf5plugin  # noqa: F401


_KEPT: dict[str, np.ndarray] = {}


def _keep_payload(data: np.ndarray, valid: np.ndarray | None = None, geometry: Any = None) -> None:
    _KEPT["payload"] = data
    _KEPT["valid"] = valid
    _KEPT["geometry"] = geometry


class _NoPayload(RuntimeError):
    """The worker process holds no payload (it is not the one that was sent it)."""


def _roundtrip_kept(setting: CodecSetting, out: str | None = None) -> RoundTrip:
    """The round trip of the kept payload; with ``out``, the decompressed array is written
    there (a file in shared memory) instead of coming back through the pipe, which costs
    ~4 ms per MB (0.8 s for 8 stills of 6 Mpx) against ~1 ms for the file."""
    if "payload" not in _KEPT:
        raise _NoPayload()
    rt = roundtrip(_KEPT["payload"], setting, valid=_KEPT.get("valid"), geometry=_KEPT.get("geometry"))
    if out is not None:
        try:
            np.save(out, rt.decompressed, allow_pickle=False)
        except OSError:  # shared memory full: the pipe still works
            with contextlib.suppress(OSError):
                os.remove(out)
            return rt
        rt = dataclasses.replace(rt, decompressed=None)
    return rt


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process died (exit status unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process killed by {name}"
    if exitcode == 0:
        return "worker process exited with status 0 (a C library called exit())"
    return f"worker process exited with status {exitcode}"


def _exitcode(procs: list[Any], *, wait_s: float = 5.0) -> int | None:
    """Exit status of the first dead worker.

    The pool's manager thread reaps the same child; when both threads call waitpid the
    loser briefly sees ``exitcode None``, so poll until the winner has stored it.
    """
    deadline = time.monotonic() + wait_s
    while True:
        for proc in procs:
            proc.join(timeout=0.05)
            if proc.exitcode is not None:
                return proc.exitcode
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _remove_orphaned_return_dirs() -> None:
    """Remove the shared-memory folders of processes that no longer run (killed before they
    could clean up: the folder may hold a whole decompressed payload, in RAM)."""
    for path in glob.glob("/dev/shm/lossbound-codec-*-*"):
        pid = os.path.basename(path).split("-")[2]
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        shutil.rmtree(path, ignore_errors=True)


class CodecWorker:
    """Runs callables (normally :func:`roundtrip`) in one reusable spawned process.

    Parameters
    ----------
    isolate : bool
        False runs everything inline in this process (same API, no crash protection).
    timeout : float or None
        Default per-call timeout in seconds; None waits forever.

    Examples
    --------
    >>> with CodecWorker() as worker:                       # doctest: +SKIP
    ...     rt = worker.roundtrip(frames, setting, timeout=60)
    """

    def __init__(self, *, isolate: bool = True, timeout: float | None = None) -> None:
        self.isolate = isolate
        self.timeout = timeout
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._payload_key: tuple | None = None  # what the current worker process holds
        self.restarts = 0  # worker processes replaced after a crash or timeout
        self._return_dir: str | None = None  # where the worker leaves decompressed arrays

    def _return_path(self) -> str | None:
        """A file in shared memory (``/dev/shm``) for the next decompressed array, or None
        (through the pipe) where there is none."""
        if self._return_dir is None:
            if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
                return None
            _remove_orphaned_return_dirs()
            self._return_dir = tempfile.mkdtemp(prefix=f"lossbound-codec-{os.getpid()}-", dir="/dev/shm")
        return os.path.join(self._return_dir, "decompressed.npy")

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> CodecWorker:
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        # On an error (e.g. Ctrl-C) do not wait for a codec call that may run for minutes.
        self.close(kill=exc_type is not None)

    def close(self, *, kill: bool = False) -> None:
        """Shut the worker process down (a later call starts a new one).

        Parameters
        ----------
        kill : bool
            Kill a worker that is still busy instead of waiting for it.
        """
        try:
            if kill:
                self._discard_pool(kill=True, count=False)
                return
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if self._return_dir is not None:
                shutil.rmtree(self._return_dir, ignore_errors=True)
                self._return_dir = None

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=spawn_context(),
                initializer=_warm_up,
            )
        return self._pool

    def _discard_pool(self, *, kill: bool, count: bool = True) -> list[Any]:
        """Drop the current pool; return its worker processes (killed if ``kill``)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return []
        procs = stop_pool(pool, kill=kill)
        self.restarts += count
        return procs

    # -- calls ---------------------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, label: str | None = None) -> T:
        """Run ``fn(*args)`` in the worker and return its result.

        Parameters
        ----------
        fn : callable
            A picklable (module-level) callable.
        *args
            Picklable arguments.
        timeout : float or None
            Seconds to wait; defaults to the worker's ``timeout``. Ignored when not isolated.
        label : str or None
            Name used in crash messages (defaults to the callable's name).

        Raises
        ------
        CodecCrash
            The worker died (signal, ``exit()``) or timed out; the next call uses a fresh worker.
        Exception
            Whatever Python exception ``fn`` raised, unchanged.
        """
        if not self.isolate:
            return fn(*args)
        timeout = self.timeout if timeout is None else timeout
        label = label or getattr(fn, "__qualname__", repr(fn))
        pool = self._ensure_pool()
        try:
            future = pool.submit(fn, *args)
        except BrokenProcessPool:
            # The pool broke after its last call (e.g. killed from outside): retry once, fresh.
            self._discard_pool(kill=True)
            future = self._ensure_pool().submit(fn, *args)
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self._discard_pool(kill=True)
            raise CodecCrash(f"{label}: timed out after {timeout:g} s; worker process killed") from None
        except BrokenProcessPool:
            self._discard_pool(kill=True)
            raise CodecCrash(f"{label}: {_describe_exit(_exitcode(procs))}") from None

    def roundtrip(self, data: np.ndarray, setting: CodecSetting, *, valid: np.ndarray | None = None,
                  geometry: Any = None, timeout: float | None = None) -> RoundTrip:
        """:func:`lossbound.codecs.hdf5.roundtrip` (with the ``valid`` pixel mask and detector
        ``geometry``) in the worker.

        The setting is validated here first, so refused settings raise ConfigError without
        shipping the data or touching the codec.
        """
        data = np.asarray(data)
        setting.validate(data.dtype, has_geometry=geometry is not None)
        if not self.isolate:
            return roundtrip(data, setting, valid=valid, geometry=geometry)
        # The worker keeps the last array it was sent: a study compresses one payload with
        # many settings, so it is shipped once, not once per point.
        sample = data.reshape(-1)[:: max(1, data.size // 4096)]
        key = (id(data), data.__array_interface__["data"][0], data.shape, data.dtype.str,
               hashlib.blake2b(sample.tobytes(), digest_size=16).hexdigest(),
               None if valid is None else hashlib.blake2b(np.packbits(valid).tobytes(), digest_size=16).hexdigest(),
               None if geometry is None else repr(sorted(dict(geometry).items())))
        for attempt in range(2):
            if self._payload_key != (key, self._pool):
                self.call(_keep_payload, data, valid, None if geometry is None else dict(geometry), timeout=timeout,
                          label=setting.label)
                self._payload_key = (key, self._pool)
            out = self._return_path()
            try:
                rt = self.call(_roundtrip_kept, setting, out, timeout=timeout, label=setting.label)
            except _NoPayload:  # a fresh worker replaced the one that held it
                self._payload_key = None
                continue
            if rt.decompressed is None:
                try:
                    rt = dataclasses.replace(rt, decompressed=np.load(out, allow_pickle=False))
                finally:
                    os.remove(out)
            return rt
        raise CodecCrash(f"{setting.label}: the codec worker lost its data twice")
