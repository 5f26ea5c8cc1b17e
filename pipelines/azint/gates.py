"""Quality gates of azimuthal integration: does the PONI fit the frames
(:mod:`lossbound.pipelines.rings`: the orientation and the beam centre)?"""
from __future__ import annotations

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
    """Every azint gate not switched off."""
    out = []
    if settings["orientation"]["action"] != "off":
        out.append(orientation_check(frames, valid, ai, polarization=polarization, flipped=flipped,
                                     max_ratio=float(settings["orientation"]["max_ratio"])))
    if settings["beam_centre"]["action"] != "off":
        out.append(centre_check(frames, valid, ai, polarization=polarization,
                                max_px=float(settings["beam_centre"]["max_px"])))
    return out
