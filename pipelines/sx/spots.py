"""Bragg-spot finding on diffraction stills (peakfinder8-style).

1. Background and noise per resolution shell from azimuthal sigma-clipped statistics
   (pyFAI ``sigma_clip_ng`` with the azimuthal error model): Bragg spots are the outliers a
   shell's clipped mean and standard deviation leave out.
2. A pixel is a candidate when the 3x3 box sum of its background-subtracted signal exceeds
   ``k`` times the box's noise (single-pixel thresholds split streaky spots and fire on
   noise) and the pixel itself is above the background.
3. Candidates are grouped into spots (8-connected components); each spot gets its
   intensity-weighted centroid, integrated intensity (background subtracted), sigma(I) from
   the counts, peak height and size. Frames with at least ``min_spots`` spots are hits.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["SPOT_FIELDS", "background_model", "find_spots", "hits"]

SPOT_FIELDS = ("y", "x", "intensity", "sigma", "peak", "pixels")


def background_model(ai, frame: np.ndarray, masked: np.ndarray, *, npt: int = 500, unit: str = "q_nm^-1",
                     thres: float = 3.0, max_iter: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel background and its standard deviation, ``(background, sigma)``.

    Parameters
    ----------
    ai : pyFAI AzimuthalIntegrator
        Geometry of the frame (built once per dataset).
    frame : ndarray
        One detector frame.
    masked : ndarray of bool
        True where the pixel is not a measurement.
    npt : int
        Resolution shells.
    thres, max_iter : float, int
        Sigma-clipping threshold and iterations of ``sigma_clip_ng``.
    """
    res = ai.sigma_clip_ng(frame, npt, unit=unit, method=("no", "csr", "cython"), error_model="azimuthal",
                           mask=masked.astype(np.int8), thres=thres, max_iter=max_iter, correctSolidAngle=False,
                           polarization_factor=None)
    radial = np.asarray(res.radial)
    mean = np.nan_to_num(np.asarray(res.intensity, np.float64))
    std = np.nan_to_num(np.asarray(res.std if res.std is not None else res.sigma, np.float64))
    r = ai.center_array(frame.shape, unit=unit)
    background = np.interp(r, radial, mean)
    sigma = np.interp(r, radial, std)
    # a shell's std cannot be below its own counting noise (Poisson), nor zero
    sigma = np.maximum(sigma, np.sqrt(np.maximum(background, 1.0)))
    return background, sigma


def find_spots(frame: np.ndarray, background: np.ndarray, sigma: np.ndarray, masked: np.ndarray, *,
               k: float = 3.0, min_pixels: int = 2) -> dict[str, np.ndarray]:
    """Spots of one frame as arrays ``y, x, intensity, sigma, peak, pixels`` (one entry each).

    Parameters
    ----------
    frame, background, sigma : ndarray
        Counts, background and its standard deviation per pixel (same shape).
    masked : ndarray of bool
        Pixels that are not measurements (never part of a spot, never in a box sum).
    k : float
        Threshold on the 3x3 box sum in units of its noise.
    min_pixels : int
        Smallest spot, in candidate pixels.
    """
    if not (frame.shape == background.shape == sigma.shape == masked.shape):
        raise ValueError(f"shapes differ: frame {frame.shape}, background {background.shape}, "
                         f"sigma {sigma.shape}, mask {masked.shape}")
    valid = ~masked
    signal = np.where(valid, frame.astype(np.float64) - background, 0.0)
    var = np.where(valid, sigma**2, 0.0)
    box = ndimage.uniform_filter(signal, size=3, mode="constant") * 9.0
    box_var = ndimage.uniform_filter(var, size=3, mode="constant") * 9.0
    candidate = valid & (signal > 0) & (box > k * np.sqrt(np.maximum(box_var, 1e-12)))
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    if n == 0:
        return {f: np.zeros(0) for f in SPOT_FIELDS}
    index = np.arange(1, n + 1)
    pixels = ndimage.sum_labels(candidate, labels, index)
    keep = pixels >= min_pixels
    weight = np.where(candidate, signal, 0.0)
    intensity = ndimage.sum_labels(weight, labels, index)
    yy, xx = np.indices(frame.shape, dtype=np.float64)
    y = ndimage.sum_labels(weight * yy, labels, index) / np.maximum(intensity, 1e-12)
    x = ndimage.sum_labels(weight * xx, labels, index) / np.maximum(intensity, 1e-12)
    counts = ndimage.sum_labels(np.where(candidate, np.maximum(frame, 0), 0).astype(np.float64), labels, index)
    bg_var = ndimage.sum_labels(np.where(candidate, sigma**2, 0.0), labels, index)
    peak = ndimage.maximum(np.where(candidate, signal, -np.inf), labels, index)
    out = {"y": y + 0.5, "x": x + 0.5,  # pixel centres: +0.5 from the corner-based detector frame
           "intensity": intensity, "sigma": np.sqrt(counts + bg_var), "peak": peak, "pixels": pixels}
    return {f: np.asarray(v, np.float64)[keep] for f, v in out.items()}


def hits(n_spots: np.ndarray, *, min_spots: int = 10) -> np.ndarray:
    """True for frames with at least ``min_spots`` spots."""
    return np.asarray(n_spots) >= min_spots


def summary(spots: dict[str, np.ndarray]) -> dict[str, Any]:
    """Count, median I/sigma and the brightest spot of one frame (for logs)."""
    n = int(spots["y"].size)
    if n == 0:
        return {"spots": 0, "median_i_over_sigma": math.nan}
    return {"spots": n, "median_i_over_sigma": float(np.median(spots["intensity"] / spots["sigma"])),
            "brightest": float(spots["intensity"].max())}
