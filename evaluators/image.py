"""Full-reference image quality of a reconstruction: PSNR, NRMSE and SSIM.

The metric functions follow ``skimage.metrics`` but make ``data_range`` explicit and required:
skimage guesses it from the dtype, which for float reconstructions is meaningless (a float32
slice would get a range of 2 and a wildly optimistic PSNR).  Large stacks are processed in
slabs along the first axis so a float64 copy of the whole volume is never made.

``check_same_shape`` and ``slab_bounds`` are shared by the other evaluator modules of this package;
masks come from :mod:`lossbound.core.masks`.
"""
from __future__ import annotations

from typing import Any, Iterator, Literal, Mapping

import numpy as np
from skimage.metrics import structural_similarity

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, check_mask_param, mask_for, reject_unknown, result_array
from lossbound.core.masks import broadcast_mask, circle_mask

__all__ = ["circle_mask", "check_same_shape", "psnr", "nrmse", "ssim", "ImageQuality"]

# Elements per float64 slab (32 MiB each); several temporaries of this size may coexist.
_SLAB_ELEMENTS = 1 << 22

Normalization = Literal["euclidean", "min-max", "mean"]


# --------------------------------------------------------------------------- helpers


def check_same_shape(reference: np.ndarray, test: np.ndarray, *, what: str = "input") -> None:
    """Raise ValueError unless ``reference`` and ``test`` have the same shape."""
    if np.shape(reference) != np.shape(test):
        raise ValueError(
            f"{what} shapes differ: reference {np.shape(reference)} vs test {np.shape(test)}; "
            "both must have the same shape"
        )


def _check_data_range(data_range: float) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite positive number, got {data_range}")
    return data_range


def slab_bounds(
    shape: tuple[int, ...], *, max_elements: int | None = None
) -> Iterator[slice | tuple[()]]:
    """Indices of slabs along axis 0 covering ``shape``, each of at most ~``max_elements``
    elements (default ``_SLAB_ELEMENTS``; at least one row); a 0-d shape gives ``()``."""
    if len(shape) == 0:
        yield ()
        return
    if max_elements is None:
        max_elements = _SLAB_ELEMENTS  # read at call time, so it can be tuned globally
    per_row = int(np.prod(shape[1:], dtype=np.int64)) or 1
    step = max(1, max_elements // per_row)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def _slabs(
    reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Matching float64 slabs of ``reference`` and ``test`` (only masked values if ``mask``).

    Converting per slab keeps memory bounded and avoids unsigned-integer wrap-around in
    ``test - reference`` for detector (uint16) data.
    """
    reference = np.asarray(reference)
    test = np.asarray(test)
    for sl in slab_bounds(reference.shape):
        r = np.asarray(reference[sl], dtype=np.float64)
        t = np.asarray(test[sl], dtype=np.float64)
        if mask is not None:
            m = mask[sl]
            r, t = r[m], t[m]
        yield r, t


# --------------------------------------------------------------------------- metrics


def psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def psnr(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio, ``10 log10(data_range**2 / MSE)`` in dB.

    Parameters
    ----------
    reference, test : ndarray
        Arrays of the same shape (any dimension, any real dtype).
    data_range : float
        Peak-to-peak range of the reference (e.g. ``reference.max() - reference.min()``).
        Required: guessing it from a float dtype would be meaningless.
    mask : ndarray of bool, optional
        Only pixels where ``mask`` is True count; broadcast to the array shape (a 2-D
        mask applies to every slice of a stack).

    Returns
    -------
    psnr : float
        In dB; ``inf`` for identical inputs.

    Raises
    ------
    ValueError
        On a shape mismatch or a non-positive ``data_range``.
    """
    check_same_shape(reference, test)
    data_range = _check_data_range(data_range)
    mask = broadcast_mask(mask, np.shape(reference))
    sq_sum, count = 0.0, 0
    for r, t in _slabs(reference, test, mask):
        sq_sum += float(np.sum((t - r) ** 2))
        count += r.size
    if count == 0:
        raise ValueError("psnr of an empty selection (empty arrays or all-False mask)")
    return psnr_from_mse(sq_sum / count, data_range)


def nrmse(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    normalization: Normalization = "euclidean",
    mask: np.ndarray | None = None,
) -> float:
    """Normalized root mean-squared error (as ``skimage.metrics.normalized_root_mse``).

    Parameters
    ----------
    reference, test : ndarray
        Arrays of the same shape.
    normalization : {'euclidean', 'min-max', 'mean'}, optional
        Denominator: RMS of the reference (``'euclidean'``, i.e. ``||ref - test|| / ||ref||``),
        its peak-to-peak range (``'min-max'``), or its mean (``'mean'``).
    mask : ndarray of bool, optional
        Only pixels where ``mask`` is True count (broadcast to the array shape).

    Returns
    -------
    nrmse : float
        0 for identical inputs; ``inf`` when the denominator is 0 but the error is not.

    Raises
    ------
    ValueError
        On a shape mismatch or an unknown ``normalization``.
    """
    check_same_shape(reference, test)
    if normalization not in ("euclidean", "min-max", "mean"):
        raise ValueError(
            f"normalization must be 'euclidean', 'min-max' or 'mean', got {normalization!r}"
        )
    mask = broadcast_mask(mask, np.shape(reference))
    err_sq = ref_sq = ref_sum = 0.0
    ref_min, ref_max = np.inf, -np.inf
    count = 0
    for r, t in _slabs(reference, test, mask):
        if r.size == 0:
            continue
        err_sq += float(np.sum((t - r) ** 2))
        ref_sq += float(np.sum(r**2))
        ref_sum += float(np.sum(r))
        ref_min, ref_max = min(ref_min, float(r.min())), max(ref_max, float(r.max()))
        count += r.size
    if count == 0:
        raise ValueError("nrmse of an empty selection (empty arrays or all-False mask)")
    rmse = np.sqrt(err_sq / count)
    if normalization == "euclidean":
        denom = np.sqrt(ref_sq / count)
    elif normalization == "min-max":
        denom = ref_max - ref_min
    else:
        denom = abs(ref_sum / count)
    if rmse == 0:
        return 0.0
    return float(rmse / denom) if denom > 0 else float("inf")


def _ssim_single(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    data_range: float,
    win_size: int,
    mask: np.ndarray | None,
) -> float:
    if min(reference.shape) < win_size:
        raise ValueError(
            f"ssim needs images of at least {win_size}x{win_size} pixels (win_size), "
            f"got {reference.shape}"
        )
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if mask is None:
        return float(
            structural_similarity(reference, test, data_range=data_range, win_size=win_size)
        )
    _, ssim_map = structural_similarity(
        reference, test, data_range=data_range, win_size=win_size, full=True
    )
    # skimage averages the map without a border of (win_size - 1) // 2 pixels, where the
    # window is truncated; drop the same border inside the mask for consistency.
    pad = (win_size - 1) // 2
    keep = np.zeros(reference.shape, dtype=bool)
    keep[tuple(slice(pad, n - pad) for n in reference.shape)] = True
    keep &= mask
    if not keep.any():
        raise ValueError("ssim mask selects no pixels away from the image border")
    return float(ssim_map[keep].mean())


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    data_range: float,
    stack_axis: int | None = 0,
    win_size: int = 7,
    mask: np.ndarray | None = None,
) -> float:
    """Mean structural similarity; for a 3-D stack, the mean over its 2-D slices.

    Parameters
    ----------
    reference, test : ndarray
        2-D images, or 3-D stacks of 2-D slices, of the same shape.
    data_range : float
        Peak-to-peak range of the reference; the same value is used for every slice so
        all slices are judged on one intensity scale.
    stack_axis : int or None, optional
        For 3-D input, the axis along which the 2-D slices are stacked (default 0);
        ``None`` computes one 3-D SSIM with a cubic window instead.  Ignored for 2-D input.
    win_size : int, optional
        Side of the (uniform) SSIM window, odd; default 7 as in skimage.
    mask : ndarray of bool, optional
        Average the SSIM map only where True (broadcast to the input shape, so a 2-D mask
        applies to every slice).

    Returns
    -------
    ssim : float
        1 for identical inputs.

    Raises
    ------
    ValueError
        On a shape mismatch, non-positive ``data_range``, images smaller than ``win_size``,
        or input that is not 2-D/3-D.
    """
    check_same_shape(reference, test)
    data_range = _check_data_range(data_range)
    reference = np.asarray(reference)
    test = np.asarray(test)
    mask = broadcast_mask(mask, reference.shape)
    if reference.ndim == 2 or (reference.ndim == 3 and stack_axis is None):
        return _ssim_single(reference, test, data_range=data_range, win_size=win_size, mask=mask)
    if reference.ndim != 3:
        raise ValueError(f"ssim expects 2-D images or 3-D stacks, got {reference.ndim}-D input")
    axis = stack_axis % 3
    reference = np.moveaxis(reference, axis, 0)
    test = np.moveaxis(test, axis, 0)
    if mask is not None:
        mask = np.moveaxis(mask, axis, 0)
    values = [
        _ssim_single(
            reference[i],
            test[i],
            data_range=data_range,
            win_size=win_size,
            mask=None if mask is None else mask[i],
        )
        for i in range(reference.shape[0])
    ]
    if not values:
        raise ValueError("ssim of an empty stack")
    return float(np.mean(values))


# --------------------------------------------------------------------------- evaluator


@EVALUATORS.register("image_quality")
class ImageQuality(Evaluator):
    """PSNR, SSIM and NRMSE of the compressed-data result against the raw-data result.

    Parameters
    ----------
    key : str
        Result array to compare (default ``'recon'``).
    mask : None, 'circle' or str
        ``'circle'`` restricts all metrics to the reconstruction circle; another name is a
        boolean array of the raw result or dataset (default None: all pixels).
    prefix : str
        Metric name prefix (default ``'recon'``).

    Output keys: ``<prefix>_psnr`` (dB), ``<prefix>_ssim``, ``<prefix>_nrmse`` (euclidean).
    The PSNR/SSIM data range is the raw result's max - min (inside the mask), fixed once
    per dataset by :meth:`reference`.
    """

    name = "image_quality"

    def __init__(self, *, key: str = "recon", mask: str | None = None, prefix: str = "recon",
                 **extra: Any) -> None:
        reject_unknown(self.name, extra)
        check_mask_param(self.name, mask)
        super().__init__(key=key, mask=mask, prefix=prefix)
        self.key = key
        self.mask = mask
        self.prefix = str(prefix)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        image = result_array(raw, self.key, self.name)
        mask = mask_for(self.mask, image.shape, raw, evaluator=self.name)
        values = image if mask is None else image[..., mask]
        return {"data_range": float(np.nanmax(values) - np.nanmin(values))}

    def compare(
        self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]
    ) -> dict[str, float]:
        ref = result_array(raw, self.key, self.name)
        test = result_array(compressed, self.key, self.name)
        check_same_shape(ref, test, what=f"result {self.key!r}")
        mask = mask_for(self.mask, ref.shape, raw, evaluator=self.name)
        data_range = float(reference["data_range"])
        nan = float("nan")
        psnr_value = ssim_value = nan  # a constant raw result has no intensity scale
        if np.isfinite(data_range) and data_range > 0:
            psnr_value = psnr(ref, test, data_range=data_range, mask=mask)
            ssim_value = ssim(ref, test, data_range=data_range, mask=mask)
        p = self.prefix
        return {f"{p}_psnr": psnr_value, f"{p}_ssim": ssim_value, f"{p}_nrmse": nrmse(ref, test, mask=mask)}
