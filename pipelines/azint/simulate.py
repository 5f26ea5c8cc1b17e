"""Deterministic simulated frames as a detector writes them: CeO2 powder rings on a Pilatus 1M
(``pattern: powder``, the default) or small-angle scattering of monodisperse spheres
(``pattern: saxs``, the beam just off the detector's edge as on a pinhole SAXS camera).

pyFAI's calibrant model draws the rings for a tilted geometry; the SAXS curve is the sphere form
factor (a Guinier region at low q, then q^-4 fringes) on a flat background. On top come an
air-scatter background falling with angle, Poisson photon noise, the detector's module gaps (-1) and bad
pixels (-2) as a Pilatus writes them, a hot pixel above the count cut-off and a few zingers.
The frame and its PONI file are written by :func:`write_simulation`; nothing depends on
randomness outside ``seed``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lossbound.pipelines.simfiles import FrameOverlay, FramesModel

__all__ = ["DEFAULTS", "simulate_powder", "simulation_model", "write_simulation"]

DEFAULTS: dict[str, Any] = {
    "detector": "Pilatus1M",     # any pyFAI detector name; its module gaps are written as -1
    "calibrant": "CeO2",
    "wavelength_A": 0.7,
    "distance_mm": 200.0,
    "poni_px": [560.0, 470.0],   # point of normal incidence (row, col)
    "rot_rad": [0.012, -0.008, 0.0],
    "peak_counts": 3000.0,       # brightest ring, counts per pixel
    "background_counts": 40.0,   # air scatter near the beam
    "resolution_deg": 0.06,      # ring FWHM (instrument resolution)
    "n_frames": 1,
    "bad_pixels": 60,
    "zingers": 8,
    "seed": 0,
    "version": 1,
    "pattern": "powder",         # powder | saxs
    "particle_radius_nm": 5.0,   # saxs: sphere radius (Rg = 0.775 R)
    "saxs_counts": 3000.0,       # saxs: counts per pixel extrapolated to q = 0
}

COUNT_CUTOFF = 1_048_500  # hot pixel reads above it (as on real Pilatus frames)


def simulation_params(**overrides: Any) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown simulation parameter(s) {', '.join(unknown)}; expected {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **overrides}
    out["poni_px"] = [float(v) for v in out["poni_px"]]
    out["rot_rad"] = [float(v) for v in out["rot_rad"]]
    return out


def geometry(params: dict[str, Any]):
    """The pyFAI integrator of the simulated setup."""
    from pyFAI.detectors import detector_factory
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    det = detector_factory(params["detector"])
    p1, p2 = (v * det.pixel1 for v in params["poni_px"])
    r1, r2, r3 = params["rot_rad"]
    return AzimuthalIntegrator(dist=params["distance_mm"] * 1e-3, poni1=p1, poni2=p2, rot1=r1, rot2=r2, rot3=r3,
                               detector=det, wavelength=params["wavelength_A"] * 1e-10)


def gap_mask(detector) -> np.ndarray:
    """True in the inter-module gaps of a pyFAI detector (none for a monolithic one)."""
    mask = detector.mask if detector.mask is not None else detector.calc_mask()
    return np.zeros(detector.shape, bool) if mask is None else np.asarray(mask, bool)


def simulate_powder(**params: Any) -> tuple[np.ndarray, Any]:
    """``(frames, integrator)``: int32 frames ``(n_frames, rows, cols)`` with Pilatus sentinels."""
    frames, ai, _ = _simulate(simulation_params(**params))
    return frames, ai


def simulation_model(**params: Any) -> "FramesModel":
    """The noise-free model of the frames :func:`simulate_powder` writes with these parameters."""
    return _simulate(simulation_params(**params))[2]


def _simulate(p: dict[str, Any]) -> tuple[np.ndarray, Any, "FramesModel"]:
    from pyFAI.calibrant import get_calibrant

    ai = geometry(p)
    shape = tuple(ai.detector.shape)
    tth = ai.center_array(shape, unit="2th_rad")
    air = p["background_counts"] * (0.25 + np.exp(-np.rad2deg(tth) / 12.0))
    if p["pattern"] == "saxs":
        qr = ai.center_array(shape, unit="q_nm^-1") * float(p["particle_radius_nm"])
        form = (3.0 * (np.sin(qr) - qr * np.cos(qr)) / np.maximum(qr, 1e-6) ** 3) ** 2
        expected = (p["saxs_counts"] * form + air) * ai.solidAngleArray(shape)
    elif p["pattern"] == "powder":
        cal = get_calibrant(p["calibrant"])
        cal.wavelength = ai.wavelength
        rings = cal.fake_calibration_image(ai, shape=shape, Imax=1.0, Imin=0.0, resolution=p["resolution_deg"])
        # intensity falls with angle like a real pattern's form factor and Lorentz terms
        falloff = 1.0 / (1.0 + (np.rad2deg(tth) / 15.0) ** 2)
        expected = (p["peak_counts"] * rings * falloff + air) * ai.solidAngleArray(shape)
    else:
        raise ValueError(f"pattern must be 'powder' or 'saxs', got {p['pattern']!r}")
    rng = np.random.default_rng(p["seed"])
    frames = rng.poisson(expected, size=(int(p["n_frames"]),) + shape).astype(np.int32)
    gaps = gap_mask(ai.detector)
    frames[:, gaps] = -1
    valid = np.argwhere(~gaps)
    bad = valid[rng.choice(len(valid), int(p["bad_pixels"]), replace=False)]
    frames[:, bad[:, 0], bad[:, 1]] = -2
    hot = valid[rng.integers(len(valid))]
    frames[:, hot[0], hot[1]] = COUNT_CUTOFF + 27
    zingers = []
    for f in frames:  # cosmic-ray zingers: single bright pixels, a different place each frame
        z = valid[rng.choice(len(valid), int(p["zingers"]), replace=False)]
        add = rng.integers(2000, 20000, size=len(z)).astype(np.int32)
        f[z[:, 0], z[:, 1]] += add
        zingers.append((z, add))
    overlay = FrameOverlay(gaps=gaps, bad=bad, hot=hot, hot_value=COUNT_CUTOFF + 27, zingers=zingers)
    model = FramesModel(np.broadcast_to(expected, frames.shape), overlay)
    return frames, ai, model


def write_simulation(path: Path, poni: Path, **params: Any) -> dict[str, Any]:
    """Write the frames as NeXus-like HDF5 (``/entry/data/data``) and the geometry as PONI."""
    from lossbound.pipelines.simfiles import write_frames

    p = simulation_params(**params)
    frames, ai = simulate_powder(**p)
    write_frames(path, poni, frames, ai, p, count_cutoff=COUNT_CUTOFF)
    return p
