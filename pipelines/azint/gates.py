"""Quality gates of azimuthal integration: does the PONI fit the frames
(:mod:`lossbound.pipelines.rings`: the orientation and the beam centre)?"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from lossbound.core.gates import GateCheck
from lossbound.pipelines.rings import centre_check, orientation_check

__all__ = ["DEFAULTS", "checks"]

#: the gates' default settings (``technique.gates`` overrides them)
DEFAULTS: dict[str, dict[str, Any]] = {
    # refuse when another orientation's rings are sharper than the declared one's by this factor
    "orientation": {"action": "refuse", "max_ratio": 1.5},
    # warn when the beam centre is off by more than this many pixels
    "beam_centre": {"action": "warn", "max_px": 3.0},
}


def checks(frames: np.ndarray, valid: np.ndarray, ai, settings: Mapping[str, Mapping[str, Any]], *,
           polarization: float | None, flipped: bool) -> list[GateCheck]:
    """Every azint gate not switched off.

    The ring sharpness of a smooth pattern (SAXS: a steep fall-off, form-factor minima) can
    favour another orientation by chance. An orientation that does not fit the PONI also
    leaves the rings off-centre, so when the rings are concentric about the PONI's centre to
    within the centre gate's limit, the orientation gate passes and says why."""
    out = []
    max_px = float(settings["beam_centre"]["max_px"])
    shape = frames.shape[1:]
    centre = None
    if settings["orientation"]["action"] != "off":
        check = orientation_check(frames, valid, ai, polarization=polarization, flipped=flipped,
                                  max_ratio=float(settings["orientation"]["max_ratio"]))
        if check.passed is False:
            centre = centre_check(frames, valid, ai, polarization=polarization, max_px=max_px)
            moved = centre_moved_by(str(check.figures.get("best")), ai, shape)
            se = float((centre.figures or {}).get("offset_se_px") or 0.0)
            # the better-scoring orientation would put the ring centre measurably elsewhere
            if centre.passed and moved > centre.value + 3 * se + 1.0:
                check = dataclasses.replace(
                    check, passed=True, fix="",
                    detail=f"{check.detail}; but the rings are concentric about the PONI's centre to "
                           f"{centre.value:.2g} px (within {max_px:g}), and {check.figures.get('best')} would move "
                           f"that centre by {moved:.1f} px: the sharper score is not a better fit",
                    figures={**check.figures, "concentric_px": centre.value, "centre_moved_px": moved})
        out.append(check)
    if settings["beam_centre"]["action"] != "off":
        out.append(centre or centre_check(frames, valid, ai, polarization=polarization, max_px=max_px))
    return out


def centre_moved_by(orientation: str, ai, shape: tuple[int, ...]) -> float:
    """How far (pixels) re-writing the frames in ``orientation`` (a name of
    :func:`lossbound.pipelines.rings.orientation_check`) moves the PONI's beam centre on the
    detector: an orientation that leaves it in place cannot be told apart by concentric rings."""
    fit = ai.getFit2D()
    r, c = float(fit["centerY"]), float(fit["centerX"])
    h, w = float(shape[0]) - 1.0, float(shape[1]) - 1.0
    new = {"as_read": (r, c), "flipud": (h - r, c), "fliplr": (r, w - c), "rot180": (h - r, w - c),
           "transpose": (c, r), "rot90": (w - c, r), "rot270": (c, h - r), "antitranspose": (w - c, h - r)}
    nr, nc = new.get(orientation, (r, c))
    return float(np.hypot(nr - r, nc - c))
