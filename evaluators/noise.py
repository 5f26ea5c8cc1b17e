"""Compression error measured against the reconstruction's own noise.

A lossy codec is harmless when the error it adds is small next to the noise the measurement
already has. The noise of the full raw reconstruction is estimated from the two half-set
reconstructions (even- and odd-index angles): each half has twice the variance of the full
set, so ``sigma_full = std(even - odd) / 2``. Angular undersampling adds streaks to
``even - odd`` too, so the estimate is an upper bound on the noise (the ratio a lower bound
on the harm) — small for well-sampled scans.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, check_mask_param, mask_for, reject_unknown, result_array
from lossbound.evaluators.image import broadcast_mask, check_same_shape


def _masked_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``b - a`` in float64 over the ``mask`` pixels (all pixels when None)."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    return diff if mask is None else diff[broadcast_mask(mask, diff.shape)]


def half_set_noise(even: np.ndarray, odd: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Noise standard deviation of the full-set reconstruction from its two half sets.

    Parameters
    ----------
    even, odd : ndarray
        Reconstructions from the even- and odd-index projections (same shape).
    mask : ndarray of bool, optional
        Pixels to use (broadcast over leading axes), e.g. the reconstruction circle.

    Returns
    -------
    float
        ``std(even - odd) / 2`` over the masked pixels.
    """
    check_same_shape(even, odd, what="half-set reconstruction")
    return float(np.std(_masked_diff(odd, even, mask)) / 2.0)


def error_to_noise(reference: np.ndarray, test: np.ndarray, *, noise: float,
                   mask: np.ndarray | None = None) -> float:
    """RMS of ``test - reference`` (over ``mask``) in units of ``noise``."""
    check_same_shape(reference, test)
    if not np.isfinite(noise) or noise <= 0:
        raise ValueError(f"noise must be a finite positive number, got {noise}")
    diff = _masked_diff(reference, test, mask)
    return float(np.sqrt(np.mean(diff**2)) / noise)


@EVALUATORS.register("recon_noise")
class ReconNoise(Evaluator):
    """Reconstruction error of the compressed data in units of the raw reconstruction's noise.

    Parameters
    ----------
    key : str
        Full reconstruction (default ``'recon'``).
    half_keys : pair of str
        Half-set reconstructions (default ``('recon_even', 'recon_odd')``).
    mask : None, 'circle' or str
        Restrict to the reconstruction circle, or to a boolean array of the data.
    prefix : str
        Metric name prefix (default ``'recon'``).

    Output keys: ``<prefix>_noise_sigma`` (raw noise estimate, μ units) and
    ``<prefix>_error_to_noise`` (RMS compression error / that noise; 0.3 means the total noise
    grows by sqrt(1 + 0.3²) - 1 = 4.4 %).
    """

    name = "recon_noise"

    def __init__(self, *, key: str = "recon", half_keys: Sequence[str] = ("recon_even", "recon_odd"),
                 mask: str | None = None, prefix: str = "recon", **extra: Any) -> None:
        reject_unknown(self.name, extra)
        check_mask_param(self.name, mask)
        super().__init__(key=key, half_keys=tuple(half_keys), mask=mask, prefix=prefix)
        self.key, self.half_keys, self.mask, self.prefix = key, tuple(half_keys), mask, str(prefix)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        even, odd = (result_array(raw, k, self.name) for k in self.half_keys)
        return {"noise": half_set_noise(even, odd, mask=mask_for(self.mask, even.shape, raw, evaluator=self.name))}

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        ref = result_array(raw, self.key, self.name)
        test = result_array(compressed, self.key, self.name)
        noise = float(reference["noise"])
        return {
            f"{self.prefix}_noise_sigma": noise,
            f"{self.prefix}_error_to_noise": error_to_noise(ref, test, noise=noise, mask=mask_for(self.mask, ref.shape, raw, evaluator=self.name)),
        }
