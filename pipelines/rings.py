"""Does a geometry fit the frames' rings? Shared by the diffraction techniques' quality gates.

A PONI fitted on a flipped image (Dioptas calibrates on vertically flipped images) or a beam
centre a few pixels off integrates cleanly into a smeared profile, and every threshold is then
judged against it. Both show in the frames binned by radius (2 theta, as pixels on an untilted
detector) about the geometry's direct beam: rings that fit are narrow and sit at one radius
all around the azimuth.

- :func:`orientation_check` measures the rings' sharpness (an inverse width, median over
  45-degree sectors) under every orientation the frames could have been written in (flips;
  with a square detector also transposes) and names one that is clearly sharper than the
  frames as read.
- :func:`centre_check` cross-correlates each 10-degree sector's ring profile with the
  sectors' aligned median, fits the shifts by ``a cos(chi) + b sin(chi) + c`` and reports
  ``hypot(a, b)``: how far the beam centre is off, in pixels, with its standard error.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping

import numpy as np
from scipy.ndimage import median_filter

from lossbound.core.gates import GateCheck

__all__ = ["centre_check", "orientation_check", "ring_cake", "ring_sharpness"]

# (name, words, transform of a (rows, cols) image); square images add the transposes
_FLIPS: list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]] = [
    ("as_read", "as read", lambda a: a),
    ("flipud", "a vertical flip", lambda a: a[::-1]),
    ("fliplr", "a horizontal flip", lambda a: a[:, ::-1]),
    ("rot180", "a 180-degree rotation", lambda a: a[::-1, ::-1]),
]
_TRANSPOSES: list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]] = [
    ("transpose", "a transpose", lambda a: a.T),
    ("rot90", "a 90-degree rotation", lambda a: np.rot90(a, 1)),
    ("rot270", "a 270-degree rotation", lambda a: np.rot90(a, 3)),
    ("antitranspose", "an anti-transpose", lambda a: np.rot90(a, 2).T),
]
_N_CHI = 36        # 10-degree sectors
_MIN_PIXELS = 8    # pixels a (radius, sector) bin needs to count
_MIN_RADIUS_PX = 40  # rings are looked for beyond the beam stop


def _geometry_arrays(ai, shape: tuple[int, int], polarization: float | None):
    """Radius (pixels), azimuth (rad) and the intensity scale (solid angle x polarisation).

    The radius is the scattering angle as the radius it has on an untilted detector at the
    sample distance, ``dist tan(2 theta)`` in pixels: rings are circles of constant 2 theta
    about the direct beam, which a tilted detector's PONI is not."""
    two_theta = ai.center_array(shape, unit="2th_rad")
    r_px = float(ai.dist) * np.tan(two_theta) / (0.5 * (float(ai.pixel1) + float(ai.pixel2)))
    chi = ai.center_array(shape, unit="chi_rad")
    scale = ai.solidAngleArray(shape)
    if polarization is not None:
        scale = scale * ai.polarization(shape, factor=polarization)
    return r_px, chi, scale


def ring_cake(image: np.ndarray, valid: np.ndarray, r_px: np.ndarray, chi: np.ndarray, scale: np.ndarray,
              *, n_chi: int = _N_CHI) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean intensity (counts / scale) and its counting variance per (1-pixel radius, sector)
    bin; bins with fewer than 8 valid pixels are NaN. Returns ``(radius, sector centre,
    mean, variance)``."""
    ok = valid & np.isfinite(image) & (scale > 0)
    r = r_px[ok]
    ir = np.floor(r - r.min()).astype(np.int64)
    ic = np.clip(((chi[ok] + math.pi) / (2 * math.pi) * n_chi).astype(np.int64), 0, n_chi - 1)
    n_r = int(ir.max()) + 1
    idx = ir * n_chi + ic
    size = n_r * n_chi
    v = image[ok].astype(np.float64) / scale[ok]
    var = np.maximum(image[ok].astype(np.float64), 0.0) / scale[ok] ** 2
    count = np.bincount(idx, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(idx, v, minlength=size) / count
        variance = np.bincount(idx, var, minlength=size) / count**2
    bad = count < _MIN_PIXELS
    mean[bad] = np.nan
    variance[bad] = np.nan
    radius = r.min() + np.arange(n_r) + 0.5
    sectors = -math.pi + (np.arange(n_chi) + 0.5) * 2 * math.pi / n_chi
    return radius, sectors, mean.reshape(n_r, n_chi), variance.reshape(n_r, n_chi)


def ring_sharpness(image: np.ndarray, valid: np.ndarray, r_px: np.ndarray, chi: np.ndarray,
                   scale: np.ndarray) -> float:
    """How sharp the rings of ``image`` are about the PONI's centre: the median over the
    45-degree sectors that see the detector of :func:`profile_sharpness`, a sector without a
    ring counting 0 (a ring is seen all around; a blob or a hot pixel in one sector is not).
    NaN without rings."""
    # the beam stop and the direct beam's halo sit within a few tens of pixels of the centre
    ok = valid & np.isfinite(image) & (scale > 0) & (r_px >= _MIN_RADIUS_PX)
    octant = np.clip(((chi + math.pi) / (2 * math.pi) * 8).astype(np.int64), 0, 7)
    values = []
    for k in range(8):
        v = profile_sharpness(image, ok & (octant == k), r_px, scale)
        if v is not None:
            values.append(0.0 if math.isnan(v) else v)
    if not values:
        return math.nan
    med = float(np.median(values))
    return med if med > 0 else math.nan


def profile_sharpness(image: np.ndarray, ok: np.ndarray, r_px: np.ndarray, scale: np.ndarray) -> float | None:
    """The 1-D profile of the pixels ``ok`` (1-pixel radius bins) above a running-median
    background, squared and summed beyond its counting noise, over the squared sum: an inverse
    ring width (rings that fit the PONI are narrow, rings smeared by a wrong orientation or
    centre wide). NaN without a ring above the counting noise, None with under 20 radii."""
    if ok.sum() < 20 * _MIN_PIXELS:
        return None
    r = r_px[ok]
    ir = np.floor(r - r.min()).astype(np.int64)
    count = np.bincount(ir).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(ir, image[ok] / scale[ok]) / count
        var = np.bincount(ir, np.maximum(image[ok], 0.0) / scale[ok] ** 2) / count**2
    seen = count >= _MIN_PIXELS
    if seen.sum() < 20:
        return None
    prof, var = mean[seen], var[seen]
    excess = prof - median_filter(prof, size=31, mode="nearest")
    power = float(np.sum(np.maximum(excess**2 - var, 0.0)))
    total = float(np.sum(np.abs(excess)))
    # rings: more excess power than 3 sigma of the noise power's own scatter
    if total <= 0 or power <= 3 * math.sqrt(2 * float(np.sum(var**2))):
        return math.nan
    return power / total**2 * prof.size


def _summed(frames: np.ndarray, valid: np.ndarray, max_frames: int = 16) -> np.ndarray:
    stack = np.asarray(frames[:max_frames], dtype=np.float64)
    return np.where(valid, stack.sum(axis=0), 0.0)


def orientation_check(frames: np.ndarray, valid: np.ndarray, ai, *, polarization: float | None,
                      flipped: bool, max_ratio: float) -> GateCheck:
    """Ring sharpness under every orientation of the (summed) frames against the declared one.

    ``value`` is the best orientation's ring sharpness over the declared one's (1 when the
    declared orientation fits best); it fails above ``max_ratio``. ``flipped`` is ``dataset.flipud``
    (named in the fix).
    """
    shape = frames.shape[1:]
    image = _summed(frames, valid)
    r_px, chi, scale = _geometry_arrays(ai, shape, polarization)
    candidates = _FLIPS + (_TRANSPOSES if shape[0] == shape[1] else [])
    scores: dict[str, float] = {}
    for name, _, f in candidates:
        scores[name] = ring_sharpness(f(image), f(valid), r_px, chi, scale)
    declared = scores["as_read"]
    if not math.isfinite(declared):
        # a wrong orientation smears rings but leaves them above the noise (CeO2 flipped: 0.37 of
        # the sharpness); with none about the PONI's centre there is nothing to compare
        return GateCheck("orientation", None, max_ratio, None, unit="x", detail="no ring above the counting "
                         "noise about the PONI's centre: the orientation cannot be checked",
                         figures={"sharpness": scores})
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    best = max(finite, key=finite.get)
    ratio = finite[best] / declared
    words = dict((n, w) for n, w, _ in candidates)
    detail = (f"ring sharpness {declared:.3g} as read"
              + (f", {finite[best]:.3g} after {words[best]} ({ratio:.2f}x sharper)" if best != "as_read" else
                 " (no flip or transpose is sharper)"))
    fix = ""
    if best == "flipud":
        fix = (f"the PONI fits this image after a vertical flip: set dataset.flipud={'false' if flipped else 'true'}"
               + ("" if flipped else " (Dioptas calibrates on vertically flipped images)"))
    elif best != "as_read":
        fix = (f"the PONI fits this image after {words[best]}: check the PONI's detector orientation or write "
               f"the frames in the orientation it was calibrated on")
    return GateCheck("orientation", ratio, max_ratio, bool(ratio <= max_ratio), unit="x", detail=detail, fix=fix,
                     figures={"sharpness": scores, "best": best})


def _highpass(profile: np.ndarray, size: int = 31) -> np.ndarray:
    """``profile`` minus its running median over ``size`` bins (NaN stays NaN)."""
    finite = np.isfinite(profile)
    out = np.full_like(profile, np.nan)
    if finite.sum() >= 10:
        filled = np.interp(np.arange(profile.size), np.flatnonzero(finite), profile[finite])
        out[finite] = (filled - median_filter(filled, size=size, mode="nearest"))[finite]
    return out


def _lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> float | None:
    """Sub-pixel lag (bins) that best aligns ``a`` onto ``b`` (``a[i + lag] ~ b[i]``) by
    normalised cross-correlation over their common finite bins; None without a clear peak."""
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.full(lags.size, np.nan)
    n = a.size
    for k, lag in enumerate(lags):
        x = a[max(lag, 0):n + min(lag, 0)]
        y = b[max(-lag, 0):n - max(lag, 0)]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 20:
            continue
        x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
        den = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
        cc[k] = float(np.sum(x * y)) / den if den > 0 else np.nan
    if not np.isfinite(cc).any():
        return None
    k = int(np.nanargmax(cc))
    if cc[k] < 0.3 or k == 0 or k == lags.size - 1 or not np.isfinite(cc[k - 1:k + 2]).all():
        return None
    c0, c1, c2 = cc[k - 1], cc[k], cc[k + 1]
    den = c0 - 2 * c1 + c2
    return float(lags[k] + (0.5 * (c0 - c2) / den if den < 0 else 0.0))


def _sector_shifts(radius: np.ndarray, sectors: np.ndarray, mean: np.ndarray, *, max_lag: int = 15,
                   iterations: int = 4, background_px: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """Radial shift (pixels) of each azimuthal sector's ring profile: cross-correlated with
    the median profile of the sectors aligned by the previous estimate (a centre off by a few
    pixels smears the plain median). Returns the angles and shifts of the sectors whose
    profile correlates (> 0.3) with the aligned median."""
    hp = np.column_stack([_highpass(mean[:, j], background_px) for j in range(mean.shape[1])])
    shifts = np.zeros(mean.shape[1])
    found = np.zeros(mean.shape[1], bool)
    x = np.arange(radius.size, dtype=np.float64)
    for _ in range(iterations):
        aligned = np.full_like(hp, np.nan)
        for j in range(hp.shape[1]):
            col = hp[:, j]
            ok = np.isfinite(col)
            if ok.sum() >= 20:
                aligned[:, j] = np.interp(x + shifts[j], x[ok], col[ok], left=np.nan, right=np.nan)
        with warnings.catch_warnings():  # radii no sector sees are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = np.nanmedian(aligned, axis=1) if np.isfinite(aligned).any() else None
        if ref is None:
            break
        for j in range(hp.shape[1]):
            lag = _lag(hp[:, j], ref, max_lag)
            found[j] = lag is not None
            if lag is not None:
                shifts[j] = lag
        if found.sum() >= 3:  # the common shift (ring radius) is not a centre error: keep the median at 0
            shifts[found] -= np.median(shifts[found])
    return sectors[found], shifts[found]


def centre_check(frames: np.ndarray, valid: np.ndarray, ai, *, polarization: float | None,
                 max_px: float, background_px: int = 31, image: np.ndarray | None = None) -> GateCheck:
    """How far the beam centre is off: the rings' radial shift per sector fitted by
    ``a cos(chi) + b sin(chi) + c``; ``value = hypot(a, b)`` in pixels."""
    shape = frames.shape[1:]
    image = _summed(frames, valid) if image is None else image
    r_px, chi, scale = _geometry_arrays(ai, shape, polarization)
    radius, sectors, mean, _ = ring_cake(image, valid, r_px, chi, scale)
    angles, shifts = _sector_shifts(radius, sectors, mean, background_px=background_px)
    span = _angular_span(angles)
    if angles.size < 6 or span < math.radians(90):
        return GateCheck("beam_centre", None, max_px, None, unit="px",
                         detail=f"rings measured in {angles.size} sectors over {math.degrees(span):.0f} degrees "
                                f"(6 sectors over 90 degrees needed): the beam centre cannot be checked")
    design = np.column_stack([np.cos(angles), np.sin(angles), np.ones_like(angles)])
    coef, *_ = np.linalg.lstsq(design, shifts, rcond=None)
    # robust: refit without sectors more than 3 MAD off the first fit
    resid = shifts - design @ coef
    keep = np.abs(resid) <= 3 * 1.4826 * np.median(np.abs(resid)) + 0.05
    if keep.sum() >= 6:
        coef, *_ = np.linalg.lstsq(design[keep], shifts[keep], rcond=None)
    off = float(math.hypot(coef[0], coef[1]))
    # the offset's standard error from the fit's residuals: over a narrow arc of sectors the
    # centre and the ring radius are nearly degenerate
    d, y = (design[keep], shifts[keep]) if keep.sum() >= 6 else (design, shifts)
    dof = max(len(y) - 3, 1)
    s2 = float(np.sum((y - d @ coef) ** 2)) / dof
    cov = s2 * np.linalg.pinv(d.T @ d)
    se = float(math.sqrt(max(cov[0, 0] + cov[1, 1], 0.0) / 2))
    if se > max_px / 3:
        return GateCheck("beam_centre", None, max_px, None, unit="px",
                         detail=f"beam centre offset {off:.2f} +- {se:.2f} px from rings in {angles.size} sectors over "
                                f"{math.degrees(span):.0f} degrees: too uncertain to check against {max_px:g} px",
                         figures={"sectors": int(angles.size), "offset_px": off, "offset_se_px": se})
    # the centre is off towards the side where rings sit closest: -(a, b) in the detector's
    # (cos chi, sin chi) directions
    direction = math.degrees(math.atan2(-coef[1], -coef[0]))
    detail = (f"rings shift by up to {off:.2f} +- {se:.2f} px around the azimuth ({angles.size} sectors over "
              f"{math.degrees(span):.0f} degrees): the beam centre is {off:.2f} px off the PONI's, towards "
              f"chi = {direction:.0f} degrees")
    fix = ("the beam centre (PONI poni1/poni2) is off by more than a few pixels: re-fit the PONI on a calibrant "
           "(pyFAI-calib2) or check that the PONI belongs to these frames")
    return GateCheck("beam_centre", off, max_px, bool(off <= max_px), unit="px", detail=detail, fix=fix,
                     figures={"sectors": int(angles.size), "offset_se_px": se, "offset_a_px": float(coef[0]),
                              "offset_b_px": float(coef[1]), "radial_offset_px": float(coef[2])})


def _angular_span(angles: np.ndarray) -> float:
    """The smallest arc (rad) covering ``angles``."""
    if angles.size < 2:
        return 0.0
    a = np.sort(np.mod(angles, 2 * math.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    return float(2 * math.pi - gaps.max())
