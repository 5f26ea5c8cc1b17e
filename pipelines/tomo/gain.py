"""The camera's gain (ADU per photon) from its own flats: the photon-transfer method.

A pixel that counts photons at gain ``g`` (ADU per photon) above a dark level reads
``S = g N`` with ``N`` Poisson, so its variance is ``g S`` (plus read noise): the slope of
variance against signal is the gain. Measured on the open-beam frames (flats) minus the mean
dark, from consecutive pairs of flats (their difference cancels the fixed pattern and slow
beam drifts), each flat first scaled to the mean flux (the beam's intensity varies from frame
to frame), the dark frames' own pair variance (read noise) subtracted.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["photon_transfer"]


def photon_transfer(flats: np.ndarray, darks: np.ndarray, *, exclude: np.ndarray | None = None) -> dict[str, Any]:
    """Gain (ADU per photon) of the camera from its flats and darks.

    Parameters
    ----------
    flats, darks : ndarray, shape (n, rows, cols)
        Open-beam and dark frames; at least two flats.
    exclude : ndarray of bool, optional
        Pixels to leave out (dead, hot, NaN).

    Returns
    -------
    dict
        ``gain``, ``gain_se`` (standard error over the pairs), ``pairs``, ``signal`` (mean
        ADU above dark of the pixels used), ``pixels``; or ``gain`` None and ``reason`` when it
        cannot be measured (fewer than two flats, no signal above the dark level).
    """
    flats = np.asarray(flats, dtype=np.float64)
    darks = np.asarray(darks, dtype=np.float64)
    if flats.ndim != 3 or flats.shape[0] < 2:
        return {"gain": None, "reason": f"{flats.shape[0] if flats.ndim == 3 else 0} flat(s): the photon transfer "
                                        f"needs at least two"}
    dark = darks.mean(axis=0) if darks.size else np.zeros(flats.shape[1:])
    signal = flats - dark
    valid = np.isfinite(signal).all(axis=0)
    if exclude is not None:
        valid &= ~np.asarray(exclude, bool)
    mean = signal.mean(axis=0)
    typical = np.median(mean[valid]) if valid.any() else 0.0
    valid &= mean > 0.1 * typical  # dead and shadowed pixels say nothing about the gain
    if not valid.any() or typical <= 0:
        return {"gain": None, "reason": "no signal above the dark level in the flats"}
    flux = np.array([f[valid].mean() for f in signal])
    scaled = signal * (flux.mean() / flux)[:, None, None]
    read_var = 0.0
    if darks.shape[0] >= 2:
        dd = np.diff(darks, axis=0)[:, valid]
        read_var = float(np.mean(dd**2) / 2.0)
    gains = []
    for i in range(scaled.shape[0] - 1):
        d = (scaled[i] - scaled[i + 1])[valid]
        v = d**2 / 2.0
        keep = v <= np.quantile(v, 0.999)  # a zinger in one flat is no photon statistics
        s = 0.5 * (scaled[i] + scaled[i + 1])[valid]
        gains.append(float((v[keep].sum() - read_var * keep.sum()) / s[keep].sum()))
    g = np.asarray(gains)
    return {"gain": float(g.mean()), "gain_se": float(g.std(ddof=1) / math.sqrt(g.size)) if g.size > 1 else math.nan,
            "pairs": int(g.size), "signal": float(flux.mean()), "pixels": int(valid.sum()),
            "read_noise_adu": math.sqrt(read_var)}
