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

__all__ = ["TRANSFORMS", "fill_masked", "fill_values", "masked_values", "restore_masked"]

Transform = Callable[..., np.ndarray]
_SAMPLE_STRIDE = 61  # prime: no alignment with module gaps or row lengths
TRANSFORMS: Registry[Transform] = Registry("transform")


@TRANSFORMS.register("noise_quantiser")
def noise_quantiser(data: np.ndarray, *, step_sigma: float, valid: np.ndarray | None = None,
                    out: np.ndarray | None = None, fill: np.ndarray | None = None) -> np.ndarray:
    """Counts onto power-of-two steps of at most ``step_sigma`` Poisson sigmas, centred bins,
    same integer dtype (:func:`lossbound.codecs.quantiser.quantise_counts`); error <= step_sigma/2 sigma.
    ``out``: where to write (``data`` itself when the caller owns it); ``fill``: per-frame
    values for the masked pixels, quantised like counts (the fill and the quantiser in one pass)."""
    return quantise_counts(data, step_sigma, valid=valid, out=out, fill=fill)


@TRANSFORMS.register("bragg_sparsify")
def bragg_sparsify(data: np.ndarray, *, k_sigma: float, margin: int = 2, noise: bool = False,
                   npt: int, clip_sigma: float, clip_iterations: int, model_every: int = 1,
                   valid: np.ndarray | None = None, geometry: Mapping[str, Any] | None = None,
                   seed: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Bragg-preserving reduction of diffraction frames, same dtype, readable as ordinary counts.

    The background and its noise per resolution shell come from the azimuthal sigma-clipped
    statistics of the detector ``geometry`` (pyFAI ``sigma_clip_ng``), once per
    ``model_every`` frames, with each frame's level refreshed per shell; pixels whose 3x3 box
    sum stands ``k_sigma`` above it, grown by ``margin`` pixels, are kept exactly; every other
    valid pixel becomes the model's value (rounded), or with ``noise`` a Poisson draw from it
    (seeded per frame: the same file every time) so programs that expect noise see a normal
    image (:mod:`lossbound.codecs.sparsify`). Smooth, rounded background compresses far better
    under a bit-shuffling lossless filter than photon noise does. ``npt``, ``clip_sigma`` and
    ``clip_iterations`` are the background model's (the codec specs pass the sx defaults).
    ``out``: where to write (``data`` itself when the caller owns it; default a copy).
    """
    from lossbound.diffraction.detector import integrator_for

    from .sparsify import sparsify_frames

    if geometry is None:
        raise ValueError("bragg_sparsify needs the detector geometry (a PONI description)")
    if data.ndim < 2:
        raise ValueError(f"bragg_sparsify works on detector frames, got shape {data.shape}")
    if data.dtype.kind not in "iu":
        raise ValueError(f"bragg_sparsify works on integer counts, got dtype {data.dtype}")
    if out is None:
        out = np.array(data, copy=True, order="C")
    elif out is not data:
        if out.shape != data.shape or out.dtype != data.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {data.dtype} of shape {data.shape}")
        out[...] = data
    frames = out.reshape((-1,) + data.shape[-2:])
    if valid is None:
        masked = np.zeros(frames.shape[1:], bool)
    elif np.shape(valid) == frames.shape[1:]:  # one detector mask for every frame: not copied per frame
        masked = ~np.asarray(valid, bool)
    else:
        masked = ~np.broadcast_to(np.asarray(valid, bool), data.shape).reshape(frames.shape)
    ai = integrator_for(geometry, frames.shape[1:])
    sparsify_frames(frames, np.ascontiguousarray(masked), ai, k=float(k_sigma), margin=int(margin),
                    noise=bool(noise), npt=int(npt), clip_sigma=float(clip_sigma),
                    clip_iterations=int(clip_iterations), model_every=int(model_every), seed=int(seed))
    return frames.reshape(data.shape)


def fill_masked(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A copy of ``data`` with every invalid pixel set to the median of its frame's valid
    pixels (:func:`fill_values`). ``valid`` has ``data``'s shape, or one frame's (a detector
    mask shared by every frame: its pixel indices are then found once, not per frame)."""
    out = np.array(data, copy=True)
    frames = out.reshape((-1,) + out.shape[-2:]) if out.ndim >= 2 else out.reshape(1, -1)
    valid = np.asarray(valid, bool)
    flat = frames.reshape(frames.shape[0], -1)
    if valid.shape == frames.shape[1:]:  # one mask for the stack
        bad = np.flatnonzero(~valid)
        if bad.size:
            for row, fill in zip(flat, fill_values(data, valid)):
                row[bad] = fill
        return out
    ok = np.broadcast_to(valid, out.shape).reshape(flat.shape)
    for row, good, fill in zip(flat, ok, fill_values(data, valid)):
        if not good.all():
            row[~good] = fill
    return out


def fill_values(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The fill of each frame's masked pixels: the median of an evenly strided sample of its
    valid pixels (as neutral as the full median, and 50x cheaper on a 10 Mpx frame), rounded
    for integer data; 0 for a frame without valid pixels. ``valid`` as for :func:`fill_masked`."""
    frames = data.reshape((-1,) + data.shape[-2:]) if data.ndim >= 2 else data.reshape(1, -1)
    flat = frames.reshape(frames.shape[0], -1)
    valid = np.asarray(valid, bool)
    if valid.shape == frames.shape[1:]:
        sample = np.flatnonzero(valid.reshape(-1)[:: _SAMPLE_STRIDE]) * _SAMPLE_STRIDE
        if sample.size == 0:
            sample = np.flatnonzero(valid)
        return np.array([_fill_value(row[sample], data.dtype) for row in flat])
    fills = []
    for row, good in zip(flat, np.broadcast_to(valid, data.shape).reshape(flat.shape)):
        values = row[:: _SAMPLE_STRIDE][good[:: _SAMPLE_STRIDE]]
        if values.size == 0:
            values = row[good]
        fills.append(_fill_value(values, data.dtype))
    return np.array(fills)


def _fill_value(values: np.ndarray, dtype: np.dtype) -> Any:
    fill: Any = np.median(values) if values.size else 0
    return int(np.rint(fill)) if dtype.kind in "iu" else fill


def masked_values(data: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """``data[broadcast(masked)]`` (C order), quickly when ``masked`` is one frame's mask
    shared by a stack."""
    masked = np.asarray(masked, bool)
    if data.ndim >= 2 and masked.shape == data.shape[-2:]:
        idx = np.flatnonzero(masked)
        return np.ascontiguousarray(data.reshape(-1, masked.size)[:, idx]).reshape(-1)
    return data[np.broadcast_to(masked, data.shape)]


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
    masked = np.asarray(masked, bool)
    shared = decoded.ndim >= 2 and masked.shape == decoded.shape[-2:]  # one detector mask for a stack
    idx = np.flatnonzero(masked) if shared else None
    n = idx.size * (decoded.size // max(masked.size, 1)) if shared else int(np.broadcast_to(masked, decoded.shape).sum())
    if values.shape != (n,):
        raise ValueError(f"{values.size} stored masked values for {n} masked pixels")
    dtype = np.result_type(decoded.dtype, values.dtype)
    out = decoded.astype(dtype, copy=dtype != decoded.dtype)
    if not out.flags.writeable or not out.flags.c_contiguous:
        out = np.ascontiguousarray(out).copy()
    if shared:
        out.reshape(-1, masked.size)[:, idx] = values.reshape(-1, idx.size) if idx.size else values
    else:
        out[np.broadcast_to(masked, decoded.shape)] = values
    return out
