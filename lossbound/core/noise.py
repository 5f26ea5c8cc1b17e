"""Photon-noise helpers shared by evaluators and pipelines (ground floor: numpy only)."""
from __future__ import annotations

import numpy as np

__all__ = ["poisson_sigma"]


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
