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

from lossbound.diffraction.detector import background_model, significant_pixels

__all__ = ["SPOT_FIELDS", "background_model", "find_spots", "hits", "integrate_boxes"]

SPOT_FIELDS = ("y", "x", "intensity", "sigma", "peak", "pixels")


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
    candidate, signal = significant_pixels(frame, background, sigma, masked, k=k)
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    if n == 0:
        return {f: np.zeros(0) for f in SPOT_FIELDS}
    # Per-spot sums over the candidate pixels only (a few per mille of a frame): bincount on
    # them instead of label statistics over every pixel of a 6 Mpx frame
    yy, xx = np.nonzero(candidate)
    lab = labels[yy, xx]
    w = signal[yy, xx].astype(np.float64)

    def per_spot(values: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=values, minlength=n + 1)[1:]

    pixels = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    keep = pixels >= min_pixels
    intensity = per_spot(w)
    y = per_spot(w * yy) / np.maximum(intensity, 1e-12)
    x = per_spot(w * xx) / np.maximum(intensity, 1e-12)
    counts = per_spot(np.maximum(frame[yy, xx], 0).astype(np.float64))
    bg_var = per_spot(np.asarray(sigma[yy, xx], np.float64) ** 2)
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, lab, w)
    out = {"y": y + 0.5, "x": x + 0.5,  # pixel centres: +0.5 from the corner-based detector frame
           "intensity": intensity, "sigma": np.sqrt(counts + bg_var), "peak": peak[1:], "pixels": pixels}
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


def integrate_boxes(frame: np.ndarray, background: np.ndarray, masked: np.ndarray, y: np.ndarray, x: np.ndarray,
                    *, half: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summation integration of predicted reflections: ``(intensity, sigma, ok)``.

    The ``(2 half + 1)²`` box around each position (corner-based ``y``, ``x``) minus the
    background model; sigma from the counts (Poisson). ``ok`` is False for a box that leaves
    the detector or touches a masked pixel (a partial box would bias the intensity)."""
    if not (frame.shape == background.shape == masked.shape):
        raise ValueError(f"shapes differ: frame {frame.shape}, background {background.shape}, mask {masked.shape}")
    iy, ix = np.floor(np.asarray(y)).astype(np.int64), np.floor(np.asarray(x)).astype(np.int64)
    off = np.arange(-half, half + 1)
    rows = iy[:, None, None] + off[None, :, None]
    cols = ix[:, None, None] + off[None, None, :]
    inside = ((iy - half >= 0) & (iy + half < frame.shape[0]) & (ix - half >= 0) & (ix + half < frame.shape[1]))
    rows, cols = np.where(inside[:, None, None], rows, 0), np.where(inside[:, None, None], cols, 0)
    counts = frame[rows, cols].astype(np.float64)
    ok = inside & ~masked[rows, cols].any(axis=(1, 2))
    intensity = (counts - background[rows, cols]).sum(axis=(1, 2))
    sigma = np.sqrt(np.maximum(np.maximum(counts, 0).sum(axis=(1, 2)), 1.0))
    return np.where(ok, intensity, np.nan), np.where(ok, sigma, np.nan), ok
