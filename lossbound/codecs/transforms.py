"""Pre-transforms of a codec chain, and the masked-pixel fill that protects detector masks.

A codec chain is an optional pre-transform with its own parameter, then one standard HDF5
filter. A pre-transform here must need no decoder: its output is ordinary data of the
detector's dtype, so any HDF5 reader gets the values back with the filter alone. Adding a
transform means adding one ``TRANSFORMS.register`` function in this module.

Masked pixels (module gaps, bad pixels, sentinels like -1/-2 or 0xFFFFFFFF, NaN) never reach a
codec: :func:`fill_masked` replaces them by the median of (an evenly strided sample of) the valid pixels of their frame — a
neutral value that neither a predictor (SZ, SZ3) nor a transform (ZFP, SPERR) smears into the
neighbouring counts — and the original values travel losslessly beside the payload
(:mod:`lossbound.codecs.store`), so :func:`restore_masked` gives them back bit for bit.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

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
    same integer dtype (:func:`lossbound.codecs.quantiser.quantise_counts`); error <= step_sigma/2 sigma."""
    return quantise_counts(data, step_sigma, valid=valid)


@TRANSFORMS.register("bragg_sparsify")
def bragg_sparsify(data: np.ndarray, *, k_sigma: float, margin: int = 2, noise: bool = False,
                   npt: int, clip_sigma: float, clip_iterations: int, valid: np.ndarray | None = None,
                   geometry: Mapping[str, Any] | None = None, seed: int = 0) -> np.ndarray:
    """Bragg-preserving reduction of diffraction frames, same dtype, readable as ordinary counts.

    Per frame: the background and its noise per resolution shell from the azimuthal
    sigma-clipped statistics of the detector ``geometry`` (pyFAI ``sigma_clip_ng``); pixels
    whose 3x3 box sum stands ``k_sigma`` above it, grown by ``margin`` pixels, are kept
    exactly; every other valid pixel becomes the model's value (rounded), or with ``noise``
    a Poisson draw from it (seeded per frame: the same file every time) so programs that
    expect noise see a normal image. Smooth, rounded background compresses far better under
    a bit-shuffling lossless filter than photon noise does. ``npt``, ``clip_sigma`` and
    ``clip_iterations`` are the background model's (the codec specs pass the sx defaults).
    """
    from scipy import ndimage

    from lossbound.diffraction.detector import background_model, integrator_for, significant_pixels

    if geometry is None:
        raise ValueError("bragg_sparsify needs the detector geometry (a PONI description)")
    if data.ndim < 2:
        raise ValueError(f"bragg_sparsify works on detector frames, got shape {data.shape}")
    frames = np.array(data, copy=True).reshape((-1,) + data.shape[-2:])
    shape = frames.shape[1:]
    masked_frames = (np.zeros(frames.shape, bool) if valid is None
                     else ~np.broadcast_to(np.asarray(valid, bool), data.shape).reshape(frames.shape))
    ai = integrator_for(geometry, shape)
    grow = np.ones((2 * int(margin) + 1,) * 2, bool)
    info = np.iinfo(frames.dtype) if frames.dtype.kind in "iu" else None
    for i, frame in enumerate(frames):
        masked = masked_frames[i]
        bg, sigma = background_model(ai, frame, masked, npt=npt, thres=clip_sigma, max_iter=clip_iterations)
        keep, _ = significant_pixels(frame, bg, sigma, masked, k=float(k_sigma))
        if margin > 0:
            keep = ndimage.binary_dilation(keep, structure=grow)
        model = np.random.default_rng([int(seed), i]).poisson(np.maximum(bg, 0)) if noise else np.rint(bg)
        if info is not None:
            model = np.clip(model, info.min, info.max)
        replace = ~keep & ~masked
        frame[replace] = model[replace].astype(frames.dtype)
    return frames.reshape(data.shape)


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
