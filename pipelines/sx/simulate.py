"""Deterministic simulated serial-crystallography stills with a ground truth.

A crystal of known cell (thaumatin-like, tetragonal by default) in a random orientation per
frame; reflections are excited where the reciprocal lattice meets the Ewald sphere (a
Gaussian excitation window gives partialities), projected onto a flat detector normal to the
beam, and drawn as Gaussian spots with Wilson-like intensities. On top: air scatter, a water
ring at ~3.2 A, Poisson noise, the detector's module gaps (-1), bad pixels (-2) and a hot
pixel above the count cut-off. Some frames hold no crystal (misses), so hit finding has a
truth too. The true orientation matrices and the true spots are returned and stored.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lossbound.pipelines.simfiles import FrameOverlay, FramesModel

__all__ = ["DEFAULTS", "predict_spots", "simulate_stills", "simulation_model", "simulation_params",
           "write_simulation"]

DEFAULTS: dict[str, Any] = {
    "detector": "Pilatus2M",
    "cell": [58.0, 58.0, 150.0, 90.0, 90.0, 90.0],   # orthogonal cells only (a, b, c in A)
    "space_group": "P41212",
    "wavelength_A": 1.0,
    "distance_mm": 200.0,
    "beam_px": [737.5, 839.5],      # beam centre (x, y) in pixels, corner-based
    "d_min_A": 2.0,                 # resolution limit of the crystal
    "excitation_width": 0.0012,     # 1/A, Gaussian sigma of the excitation error (mosaicity + bandwidth)
    "spot_sigma_px": 0.8,
    "mean_spot_counts": 400.0,      # mean integrated counts of a fully excited low-resolution reflection
    "b_factor": 25.0,               # A^2, Wilson fall-off
    "air_counts": 3.0,
    "water_ring_counts": 6.0,
    "n_frames": 6,
    "misses": [2, 5],               # frames without a crystal
    "bad_pixels": 40,
    "seed": 0,
    "version": 1,
}
COUNT_CUTOFF = 1_048_500


def simulation_params(**overrides: Any) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown simulation parameter(s) {', '.join(unknown)}; expected {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **overrides}
    out["cell"] = [float(v) for v in out["cell"]]
    out["beam_px"] = [float(v) for v in out["beam_px"]]
    out["misses"] = [int(v) for v in out["misses"]]
    if any(abs(angle - 90.0) > 1e-9 for angle in out["cell"][3:]):
        raise ValueError("the simulation draws orthogonal cells only (alpha = beta = gamma = 90)")
    return out


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (from a random unit quaternion)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def predict_spots(orientation: np.ndarray, params: dict[str, Any], shape: tuple[int, int], pixel_m: float
                  ) -> dict[str, np.ndarray]:
    """Reflections in diffraction condition for ``orientation`` (U, 3x3): detector position
    (pixel-centre coordinates, y down the rows, x along the columns), hkl, excitation error
    and partiality. Lab frame: beam along +z, detector at z = distance, x/y = columns/rows."""
    a, b, c = params["cell"][:3]
    lam = params["wavelength_A"]
    d_min = params["d_min_A"]
    hmax, kmax, lmax = (int(math.ceil(v / d_min)) for v in (a, b, c))
    h, k, l = np.meshgrid(np.arange(-hmax, hmax + 1), np.arange(-kmax, kmax + 1), np.arange(-lmax, lmax + 1),
                          indexing="ij")
    hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    s = (orientation @ (hkl / np.array([a, b, c])).T).T                   # reciprocal-space vectors, 1/A
    s_len = np.linalg.norm(s, axis=1)
    k0 = np.array([0.0, 0.0, 1.0 / lam])
    kout = s + k0
    eps = np.linalg.norm(kout, axis=1) - 1.0 / lam                        # excitation error
    width = params["excitation_width"]
    sel = (s_len <= 1.0 / d_min) & (np.abs(eps) < 3 * width) & (kout[:, 2] > 0)
    kout, hkl, eps, s_len = kout[sel], hkl[sel], eps[sel], s_len[sel]
    dist_px = params["distance_mm"] * 1e-3 / pixel_m
    bx, by = params["beam_px"]
    x = bx + dist_px * kout[:, 0] / kout[:, 2]
    y = by + dist_px * kout[:, 1] / kout[:, 2]
    on = (x > 2) & (x < shape[1] - 3) & (y > 2) & (y < shape[0] - 3)
    return {"y": y[on], "x": x[on], "hkl": hkl[on], "excitation": eps[on], "s": s_len[on],
            "partiality": np.exp(-0.5 * (eps[on] / width) ** 2)}


def _structure_factors(hkl: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic |F|^2 per hkl (exponential, Wilson statistics), the same for every frame."""
    key = (hkl[:, 0] * 73856093) ^ (hkl[:, 1] * 19349663) ^ (hkl[:, 2] * 83492791) ^ (seed * 2654435761)
    u = ((key.astype(np.uint64) * np.uint64(11400714819323198485)) >> np.uint64(11)).astype(np.float64) / 2.0**53
    return -np.log1p(-np.clip(u, 0, 1 - 1e-12))


def simulate_stills(**params: Any) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """``(frames, integrator, truth)``: int32 frames ``(n, rows, cols)`` with Pilatus sentinels;
    truth = per-frame orientation matrices (identity-free for misses: NaN) and true spots."""
    frames, ai, truth, _ = _simulate(simulation_params(**params))
    return frames, ai, truth


def simulation_model(**params: Any) -> FramesModel:
    """The noise-free model (expected counts per frame, defects) of the stills
    :func:`simulate_stills` writes with these parameters."""
    return _simulate(simulation_params(**params))[3]


def _simulate(p: dict[str, Any]) -> tuple[np.ndarray, Any, dict[str, Any], FramesModel]:
    from pyFAI.detectors import detector_factory
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    det = detector_factory(p["detector"])
    shape = tuple(det.shape)
    pixel = float(det.pixel1)
    ai = AzimuthalIntegrator(detector=det)
    ai.setFit2D(p["distance_mm"], p["beam_px"][0], p["beam_px"][1], pixelX=pixel * 1e6, pixelY=pixel * 1e6)
    ai.wavelength = p["wavelength_A"] * 1e-10
    rng = np.random.default_rng(p["seed"])
    q = ai.center_array(shape, unit="q_A^-1")
    ring_q = 2 * math.pi / 3.2
    background = (p["air_counts"] * (0.3 + np.exp(-q / 0.6)) +
                  p["water_ring_counts"] * np.exp(-0.5 * ((q - ring_q) / 0.25) ** 2)) * ai.solidAngleArray(shape)
    gaps = det.mask.astype(bool) if det.mask is not None else np.asarray(det.calc_mask(), bool)
    valid_pixels = np.argwhere(~gaps)
    bad = valid_pixels[rng.choice(len(valid_pixels), int(p["bad_pixels"]), replace=False)]
    hot = valid_pixels[rng.integers(len(valid_pixels))]
    frames = np.empty((int(p["n_frames"]),) + shape, np.int32)
    expected = np.empty((int(p["n_frames"]),) + shape, np.float32)
    orientations = np.full((int(p["n_frames"]), 3, 3), np.nan)
    spot_rows: list[np.ndarray] = []
    half = 4
    oy, ox = np.mgrid[-half:half + 1, -half:half + 1]
    for f in range(int(p["n_frames"])):
        lam = background.copy()
        if f not in p["misses"]:
            u = _random_rotation(rng)
            orientations[f] = u
            spots = predict_spots(u, p, shape, pixel)
            f2 = _structure_factors(spots["hkl"], p["seed"])
            counts = p["mean_spot_counts"] * f2 * spots["partiality"] * np.exp(-p["b_factor"] * spots["s"] ** 2 / 2)
            sig = p["spot_sigma_px"]
            for yc, xc, n in zip(spots["y"], spots["x"], counts):
                iy, ix = int(math.floor(yc)), int(math.floor(xc))  # pixel (iy, ix) spans [iy, iy+1)
                yy, xx = iy + oy, ix + ox
                ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
                g = np.exp(-((yy + 0.5 - yc) ** 2 + (xx + 0.5 - xc) ** 2) / (2 * sig**2))
                lam[yy[ok], xx[ok]] += n * g[ok] / g.sum()
            spot_rows.append(np.column_stack([np.full(spots["y"].size, f), spots["y"], spots["x"], spots["hkl"],
                                              counts, spots["partiality"]]))
        frames[f] = rng.poisson(lam)
        expected[f] = lam
    overlay = FrameOverlay(gaps=gaps, bad=bad, hot=hot, hot_value=COUNT_CUTOFF + 27)
    overlay.apply(frames)
    table = np.concatenate(spot_rows) if spot_rows else np.zeros((0, 8))
    truth = {"orientations": orientations, "spots": table,
             "spot_columns": ["frame", "y", "x", "h", "k", "l", "counts", "partiality"]}
    return frames, ai, truth, FramesModel(expected, overlay)


def write_simulation(path: Path, poni: Path, **params: Any) -> dict[str, Any]:
    """Frames as ``/entry/data/data`` (count cut-off as attribute), the truth under ``/truth``
    (spot columns in its ``spot_columns`` dataset), the cell under ``/entry/sample``, the
    geometry as PONI beside."""
    from lossbound.pipelines.simfiles import write_frames

    p = simulation_params(**params)
    frames, ai, truth = simulate_stills(**p)
    write_frames(path, poni, frames, ai, p, count_cutoff=COUNT_CUTOFF, extra={
        "/entry/sample/unit_cell": np.array(p["cell"]), "/entry/sample/space_group": p["space_group"],
        "/truth/orientations": truth["orientations"], "/truth/spots": truth["spots"],
        "/truth/spot_columns": np.array(truth["spot_columns"], dtype="S"),
    })
    return p
