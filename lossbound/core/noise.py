"""Photon-noise helpers shared by evaluators and pipelines (ground floor: numpy only)."""
from __future__ import annotations

import numpy as np

__all__ = ["is_counts", "poisson_resample", "poisson_sigma"]


def poisson_sigma(
    counts: np.ndarray,
    *,
    offset: float | np.ndarray = 0.0,
    adu_per_photon: float = 1.0,
    read_noise: float = 0.0,
    floor: float | None = None,
) -> np.ndarray:
    """Per-pixel noise sigma (in ADU) of a photon-counting measurement.

    ``sigma = max(sqrt(adu_per_photon * max(counts - offset, 0) + read_noise**2), floor)``

    Parameters
    ----------
    counts : ndarray
        Measured values in ADU.
    offset : float or ndarray, optional
        Dark level in ADU (e.g. the mean dark frame), broadcast against ``counts``.
    adu_per_photon : float, optional
        Detector gain ``g``. A signal of ``S`` ADU is ``S / g`` photons, so its variance
        is ``g**2 * S / g = g * S`` ADU^2.
    read_noise : float, optional
        Gaussian read-noise sigma in ADU, added in quadrature.
    floor : float, optional
        Lower bound of sigma, so pixels with no signal above the dark level do not give
        a zero sigma (and infinite error in sigma).  Default ``adu_per_photon``: the sigma
        of a one-photon signal (``sqrt(g * g)``), i.e. in a dark pixel an error of one
        photon counts as one sigma.

    Returns
    -------
    sigma : ndarray of float64
        Broadcast shape of ``counts`` and ``offset``; every value >= ``floor`` > 0.

    Raises
    ------
    ValueError
        For a non-positive gain or floor, or negative read noise.
    """
    adu_per_photon = float(adu_per_photon)
    read_noise = float(read_noise)
    if not (np.isfinite(adu_per_photon) and adu_per_photon > 0):
        raise ValueError(f"adu_per_photon must be a finite positive number, got {adu_per_photon}")
    if not (np.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise must be finite and >= 0, got {read_noise}")
    floor = adu_per_photon if floor is None else float(floor)
    if not (np.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a finite positive number, got {floor}")
    signal = np.asarray(counts, dtype=np.float64) - np.asarray(offset, dtype=np.float64)
    np.maximum(signal, 0.0, out=signal)
    variance = adu_per_photon * signal
    variance += read_noise**2
    return np.maximum(np.sqrt(variance, out=variance), floor, out=variance)


def is_counts(values: np.ndarray, valid: np.ndarray | None = None) -> bool:
    """True when the valid values are photon counts: integers >= 0 (in any dtype)."""
    v = np.asarray(values)
    if valid is not None:
        v = v[np.broadcast_to(np.asarray(valid, bool), v.shape)]
    if v.dtype.kind == "b" or v.dtype.kind not in "iuf":
        return False
    if v.size == 0:
        return False
    if v.dtype.kind == "f" and not (np.isfinite(v).all() and np.array_equal(v, np.round(v))):
        return False
    return bool(v.min() >= 0)


def poisson_resample(values: np.ndarray, rng: np.random.Generator, *, valid: np.ndarray | None = None,
                     offset: float | np.ndarray = 0.0, adu_per_photon: float = 1.0) -> np.ndarray:
    """One re-measurement of the same signal from counting statistics alone.

    ``offset + g * Poisson(max(values - offset, 0) / g)`` at the valid pixels, in the input dtype
    (rounded for integer dtypes); invalid pixels (sentinels, NaN) keep their values, so the
    re-measurement has the detector's defects where the measurement had them.

    Parameters
    ----------
    values : ndarray
        Measured values in ADU (counts when ``g = 1`` and ``offset = 0``).
    rng : numpy.random.Generator
        Source of randomness (seeded by the caller: re-samplings are reproducible).
    valid : ndarray of bool, optional
        Pixels to re-sample; broadcasts against ``values``.
    offset : float or ndarray, optional
        Dark level in ADU, broadcast against ``values``.
    adu_per_photon : float, optional
        Detector gain ``g``.

    Returns
    -------
    ndarray
        Same shape and dtype as ``values``.
    """
    g = float(adu_per_photon)
    if not (np.isfinite(g) and g > 0):
        raise ValueError(f"adu_per_photon must be a finite positive number, got {adu_per_photon}")
    x = np.asarray(values)
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), x.shape)
    sel = np.ones(x.shape, bool) if valid is None else np.broadcast_to(np.asarray(valid, bool), x.shape).copy()
    sel &= np.isfinite(x) if x.dtype.kind == "f" else True
    photons = np.maximum(x[sel].astype(np.float64) - offset[sel], 0.0) / g
    drawn = offset[sel] + g * rng.poisson(photons)
    out = x.copy()
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        drawn = np.clip(np.rint(drawn), info.min, info.max)
    out[sel] = drawn.astype(x.dtype)
    return out
