"""Distortion of the detector payload itself, in units of its photon-counting noise.

Independent of any science pipeline: it compares the raw and the decompressed payload
(e.g. projections) pixel by pixel.  Errors are expressed relative to the Poisson (+ read)
noise sigma of each raw pixel, because a codec error well below the noise already present in
the measurement cannot matter to any analysis -- unless it is *systematic*: a bias of a
tenth of a sigma in every pixel survives averaging over millions of pixels, while noise
does not, hence the separate ``proj_bias_sigma``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, reject_unknown
from lossbound.evaluators.image import check_same_shape, psnr_from_mse, slab_bounds
from lossbound.core.errors import ConfigError
from lossbound.core.noise import poisson_sigma

__all__ = ["max_abs_error", "poisson_sigma", "error_in_sigma", "Distortion"]


def max_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    """Largest absolute pixel difference ``max |test - reference|``.

    Parameters
    ----------
    reference, test : ndarray
        Arrays of the same shape, any real dtype (differences are taken in float64, so
        unsigned detector data cannot wrap around).

    Returns
    -------
    error : float
        0 for identical inputs (and for empty arrays).

    Raises
    ------
    ValueError
        On a shape mismatch.
    """
    check_same_shape(reference, test)
    reference = np.asarray(reference)
    test = np.asarray(test)
    if reference.size == 0:
        return 0.0
    worst = 0.0
    for sl in slab_bounds(reference.shape):
        diff = np.asarray(test[sl], dtype=np.float64) - np.asarray(reference[sl], dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(diff))))
    return worst


def error_in_sigma(reference: np.ndarray, test: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Signed pixel error in units of the noise: ``(test - reference) / sigma``.

    Parameters
    ----------
    reference, test : ndarray
        Raw and decompressed data of the same shape.
    sigma : ndarray or float
        Noise sigma of ``reference`` (e.g. from :func:`poisson_sigma`), broadcastable to
        its shape and strictly positive.

    Returns
    -------
    z : ndarray of float64
        Same shape as ``reference``.

    Raises
    ------
    ValueError
        On a shape mismatch, a ``sigma`` that does not broadcast, or a non-positive sigma.
    """
    check_same_shape(reference, test)
    sigma = np.asarray(sigma, dtype=np.float64)
    try:
        np.broadcast_shapes(sigma.shape, np.shape(reference))
    except ValueError:
        raise ValueError(
            f"sigma shape {sigma.shape} cannot be broadcast to the data shape "
            f"{np.shape(reference)}"
        ) from None
    if sigma.size and not np.all(sigma > 0):
        raise ValueError("sigma must be strictly positive (use a floor, see poisson_sigma)")
    diff = np.asarray(test, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return diff / sigma


@EVALUATORS.register("distortion")
class Distortion(Evaluator):
    """Raw-vs-decompressed payload error, absolute and in units of the photon noise.

    Parameters
    ----------
    dark_key : str or None
        Array of dark frames (default ``'darks'``); when present in the raw dataset, its
        mean over axis 0 is the per-pixel offset subtracted before the Poisson model,
        otherwise the offset is 0.
    adu_per_photon : float, optional
        Detector gain; default ``raw.data.meta['adu_per_photon']``, else 1.0.
    read_noise : float
        Read-noise sigma in ADU (default 0).
    floor : float, optional
        Minimum sigma (default: ``adu_per_photon``, see :func:`poisson_sigma`).

    Pixels outside the dataset's valid-pixel mask (``Dataset.mask``), when it has one, are
    left out of every metric.

    Output keys
    -----------
    ``proj_max_abs_error`` (ADU), ``proj_psnr`` (dB; data range = raw payload max - min),
    ``proj_rms_error_sigma`` (RMS of error/sigma), ``proj_max_error_sigma`` (max of
    |error|/sigma), ``proj_bias_sigma`` (|mean error| / mean sigma, the magnitude of a
    systematic shift; a tolerance is then a plain maximum).
    """

    name = "distortion"

    def __init__(
        self,
        *,
        dark_key: str | None = "darks",
        adu_per_photon: float | None = None,
        read_noise: float = 0.0,
        floor: float | None = None,
        **extra: Any,
    ) -> None:
        reject_unknown(self.name, extra)
        try:
            # Validate early with dummy data so a bad config fails before the sweep starts.
            poisson_sigma(
                np.zeros(1),
                adu_per_photon=1.0 if adu_per_photon is None else adu_per_photon,
                read_noise=read_noise,
                floor=floor,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"evaluator 'distortion': {exc}") from None
        super().__init__(
            dark_key=dark_key, adu_per_photon=adu_per_photon, read_noise=read_noise, floor=floor
        )
        self.dark_key = dark_key
        self.adu_per_photon = adu_per_photon
        self.read_noise = float(read_noise)
        self.floor = floor

    def _gain(self, raw: Outcome) -> float:
        if self.adu_per_photon is not None:
            return float(self.adu_per_photon)
        return float(raw.data.meta.get("adu_per_photon") or 1.0)

    def _offset(self, raw: Outcome) -> np.ndarray | float:
        if self.dark_key is None or self.dark_key not in raw.data.arrays:
            return 0.0
        darks = np.asarray(raw.data.arrays[self.dark_key])
        # A single 2-D dark frame is its own mean; a stack is averaged over frames.
        return darks.astype(np.float64) if darks.ndim < 2 else darks.mean(axis=0, dtype=np.float64)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        payload = raw.data.payload_array
        lo, hi = np.inf, -np.inf
        for sl in slab_bounds(payload.shape):
            chunk = np.asarray(payload[sl])
            if chunk.size:
                lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        return {"data_range": hi - lo if hi >= lo else 0.0, "adu_per_photon": self._gain(raw)}

    def compare(
        self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]
    ) -> dict[str, float]:
        ref = raw.data.payload_array
        test = compressed.data.payload_array
        check_same_shape(ref, test, what=f"payload {raw.data.payload!r}")
        gain = float(reference.get("adu_per_photon", self._gain(raw)))
        offset = np.asarray(self._offset(raw))
        try:
            offset = np.broadcast_to(offset, ref.shape)
        except ValueError:
            raise ValueError(
                f"dark offset shape {offset.shape} (mean of {self.dark_key!r}) does not match "
                f"the payload frames {ref.shape}"
            ) from None

        # The dataset's valid-pixel mask (if it carries one): invalid pixels are not measured.
        valid = None if raw.data.mask is None else np.broadcast_to(raw.data.mask, ref.shape)
        # One pass over slabs of the first axis, accumulating everything in float64.
        n = 0
        sq_err = sum_err = sum_sigma = sq_z = 0.0
        max_err = max_z = 0.0
        for sl in slab_bounds(ref.shape):
            r = np.asarray(ref[sl], dtype=np.float64)
            with np.errstate(invalid="ignore"):  # inf - inf at masked-out pixels
                err = np.asarray(test[sl], dtype=np.float64) - r
            sigma = poisson_sigma(
                r,
                offset=offset[sl],
                adu_per_photon=gain,
                read_noise=self.read_noise,
                floor=self.floor,
            )
            if valid is not None:
                keep = valid[sl]
                err, sigma = err[keep], sigma[keep]
            z = err / sigma
            n += err.size
            if err.size == 0:
                continue
            sq_err += float(np.dot(err.ravel(), err.ravel()))
            sum_err += float(err.sum())
            sum_sigma += float(sigma.sum())
            sq_z += float(np.dot(z.ravel(), z.ravel()))
            max_err = max(max_err, float(np.max(np.abs(err))))
            max_z = max(max_z, float(np.max(np.abs(z))))
        if n == 0:
            nan = float("nan")
            return dict.fromkeys(
                ("proj_max_abs_error", "proj_psnr", "proj_rms_error_sigma",
                 "proj_max_error_sigma", "proj_bias_sigma"),
                nan,
            )

        mse = sq_err / n
        data_range = float(reference["data_range"])
        if mse == 0:
            proj_psnr = float("inf")
        elif data_range > 0:
            proj_psnr = psnr_from_mse(mse, data_range)
        else:
            proj_psnr = float("nan")  # constant raw payload: no intensity scale
        return {
            "proj_max_abs_error": max_err,
            "proj_psnr": proj_psnr,
            "proj_rms_error_sigma": float(np.sqrt(sq_z / n)),
            "proj_max_error_sigma": max_z,
            "proj_bias_sigma": abs(sum_err / n) / (sum_sigma / n),
        }
