"""Codec throughput on one quiet core, as a sizing engineer measures it.

The study's round trips are timed while the other workers run other points, so their MB/s
mix the codec's speed with contention. :func:`time_setting` times one chain apart: the whole
write an acquisition system does (:func:`~lossbound.codecs.store.write_payload`: masked-pixel
fill, pre-transform, dtype conversion, the filter and the HDF5 chunk writes, the mask beside
the payload) and the whole read (:func:`~lossbound.codecs.store.read_payload` from a fresh file
handle, masked pixels restored), into and out of an in-memory HDF5 file (no disk in the
figure), on one thread (:func:`single_thread`), median of ``repeats`` after one warm-up.
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
from typing import Any, Callable, Iterator, Mapping

import h5py
import numpy as np

from .specs import CodecSetting
from .store import read_payload, write_payload

__all__ = ["leading_frames", "median_seconds", "single_thread", "time_setting"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One thread for everything a codec may parallelise, restored afterwards.

    hdf5plugin's Blosc and Blosc2 filters compress with one thread unless ``BLOSC_NTHREADS``
    says otherwise (c-blosc2 reads it for every chunk, c-blosc in ``blosc_compress``), so it is
    set to 1 here; the wheel's filters are built without OpenMP
    (``hdf5plugin.get_config().build_config.openmp``); threadpoolctl pins the BLAS and OpenMP
    pools numpy, scipy and pyFAI loaded; LossBound's compiled transforms are serial.
    """
    from threadpoolctl import threadpool_limits

    saved = {k: os.environ.get(k) for k in ("BLOSC_NTHREADS", "OMP_NUM_THREADS")}
    os.environ.update(BLOSC_NTHREADS="1", OMP_NUM_THREADS="1")
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def median_seconds(fn: Callable[[], Any], repeats: int, *, warmup: int = 1) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def leading_frames(data: np.ndarray, valid: np.ndarray | None = None, *, max_mb: float = 32.0,
                   min_frames: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """The leading frames of ``data`` up to ``max_mb`` MB (at least ``min_frames``, at least
    one; a 1-D or 2-D array is one frame) and their part of ``valid``."""
    data = np.asarray(data)
    if data.ndim < 1 or data.size == 0:
        raise ValueError(f"cannot time a codec on data of shape {data.shape}")
    if data.ndim < 3:
        return data, valid
    fit = data.shape[0] if not np.isfinite(max_mb) else int(max_mb * 1e6 // max(data[0].nbytes, 1))
    n = min(data.shape[0], max(1, int(min_frames), fit))
    if valid is not None and np.ndim(valid) == data.ndim:
        valid = np.asarray(valid)[:n]
    return np.ascontiguousarray(data[:n]), valid


def time_setting(data: np.ndarray, setting: CodecSetting, *, valid: np.ndarray | None = None,
                 geometry: Mapping[str, Any] | None = None, repeats: int = 5, max_mb: float = 32.0,
                 min_frames: int = 1, budget_s: float | None = 1.0) -> dict[str, Any]:
    """Compress and decompress MB/s (of detector bytes, 1 MB = 1e6 B) of ``setting`` on one core.

    Parameters
    ----------
    data : ndarray
        Detector frames (the leading axis is frames; a 2-D array is one frame).
    setting : CodecSetting
        The chain, with its chunk layout (the study's: one frame per chunk unless configured).
    valid, geometry
        As for :func:`~lossbound.codecs.store.write_payload`.
    repeats : int
        Timed repeats of each direction; the median is kept.
    max_mb : float
        The leading frames up to this many MB are timed (at least ``min_frames``, at least one).
    min_frames : int
        Frames a chain needs to show its steady-state cost (``sparsify_*``: one model block).
    budget_s : float or None
        Seconds one timed write may take: the warm-up on ``min_frames`` frames prices a frame,
        and only the frames that fit are timed (at least ``min_frames``): a slow codec costs
        seconds, not minutes. None: every frame up to ``max_mb``.

    Returns
    -------
    dict
        ``compress_mbps``, ``decompress_mbps``, ``ratio``, ``frames`` (shape and dtype timed),
        ``chunks``, ``repeats``, ``threads`` (1) and ``load_average`` (1 min, before timing: a
        loaded machine shows up here).
    """
    stack, stack_valid = leading_frames(data, valid, max_mb=max_mb, min_frames=min_frames)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    state: dict[str, Any] = {}

    def compress() -> None:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as fh:
            written = write_payload(fh, "data", stack, setting, valid=stack_valid, geometry=geometry)
            state["stored"] = sum(int(ds.id.get_storage_size()) for ds in written)
            state["chunks"] = list(written[0].chunks or ())
        state["file"] = buf

    def decompress() -> None:  # BytesIO over bytes shares them: no copy in the timed part
        with h5py.File(io.BytesIO(state["payload"]), "r") as fh:
            read_payload(fh, "data")

    with single_thread():
        full, full_valid = stack, stack_valid
        n = full.shape[0] if full.ndim >= 3 else 1
        first = min(n, max(1, int(min_frames)))
        warm_up = 1
        if budget_s and n > first:
            # the warm-up (plugin load, compiled kernels) on the fewest frames also prices one
            # frame: the timed writes then take about budget_s each, not a full stack's worth
            stack, stack_valid = leading_frames(full, full_valid, max_mb=0, min_frames=first)
            per_frame = median_seconds(compress, 1, warmup=1) / first
            keep = min(n, max(first, int(budget_s / max(per_frame, 1e-9))))
            stack, stack_valid = leading_frames(full, full_valid, max_mb=0, min_frames=keep)
            warm_up = int(keep != first)
        t_compress = median_seconds(compress, repeats, warmup=warm_up)
        state["payload"] = state["file"].getvalue()
        t_decompress = median_seconds(decompress, repeats)
    mb = stack.nbytes / 1e6
    return {
        "compress_mbps": mb / t_compress, "decompress_mbps": mb / t_decompress,
        "ratio": stack.nbytes / state["stored"] if state.get("stored") else None,
        "frames": f"{' x '.join(str(s) for s in stack.shape)} {stack.dtype.name}", "chunks": state.get("chunks"),
        "repeats": int(repeats), "threads": 1, "load_average": None if load is None else round(load, 2),
    }
