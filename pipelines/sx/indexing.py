"""Indexing stills with a known cell through the cctbx worker process.

:class:`Indexer` starts ``index_worker.py`` once per process (cctbx import ~1 s) and sends
it one frame's spots at a time; a worker that dies is restarted and the frame retried once;
a frame it dies on twice is reported as not indexed, with the worker's last error line.
:func:`detector_plane` turns a pyFAI geometry into the flat-detector description the worker
needs.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import ConfigError
from lossbound.diffraction.lattice import DetectorPlane

log = logging.getLogger(__name__)

__all__ = ["Indexer", "cctbx_available", "detector_plane", "indexer"]

_WORKER = Path(__file__).with_name("index_worker.py")


def cctbx_available() -> bool:
    """Whether the cctbx-base wheel is installed (checked without importing it here)."""
    import importlib.util

    return importlib.util.find_spec("rstbx") is not None and importlib.util.find_spec("boost_adaptbx") is not None


def detector_plane(ai: Any) -> DetectorPlane:
    """The flat detector of a pyFAI integrator: lab positions (mm) of pixel corner (0, 0)
    and of one pixel step along rows and columns (pyFAI puts pixel ``i``'s centre at
    ``i + 0.5`` pixels, so corner-based coordinate ``c`` is pyFAI's ``c - 0.5``)."""
    d1 = np.array([-0.5, 0.5, -0.5])
    d2 = np.array([-0.5, -0.5, 0.5])
    z, y, x = ai.calc_pos_zyx(d1=d1, d2=d2, corners=False)
    pos = np.column_stack([x, y, z]) * 1e3  # m -> mm, (x, y, z)
    return DetectorPlane(origin=tuple(map(float, pos[0])), slow=tuple(map(float, pos[1] - pos[0])),
                         fast=tuple(map(float, pos[2] - pos[0])),
                         wavelength=float(ai.wavelength) * 1e10)


class Indexer:
    """A running index worker (see module docstring)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._next = 0
        self._replies = 0  # a worker that never answered cannot start: an install problem, not a frame's
        self._waiter: concurrent.futures.ThreadPoolExecutor | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self._stderr = tempfile.TemporaryFile()  # why a worker died (a failed cctbx import, ...)
        return subprocess.Popen([sys.executable, str(_WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self._stderr, env=env)

    def _last_error(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (AttributeError, OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.shutdown(wait=False, cancel_futures=True)
            self._waiter = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _kill(self) -> int | None:
        """Stop a worker whose pipe state is unknown (an exchange cut short)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def submit(self, y: np.ndarray, x: np.ndarray, *, cell: Any, plane: DetectorPlane,
               options: Mapping[str, Any] | None = None) -> concurrent.futures.Future:
        """:meth:`index` without waiting: a future of its reply. The worker process indexes
        while the caller goes on (the next frame's spots); a thread waits on the pipe."""
        if self._waiter is None:
            self._waiter = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-worker")
        return self._waiter.submit(self.index, y, x, cell=cell, plane=plane, options=options)

    def index(self, y: np.ndarray, x: np.ndarray, *, cell: Any, plane: DetectorPlane,
              options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One frame's orientation from its spots (corner-based ``y``, ``x``); see
        :func:`lossbound.diffraction.lattice.index_from_basis_vectors` for the reply's fields."""
        request = {"y": np.asarray(y, float), "x": np.asarray(x, float), "cell": [float(v) for v in cell],
                   "plane": {"origin": plane.origin, "slow": plane.slow, "fast": plane.fast,
                             "wavelength": plane.wavelength},
                   "options": dict(options or {})}
        with self._lock:
            for attempt in (1, 2):
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                self._next += 1
                data = pickle.dumps((self._next, request), protocol=pickle.HIGHEST_PROTOCOL)
                try:
                    self._proc.stdin.write(struct.pack("<Q", len(data)) + data)
                    self._proc.stdin.flush()
                    head = self._proc.stdout.read(8)
                    if len(head) < 8:
                        raise EOFError("index worker exited")
                    rid, reply = pickle.loads(self._proc.stdout.read(struct.unpack("<Q", head)[0]))
                    if rid != self._next:
                        raise EOFError("index worker replied out of order")
                except (EOFError, OSError, pickle.UnpicklingError):
                    error, code = self._last_error(), self._kill()
                    log.warning("index worker died (exit code %s%s)%s", code, f": {error}" if error else "",
                                "; restarting it" if attempt == 1 else "")
                    if attempt == 2 and self._replies == 0:
                        hint = ("; serial crystallography needs cctbx-base: pip install 'lossbound[sx]'"
                                if "No module named" in error else "")
                        raise ConfigError(f"the sx index worker cannot start (exit code {code}"
                                          f"{': ' + error if error else ''}){hint}")
                    if attempt == 2:
                        return _not_indexed(request["y"].size, f"index worker died twice on this frame "
                                                               f"(exit code {code}{': ' + error if error else ''})")
                    continue
                except BaseException:  # Ctrl-C mid-exchange: the pipe holds a half-read reply
                    self._kill()
                    raise
                self._replies += 1
                if not reply["ok"]:
                    log.warning("indexing a frame failed: %s", reply["error"])
                    return _not_indexed(request["y"].size, reply["error"])
                return reply["result"]
        raise AssertionError("unreachable")


def _not_indexed(n: int, reason: str) -> dict[str, Any]:
    return {"indexed": False, "reason": reason, "hkl": np.zeros((n, 3)), "distance_px": np.full(n, np.inf),
            "basis": np.full((3, 3), np.nan), "cell": np.full(6, np.nan), "fraction": 0.0, "rmsd_px": float("nan"),
            "orientation_covariance": np.full((3, 3), np.nan), "candidates": 0}


_INDEXER: Indexer | None = None


def indexer() -> Indexer:
    """This process's indexer (started on first use, stopped at exit)."""
    global _INDEXER
    if _INDEXER is None:
        _INDEXER = Indexer()
        atexit.register(_INDEXER.close)
    return _INDEXER
