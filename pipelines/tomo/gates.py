"""Quality gates of tomography: do the angles and the rotation centre fit the scan?

- ``angle_unit``: a parallel-beam scan spans 180 or 360 degrees. Angles stored in radians
  without a ``units`` attribute read as 3.14 "degrees"; degrees marked as radians read as
  10 313. Either reconstructs garbage that every compressed run then matches.
- ``rotation_centre``: the centre the pipeline uses (Vo's, or the configured one) against an
  independent estimate, the centre whose reconstruction of the middle row has the lowest
  histogram entropy (sharp edges, no arcs; Donath et al., J. Opt. Soc. Am. A 23, 1048 (2006)).
- ``half_set_frc``: the raw reconstruction's half-set FRC resolution (the ``frc`` evaluator's
  reference): a scan that resolves nothing finer than this has no science to protect.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from lossbound.core.gates import GateCheck

__all__ = ["DEFAULTS", "angle_check", "centre_by_entropy", "centre_check", "frc_check"]

DEFAULTS: dict[str, dict[str, Any]] = {
    # refuse unless the angles span a tomographic range (180-degree scans from 179, 360 with overscan)
    "angle_unit": {"action": "refuse", "min_span_deg": 150.0, "max_span_deg": 370.0},
    # refuse when the centre used and the entropy centre differ by more than this (simulation:
    # 0.03 px; tooth: 0.93 px, Vo 295.00 against 295.93 on its undersampled 181 angles)
    "rotation_centre": {"action": "refuse", "max_px": 1.0},
    # warn when the raw half-set FRC resolves nothing finer than this period (simulation 2.6 px,
    # tooth 10.2 px; tooth with its angles read as radians: 59 px)
    "half_set_frc": {"action": "warn", "max_resolution_px": 20.0},
}


def angle_check(theta_deg: np.ndarray, *, min_span: float, max_span: float, unit: str | None) -> GateCheck:
    """The angles' span against a tomographic range; the fix names the unit they look like."""
    span = float(np.max(theta_deg) - np.min(theta_deg)) if theta_deg.size else 0.0
    ok = min_span <= span <= max_span
    as_rad, as_deg = math.degrees(span), math.radians(span)
    if min_span <= as_rad <= max_span:
        fix = (f"the angles span {span:.4g}, which is {as_rad:.0f} degrees if they are radians: set "
               f"dataset.angle_unit=rad (or write units='rad' on the angle dataset)")
    elif min_span <= as_deg <= max_span:
        fix = (f"the angles span {span:.0f} degrees, which is {as_deg:.0f} if they are degrees read as radians: "
               f"set dataset.angle_unit=deg")
    else:
        fix = (f"the angles span {span:.4g} degrees, not a tomographic 180 or 360: check the angle dataset and "
               f"dataset.angle_unit (technique.gates.angle_unit.action=warn for a limited-angle scan)")
    return GateCheck("angle_unit", span, [min_span, max_span], ok, unit="deg",
                     detail=f"the angles span {span:.4g} degrees ({'from the file' if unit is None else unit})",
                     fix=fix)


def _entropy(image: np.ndarray, bins: int = 256) -> float:
    """Shannon entropy of the histogram of the reconstruction disc's values."""
    n = image.shape[-1]
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 <= (0.45 * n) ** 2
    v = image[disc]
    v = v[np.isfinite(v)]
    lo, hi = np.percentile(v, [0.5, 99.5])
    hist, _ = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    p = hist[hist > 0] / hist.sum()
    return float(-np.sum(p * np.log(p)))


def centre_by_entropy(reconstruct: Callable[[float], np.ndarray], start: float, *, half_width: float = 4.0,
                      step: float = 0.25) -> tuple[float, dict[str, float]]:
    """The centre within ``start +- half_width`` whose reconstruction has the lowest entropy:
    a grid of ``step``, then a parabola through the minimum and its neighbours."""
    centres = start + np.arange(-half_width, half_width + step / 2, step)
    values = np.array([_entropy(reconstruct(float(c))) for c in centres])
    k = int(np.argmin(values))
    best = float(centres[k])
    if 0 < k < values.size - 1:
        a, b, c = values[k - 1:k + 2]
        den = a - 2 * b + c
        if den > 0:
            best += 0.5 * (a - c) / den * step
    return best, {"grid_edge": float(k in (0, values.size - 1)), "entropy_min": float(values[k]),
                  "entropy_range": float(values.max() - values.min())}


def centre_check(used: float, vo: float | None, entropy: float, figures: Mapping[str, float], *, configured: bool,
                 max_px: float) -> GateCheck:
    """The centre the pipeline uses against the entropy centre."""
    diff = abs(used - entropy)
    source = "configured (technique.pipeline.center)" if configured else "Vo's method"
    detail = (f"rotation centre {used:.2f} ({source}); lowest reconstruction entropy at {entropy:.2f}"
              + (f"; Vo's method {vo:.2f}" if configured and vo is not None else ""))
    if figures.get("grid_edge"):
        detail += f" (at the edge of the searched +-4 px: the centre may be further off)"
    fix = (f"the rotation centre is uncertain: the reconstruction is sharpest at column {entropy:.2f}, not {used:.2f}; "
           + ("check technique.pipeline.center (null: found on the data)" if configured else
              "set technique.pipeline.center=<column> after checking a few slices"))
    return GateCheck("rotation_centre", diff, max_px, diff <= max_px, unit="px", detail=detail, fix=fix,
                     figures={"used": used, "entropy": entropy, **({"vo": vo} if vo is not None else {}),
                              **dict(figures)})


def frc_check(reference: Mapping[str, Any] | None, *, max_resolution_px: float) -> GateCheck:
    """The raw half-set FRC resolution (the ``frc`` evaluator's reference) against a floor."""
    if not reference or reference.get("resolution_px") is None:
        return GateCheck("half_set_frc", None, max_resolution_px, None, unit="px",
                         detail="no frc evaluator (technique.evaluators.frc) or no half-sets "
                                "(technique.pipeline.halves=false)")
    res = float(reference["resolution_px"])
    crossed = bool(reference.get("crossed", True))
    return GateCheck("half_set_frc", res, max_resolution_px, res <= max_resolution_px, unit="px",
                     detail=(f"the even- and odd-angle reconstructions agree down to a period of {res:.3g} px "
                             f"(FRC 1/7)" if crossed else "the half-set FRC stays above 1/7 up to Nyquist"),
                     fix="the raw reconstruction's half-sets hardly agree: check the rotation centre, the angles, "
                         "the flats and darks, and the selected rows (technique.pipeline.rows)")
