"""Pre-transforms of a codec chain, and the masked-pixel fill that protects detector masks.

A codec chain is an optional pre-transform with its own parameter, then one standard HDF5
filter. A pre-transform here must need no decoder: its output is ordinary data of the
detector's dtype, so any HDF5 reader gets the values back with the filter alone. Adding a
transform means adding one ``TRANSFORMS.register`` function in this module.

Masked pixels (module gaps, bad pixels, sentinels like -1/-2 or 0xFFFFFFFF, NaN) never reach a
codec: :func:`fill_masked` replaces them by the median of (an evenly strided sample of) the valid pixels of their frame — a
neutral value that neither a predictor (SZ, SZ3) nor a transform (ZFP, SPERR) smears into the
neighbouring counts — and the original values travel losslessly beside the payload
(:mod:`compressors.store`), so :func:`restore_masked` gives them back bit for bit.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lossbound.core.registry import Registry

from .quantiser import quantise_counts

__all__ = ["TRANSFORMS", "fill_masked", "restore_masked"]

Transform = Callable[..., np.ndarray]
_SAMPLE_STRIDE = 61  # prime: no alignment with module gaps or row lengths
TRANSFORMS: Registry[Transform] = Registry("transform")


@TRANSFORMS.register("noise_quantiser")
def noise_quantiser(data: np.ndarray, *, step_sigma: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Counts onto power-of-two steps of at most ``step_sigma`` Poisson sigmas, centred bins,
    same integer dtype (:func:`compressors.quantiser.quantise_counts`); error <= step_sigma/2 sigma."""
    return quantise_counts(data, step_sigma, valid=valid)


def fill_masked(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A copy of ``data`` with every invalid pixel set to the median of its frame's valid
    pixels (frames = the leading axes of a stack of 2-D images; a frame without valid pixels
    gets 0). ``valid`` must have ``data``'s shape."""
    out = np.array(data, copy=True)
    frames = out.reshape((-1,) + out.shape[-2:]) if out.ndim >= 2 else out.reshape(1, -1)
    ok = np.broadcast_to(valid, out.shape).reshape(frames.shape)
    for frame, good in zip(frames, ok):
        if good.all():
            continue
        # the median of an evenly strided sample: as neutral, and 50x cheaper on a 10 Mpx frame
        values = frame.reshape(-1)[:: _SAMPLE_STRIDE][good.reshape(-1)[:: _SAMPLE_STRIDE]]
        if values.size == 0:
            values = frame[good]
        fill: Any = np.median(values) if values.size else 0
        if out.dtype.kind in "iu":
            fill = int(np.rint(fill))
        frame[~good] = fill
    return out


def restore_masked(decoded: np.ndarray, masked: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Put the stored original ``values`` back at the ``masked`` pixels of ``decoded``.

    The result has a dtype that holds both exactly (float32 data from ZFP + uint32 sentinels
    -> float64, since float32 cannot hold 0xFFFFFFFF).

    Parameters
    ----------
    decoded : ndarray
        The payload as read from HDF5.
    masked : ndarray of bool
        True at masked pixels; broadcasts to ``decoded`` (a detector mask for a stack).
    values : ndarray, 1-D
        The original values of the masked pixels of ``decoded``'s full shape, in C order.
    """
    full = np.broadcast_to(np.asarray(masked, bool), decoded.shape)
    n = int(full.sum())
    if values.shape != (n,):
        raise ValueError(f"{values.size} stored masked values for {n} masked pixels")
    dtype = np.result_type(decoded.dtype, values.dtype)
    out = decoded.astype(dtype, copy=dtype != decoded.dtype)
    if not out.flags.writeable:
        out = out.copy()
    out[full] = values
    return out
