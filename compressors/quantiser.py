"""Noise-aware quantisation of photon counts (a pre-transform before a lossless HDF5 filter).

An absolute error bound means different things at 2 counts and at 600 000 counts. This
quantiser puts each count ``c`` on a grid whose step is a fraction ``f`` of its Poisson sigma
``sqrt(c)``, rounded *down* to a power of two — zeroed low bits are what Bitshuffle compresses
best — and replaces it by the middle of its bin. The result keeps the detector's integer dtype,
so any standard lossless filter (Bitshuffle-LZ4, Zstd, Blosc2) stores it and any HDF5 reader
reads it back with nothing else: the quantisation needs no decoder.

Properties (tested): the error of a count is at most half its step, so at most ``f/2`` sigma;
counts whose step would be below 2 (``c < 4 / f**2``) stay exact, so photon-counting data
keep 0 <-> 1 <-> 2 distinctions; bins are centred, so the mean is kept to within half a count
of the bin-centre convention (``step/2`` vs ``(step-1)/2``); the step depends only on the
count, so a look-up table over the count range turns the transform into one gather.

This module is the pure transform. Wiring it into studies as a codec chain (transform + HDF5
filter, searched over ``f``, recorded in the thresholds file) is part of the codec protocol v2
of the azimuthal-integration issue.
"""
from __future__ import annotations

import numpy as np

__all__ = ["quantise_counts", "quantiser_steps", "quantiser_table"]

_TABLE_LIMIT = 1 << 24  # largest count range served by a look-up table (64 MiB as uint32)


def quantiser_steps(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Power-of-two step for each count: ``2**floor(log2(fraction * sqrt(c)))``, at least 1 (no
    quantisation). No sigma floor: with ``sqrt(max(c, 1))`` a fraction >= 2 would merge 0 and 1
    counts, which photon-counting data cannot afford."""
    if not (np.isfinite(fraction) and fraction > 0):
        raise ValueError(f"fraction must be a finite positive number, got {fraction!r}")
    sigma = np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 0.0))
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(fraction * sigma))
    return np.exp2(np.maximum(exponent, 0.0)).astype(np.int64)


def quantiser_table(max_count: int, fraction: float) -> np.ndarray:
    """The quantised value of every count 0..max_count (int64)."""
    counts = np.arange(int(max_count) + 1, dtype=np.int64)
    step = quantiser_steps(counts, fraction)
    return np.where(step > 1, (counts // step) * step + step // 2, counts)


def quantise_counts(data: np.ndarray, fraction: float, *, valid: np.ndarray | None = None) -> np.ndarray:
    """Quantise non-negative integer counts in the same dtype.

    Parameters
    ----------
    data : ndarray of integers
        Detector counts (negative values, e.g. Pilatus sentinels, are left as they are).
    fraction : float
        Step as a fraction of the Poisson sigma (``f``); the error is at most ``f/2`` sigma.
    valid : ndarray of bool, optional
        Pixels to quantise (broadcast against ``data``); others (masked, sentinels) are
        returned unchanged, bit for bit.

    Returns
    -------
    ndarray
        Same shape and dtype as ``data``.
    """
    data = np.asarray(data)
    if data.dtype.kind not in "iu":
        raise ValueError(f"the quantiser works on integer counts, got dtype {data.dtype}")
    keep = data >= 0 if data.dtype.kind == "i" else np.ones(data.shape, bool)
    if valid is not None:
        keep &= np.broadcast_to(np.asarray(valid, bool), data.shape)
    if not keep.any():
        return data.copy()
    top = int(data[keep].max())
    out = data.copy()
    if top <= _TABLE_LIMIT:
        table = quantiser_table(top, fraction).astype(data.dtype)
        if keep.all():
            return table[data]  # one gather
        out[keep] = table[data[keep]]
        return out
    values = data[keep].astype(np.int64)
    step = quantiser_steps(values, fraction)
    out[keep] = np.where(step > 1, (values // step) * step + step // 2, values).astype(data.dtype)
    return out
