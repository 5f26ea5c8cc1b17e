"""Detector statistics shared by pipelines and codecs: the azimuthal integrator of a
geometry, the sigma-clipped background of a diffraction frame, and the pixels that stand out
of it. Codecs need them too (the Bragg-preserving reduction replaces everything but the
spots by the background model), and codecs know no technique, so they live here.

pyFAI is imported lazily: tomography never loads it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["background_model", "integrator_for", "pixel_model", "shell_statistics", "significant_pixels"]

_INTEGRATORS: dict[str, Any] = {}


def integrator_for(geometry: Mapping[str, Any], shape: tuple[int, ...], *, cache: bool = True):
    """The pyFAI ``AzimuthalIntegrator`` of ``geometry`` (``ai.get_config()``) and detector
    ``shape``, built once per process: pyFAI keeps its CSR matrices on it, so the raw and
    every compressed frame reuse them. ``cache=False`` builds a throw-away one (a perturbed
    geometry or mask used once must neither stay in memory — a 10 Mpx CSR matrix is ~0.5 GB —
    nor reset the engine the points reuse)."""
    from lossbound.core.hashing import stable_hash

    shape = tuple(int(s) for s in shape)
    key = stable_hash({"geometry": dict(geometry), "shape": shape})
    ai = _INTEGRATORS.get(key) if cache else None
    if ai is None:
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        ai = AzimuthalIntegrator()
        ai.set_config(dict(geometry))
        ai.detector.max_shape = shape
        ai.detector.shape = shape
        if cache:
            _INTEGRATORS[key] = ai
    return ai


def background_model(ai, frame: np.ndarray, masked: np.ndarray, *, npt: int = 500, unit: str = "q_nm^-1",
                     thres: float = 3.0, max_iter: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel background and its standard deviation, ``(background, sigma)``, from the
    azimuthal sigma-clipped statistics of each resolution shell (pyFAI ``sigma_clip_ng``,
    azimuthal error model): Bragg spots are the outliers a shell's clipped mean leaves out.

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
    return pixel_model(*shell_statistics(ai, frame, masked, npt=npt, unit=unit, thres=thres, max_iter=max_iter))


def pixel_model(radial: np.ndarray, mean: np.ndarray, std: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(background, sigma)`` per pixel from the shells of :func:`shell_statistics`."""
    background = np.interp(r, radial, mean)
    # a shell's std cannot be below its own counting noise (Poisson), nor zero
    sigma = np.maximum(np.interp(r, radial, std), np.sqrt(np.maximum(background, 1.0)))
    return background, sigma


def shell_statistics(ai, frame: np.ndarray, masked: np.ndarray, *, npt: int = 500, unit: str = "q_nm^-1",
                     thres: float = 3.0, max_iter: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(radial, mean, std, r)``: each shell's position, sigma-clipped mean and standard
    deviation (pyFAI ``sigma_clip_ng``, azimuthal error model, CSR engine), and every pixel's
    position ``r`` in the same unit (what :func:`background_model` interpolates)."""
    if frame.shape != masked.shape:
        raise ValueError(f"frame {frame.shape} and mask {masked.shape} differ in shape")
    res = ai.sigma_clip_ng(frame, npt, unit=unit, method=("no", "csr", "cython"), error_model="azimuthal",
                           mask=masked.astype(np.int8), thres=thres, max_iter=max_iter, correctSolidAngle=False,
                           polarization_factor=None)
    radial = np.asarray(res.radial)
    mean = np.nan_to_num(np.asarray(res.intensity, np.float64))
    std = np.nan_to_num(np.asarray(res.std if res.std is not None else res.sigma, np.float64))
    return radial, mean, std, ai.center_array(frame.shape, unit=unit)


def significant_pixels(frame: np.ndarray, background: np.ndarray, sigma: np.ndarray, masked: np.ndarray, *,
                       k: float) -> tuple[np.ndarray, np.ndarray]:
    """``(candidate, signal)``: pixels above their background whose 3x3 box sum of
    background-subtracted signal exceeds ``k`` times the box's noise (single-pixel thresholds
    split streaky spots and fire on noise), and that signal (0 at masked pixels)."""
    from scipy import ndimage

    if not (frame.shape == background.shape == sigma.shape == masked.shape):
        raise ValueError(f"shapes differ: frame {frame.shape}, background {background.shape}, "
                         f"sigma {sigma.shape}, mask {masked.shape}")
    valid = ~masked
    signal = np.where(valid, frame.astype(np.float64) - background, 0.0)
    var = np.where(valid, sigma**2, 0.0)
    box = ndimage.uniform_filter(signal, size=3, mode="constant") * 9.0
    box_var = ndimage.uniform_filter(var, size=3, mode="constant") * 9.0
    candidate = valid & (signal > 0) & (box > k * np.sqrt(np.maximum(box_var, 1e-12)))
    return candidate, signal
