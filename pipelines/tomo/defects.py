"""Defective detector pixels and zingers: found on the raw scan, repaired in every run.

Real detectors have dead pixels (no signal: open beam at or below the dark level), saturated
or stuck pixels, hot pixels (reading far above their neighbours), pixels a detector writes as
NaN, and zingers (single-frame spikes from direct hits). Left in, one dead pixel's open beam of
~0 turns any codec error on it into a huge ``-log`` value and a streak through the slice. So,
as tomopy's ``remove_outlier``/``remove_nan`` and algotom's zinger removal do, the map of
defective pixels is found once on the raw flats, darks and projections (kept in the prepared
parameters, so the compressed run uses the same map) and those pixels are interpolated from
their row neighbours before ``-log``; zingers are replaced by the median of the neighbouring
frames.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

__all__ = ["find_defective_pixels", "interpolate_pixels", "remove_zingers"]


def _stack_median(stack: np.ndarray, *, max_frames: int = 64) -> np.ndarray:
    """Per-pixel median over (up to ``max_frames`` evenly spaced) frames, NaN-aware, float64."""
    step = max(1, stack.shape[0] // max_frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN pixel is reported as such
        return np.nanmedian(np.asarray(stack[::step], dtype=np.float64), axis=0)


def find_defective_pixels(
    projections: np.ndarray,
    flats: np.ndarray,
    darks: np.ndarray,
    *,
    dead_fraction: float = 0.1,
    hot_sigma: float = 20.0,
    saturation: float | None = None,
) -> dict[str, np.ndarray]:
    """Boolean (rows, cols) maps of defective pixels, by kind.

    Parameters
    ----------
    projections, flats, darks : ndarray
        (n, rows, cols) raw frames.
    dead_fraction : float
        A pixel whose open beam (flat - dark) is at most this fraction of the median open beam
        of its 5x5 neighbourhood is dead (this includes flat <= dark).
    hot_sigma : float
        A pixel whose median projection exceeds the median of its 3x3 neighbours by more than
        this many Poisson sigmas is hot.
    saturation : float, optional
        Value of a saturated pixel (default: the maximum of an integer dtype); a pixel at
        saturation in any flat is defective.

    Returns
    -------
    dict
        ``non_finite``, ``dead``, ``saturated``, ``hot`` and their union ``all``.
    """
    non_finite = ~np.isfinite(projections).all(axis=0) if projections.dtype.kind == "f" else \
        np.zeros(projections.shape[1:], bool)
    if flats.dtype.kind == "f":
        non_finite |= ~np.isfinite(flats).all(axis=0)
    if darks.dtype.kind == "f":
        non_finite |= ~np.isfinite(darks).all(axis=0)
    dark = _stack_median(darks)
    open_beam = _stack_median(flats) - dark
    local = ndimage.median_filter(np.nan_to_num(open_beam, nan=0.0), size=5, mode="nearest")
    dead = ~(open_beam > dead_fraction * np.maximum(local, 0.0)) | ~(open_beam > 0)
    if saturation is None and flats.dtype.kind in "iu":
        saturation = float(np.iinfo(flats.dtype).max)
    saturated = (np.asarray(flats) >= saturation).any(axis=0) if saturation is not None else np.zeros_like(dead)
    level = _stack_median(projections) - dark
    neighbours = ndimage.median_filter(np.nan_to_num(level, nan=0.0), size=3, mode="nearest")
    hot = level - neighbours > hot_sigma * np.sqrt(np.maximum(neighbours, 1.0))
    dead &= ~non_finite
    hot &= ~(non_finite | dead)
    return {"non_finite": non_finite, "dead": dead, "saturated": saturated, "hot": hot,
            "all": non_finite | dead | saturated | hot}


def interpolate_pixels(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace ``mask``ed pixels of ``images`` (…, rows, cols) in place by linear
    interpolation between the nearest valid pixels of the same row (edge pixels take the
    nearest valid value); a row with no valid pixel is left as it is."""
    mask = np.asarray(mask, bool)
    cols = np.arange(mask.shape[-1])
    for r in np.flatnonzero(mask.any(axis=-1)):
        bad = mask[r]
        good = ~bad
        if not good.any():
            continue
        gc, bc = cols[good], cols[bad]
        idx = np.searchsorted(gc, bc)  # the first valid column to the right
        beyond = idx >= gc.size        # past the last valid pixel: take it on both sides
        right = np.where(beyond, gc.size - 1, idx)
        left = np.where(beyond, gc.size - 1, np.maximum(idx - 1, 0))  # idx 0: before the first
        span = (gc[right] - gc[left]).astype(np.float64)
        w = np.where(span > 0, (bc - gc[left]) / np.where(span > 0, span, 1.0), 0.0)
        row = images[..., r, :]
        row[..., bc] = (1 - w) * row[..., gc[left]] + w * row[..., gc[right]]
    return images


def remove_zingers(counts: np.ndarray, *, threshold_sigma: float = 8.0, gain: float = 1.0,
                   offset: np.ndarray | float = 0.0) -> int:
    """Replace single-frame spikes in ``counts`` (frames, rows, cols), in place, by the median
    of the frame and its two neighbours; returns how many pixels were replaced.

    A spike stands above both the median of the neighbouring frames (same pixel) and the
    median of the neighbouring rows (same frame) by more than ``threshold_sigma`` Poisson
    sigmas (``sqrt(gain * (median - offset))``, at least one ADU). Requiring both keeps real
    structure: a thin feature moving across the detector flickers from frame to frame, but it
    is not a spike along the rotation axis; a direct hit is both. Only upward spikes:
    absorption never brightens a pixel, a direct hit does.
    """
    if counts.shape[0] < 3 or counts.shape[1] < 3:
        return 0
    med_t = ndimage.median_filter(counts, size=(3, 1, 1), mode="nearest")
    med_z = ndimage.median_filter(counts, size=(1, 3, 1), mode="nearest")

    def excess(med: np.ndarray) -> np.ndarray:
        return counts - med > threshold_sigma * np.sqrt(np.maximum(gain * (med - offset), 1.0))

    spikes = excess(med_t) & excess(med_z)
    n = int(np.count_nonzero(spikes))
    if n:
        counts[spikes] = med_t[spikes]
    return n
