"""How a codec chain is written to and read from an HDF5 file — the one code path used by
study round trips and by applying a threshold to a user's file.

A payload ``name`` is stored as:

- ``name``: the (filled, pre-transformed, dtype-converted) data through the chain's standard
  HDF5 filter; its attribute ``lossbound_chain`` (JSON) records transform, parameter and filter;
- where the data have masked pixels, ``name + "_mask"`` (uint8, 1 = masked; the detector mask's
  own shape, e.g. one frame for a stack) and ``name + "_masked_values"`` (1-D, the original values
  of the masked pixels in C order, detector dtype), both lossless (Blosc2 bit-shuffle + Zstd).

Any HDF5 reader gets the image back with the filter plugins (the payload's, and Blosc2 for the
mask datasets), plus one assignment::

    data = f[name][()]
    if name + "_mask" in f:
        data = data.astype(numpy.result_type(data, f[name + "_masked_values"].dtype))
        data[numpy.broadcast_to(f[name + "_mask"][()] == 1, data.shape)] = f[name + "_masked_values"][()]

which is :func:`read_payload`. The masked pixels then hold exactly what the detector wrote
(sentinels, NaN), whatever the lossy codec did to the fill values beneath them.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Mapping

import h5py
import hdf5plugin
import numpy as np

from lossbound.core.errors import InputError

from .specs import CodecSetting
from .transforms import TRANSFORMS, fill_masked, fill_values, masked_values, restore_masked

__all__ = ["MASK_SUFFIX", "VALUES_SUFFIX", "chain_description", "read_payload", "write_payload"]

MASK_SUFFIX = "_mask"
VALUES_SUFFIX = "_masked_values"


def _lossless() -> Any:
    return hdf5plugin.Blosc2(cname="zstd", clevel=5, filters=hdf5plugin.Blosc2.BITSHUFFLE)


def convert_dtype(data: np.ndarray, input_dtype: str | None) -> np.ndarray:
    """Explicit dtype conversion; refuses integer narrowing that would wrap around."""
    if input_dtype is None or data.dtype == np.dtype(input_dtype):
        return data
    target = np.dtype(input_dtype)
    if target.kind in "iu" and not np.can_cast(data.dtype, target, "safe"):
        info = np.iinfo(target)
        lo, hi = data.min(), data.max()
        if lo < info.min or hi > info.max:
            raise InputError(f"input_dtype {target} cannot hold data range [{lo}, {hi}]; expected a wider dtype")
    return data.astype(target)


def chain_description(setting: CodecSetting) -> dict[str, Any]:
    """The whole chain as plain data: pre-transform (or None) with its parameters, then the
    hdf5plugin filter class and keyword arguments."""
    spec = setting.spec
    return {
        "transform": spec.transform,
        "transform_params": setting.transform_params(),
        "input_dtype": setting.input_dtype,
        "hdf5plugin": {"class": spec.plugin_class, "kwargs": setting.plugin_kwargs()},
        "masked_pixels": f"filled with the frame median before compression; originals in '{MASK_SUFFIX}' "
                         f"and '{VALUES_SUFFIX}' beside the payload",
    }


def write_payload(group: h5py.Group, name: str, data: np.ndarray, setting: CodecSetting, *,
                  valid: np.ndarray | None = None, geometry: Mapping[str, Any] | None = None) -> list[h5py.Dataset]:
    """Write ``data`` through ``setting``'s chain as ``group[name]`` (+ mask datasets).

    Parameters
    ----------
    group : h5py.Group
        Where to write (a file opened for writing).
    name : str
        Payload dataset name.
    data : ndarray
        Detector data, unconverted.
    setting : CodecSetting
        Codec chain, validated against ``data.dtype``.
    valid : ndarray of bool, optional
        True at valid pixels; broadcasts to ``data``. Invalid pixels never reach the codec.
    geometry : mapping, optional
        Detector geometry (pyFAI ``get_config()``) for transforms that model the frame
        (``bragg_sparsify``); recorded in the chain attribute.

    Returns
    -------
    list of h5py.Dataset
        The datasets written (payload first), for storage accounting.
    """
    setting.validate(data.dtype, has_geometry=geometry is not None)
    masked = None
    to_store = data
    spec = setting.spec
    transform = TRANSFORMS.get(spec.transform) if spec.transform is not None else None
    accepts = inspect.signature(transform).parameters if transform is not None else {}
    if valid is not None:
        valid = np.asarray(valid, bool)
        if not valid.all():
            masked = ~valid
            if "fill" in accepts:
                # a per-pixel transform that fills as it goes (the quantiser): one pass, no copy
                to_store = transform(data, **setting.transform_params(), valid=valid, fill=fill_values(data, valid))
                transform = None
            else:
                to_store = fill_masked(data, valid)
    if transform is not None:
        # a transform that models the frame needs the mask and the geometry; the quantiser
        # maps each count alone (masked pixels hold the fill value, restored on read)
        context: dict[str, Any] = {"valid": valid, "geometry": geometry} if spec.needs_geometry else {}
        if masked is not None and "out" in accepts:
            context["out"] = to_store  # the filled copy is ours: transformed in place, no second copy
        to_store = transform(to_store, **setting.transform_params(), **context)
    converted = convert_dtype(to_store, setting.input_dtype)
    ds = group.create_dataset(name, data=converted, chunks=setting.chunk_shape(data.shape), **setting.make_filter())
    chain = chain_description(setting)
    if spec.needs_geometry:
        chain["geometry"] = dict(geometry or {})
    ds.attrs["lossbound_chain"] = json.dumps(chain, default=str)
    written = [ds]
    if masked is not None:
        values = masked_values(data, masked)
        written.append(group.create_dataset(name + MASK_SUFFIX, data=masked.astype(np.uint8), chunks=True,
                                            **_lossless()))
        written.append(group.create_dataset(name + VALUES_SUFFIX, data=values, chunks=True, **_lossless()))
    return written


def read_payload(group: h5py.Group, name: str) -> np.ndarray:
    """The payload with its masked pixels restored (see the module docstring)."""
    decoded = group[name][()]
    if name + MASK_SUFFIX not in group:
        return decoded
    masked = group[name + MASK_SUFFIX][()] == 1
    return restore_masked(decoded, masked, group[name + VALUES_SUFFIX][()])
