"""Real HDF5 round trips: write through an hdf5plugin filter, close, reopen, read back.

Nothing is simulated: the bytes counted are ``H5Dget_storage_size`` of a real (in-memory)
HDF5 file, and the decompressed array comes from a fresh file handle, so neither the chunk
cache nor numpy can hand back the uncompressed input.
"""
from __future__ import annotations

import dataclasses
import io
import time
from typing import Any, Mapping, Sequence

import h5py
import hdf5plugin
import numpy as np

from lossbound.core.errors import ConfigError, InputError

from .specs import CodecSetting, filter_from_config

__all__ = ["RoundTrip", "filter_from_config", "filter_from_options", "roundtrip"]

_DATASET = "data"


@dataclasses.dataclass
class RoundTrip:
    """Result of one compress/decompress round trip.

    Attributes
    ----------
    setting : dict
        ``CodecSetting.as_dict()``.
    label : str
        ``CodecSetting.label``.
    decompressed : numpy.ndarray
        Data read back, in the stored dtype (``input_dtype`` if set, else the detector dtype).
    original_dtype, stored_dtype : str
        Detector dtype and dtype written to HDF5.
    shape, chunks : tuple of int
        Data shape and the chunk shape HDF5 recorded.
    raw_nbytes : int
        Bytes of the original array (detector dtype).
    stored_nbytes : int
        Bytes HDF5 stored for the dataset (``ds.id.get_storage_size()``).
    ratio : float
        ``raw_nbytes / stored_nbytes``.
    ratio_vs_input : float
        Converted-array bytes / ``stored_nbytes`` (differs from ``ratio`` when
        ``input_dtype`` widens the data, e.g. uint16 -> float32 doubles it).
    compress_s, decompress_s : float
        Wall time of ``create_dataset`` + close, and of open + read.
    compress_mbps, decompress_mbps : float
        Million bytes of the ORIGINAL array per second.
    max_abs_error : float
        ``max |decompressed - original|`` computed in float64 (NaN at the same place in
        both counts as 0; a NaN in only one gives NaN).
    bound_held : bool or None
        Bounded modes: ``max_abs_error <= value`` within float rounding; lossless:
        ``max_abs_error == 0``; None for unbounded modes (rate, psnr, ...).
    filter_id : int
        HDF5 filter id recorded in the dataset.
    cd_values : list of int
        Filter options as stored in the file (after the filter's ``set_local``); this is
        what :func:`filter_from_options` expects.
    plugin_class : str
        hdf5plugin class name.
    plugin_kwargs : dict
        ``filter.get_config()`` (our kwargs if unavailable); :func:`filter_from_config`
        rebuilds the filter from it.
    dtype_converted : bool
        True when ``input_dtype`` changed the dtype before compression.
    seconds : float
        Wall time of the whole round trip where it ran (conversion, write, read, error
        check); excludes shipping the data to and from a crash-isolating worker.
    skipped_chunks : int
        Chunks HDF5 stored without the filter. h5py registers plugin filters as optional,
        so a filter that fails on a chunk silently leaves it uncompressed; non-zero means
        the ratio and error of a lossy codec do not describe that codec.
    """

    setting: dict[str, Any]
    label: str
    decompressed: np.ndarray
    original_dtype: str
    stored_dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    raw_nbytes: int
    stored_nbytes: int
    ratio: float
    ratio_vs_input: float
    compress_s: float
    decompress_s: float
    compress_mbps: float
    decompress_mbps: float
    max_abs_error: float
    bound_held: bool | None
    filter_id: int
    cd_values: list[int]
    plugin_class: str
    plugin_kwargs: dict[str, Any]
    dtype_converted: bool
    skipped_chunks: int = 0
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """Float metrics for experiment logging (``bound_held`` as 0/1 only when defined)."""
        out = {
            "ratio": float(self.ratio),
            "ratio_vs_input": float(self.ratio_vs_input),
            "stored_nbytes": float(self.stored_nbytes),
            "compress_mbps": float(self.compress_mbps),
            "decompress_mbps": float(self.decompress_mbps),
            "compress_s": float(self.compress_s),
            "decompress_s": float(self.decompress_s),
            "max_abs_error": float(self.max_abs_error),
            "skipped_chunks": float(self.skipped_chunks),
        }
        if self.bound_held is not None:
            out["bound_held"] = float(self.bound_held)
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able dict of everything except the decompressed array."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "decompressed"}
        d["shape"] = list(self.shape)
        d["chunks"] = list(self.chunks)
        return d


def filter_from_options(filter_id: int, cd_values: Sequence[int]) -> Any:
    """Rebuild an hdf5plugin filter from an HDF5 filter id and stored cd_values.

    Raises
    ------
    ConfigError
        The filter id is not an hdf5plugin filter or the options are not understood.
    """
    try:
        return hdf5plugin.from_filter_options(int(filter_id), tuple(int(v) for v in cd_values))
    except (ValueError, NotImplementedError) as exc:
        raise ConfigError(f"cannot rebuild filter {filter_id} from cd_values {list(cd_values)}: {exc}") from exc


def _convert(data: np.ndarray, input_dtype: str | None) -> np.ndarray:
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


def _max_abs_error(original: np.ndarray, decompressed: np.ndarray) -> float:
    diff = np.subtract(decompressed, original, dtype=np.float64)
    if original.dtype.kind == "f" or decompressed.dtype.kind == "f":
        # the same NaN or the same infinity at a place is no error (inf - inf would be NaN)
        kept = (np.isnan(original) & np.isnan(decompressed)) | (np.isinf(original) & (original == decompressed))
        diff[kept] = 0.0
    np.abs(diff, out=diff)
    return float(diff.max())


def _bound_tolerance(value: float, stored: np.ndarray) -> float:
    """Slack for float rounding when checking ``error <= value`` (not a loosened bound)."""
    tol = abs(value) * 1e-6
    if stored.dtype.kind == "f":
        finite = np.abs(stored[np.isfinite(stored)])
        if finite.size:
            tol += float(np.finfo(stored.dtype).eps) * float(finite.max())
    return tol


def _skipped_chunks(dsid: h5py.h5d.DatasetID) -> int:
    """Count chunks whose filter mask says a filter was skipped."""
    masks: list[int] = []
    if hasattr(dsid, "chunk_iter"):
        try:
            dsid.chunk_iter(lambda info: masks.append(info.filter_mask))
            return sum(1 for m in masks if m)
        except Exception:  # older HDF5 builds lack H5Dchunk_iter; fall back below
            masks.clear()
    return sum(1 for i in range(dsid.get_num_chunks()) if dsid.get_chunk_info(i).filter_mask)


def roundtrip(data: np.ndarray, setting: CodecSetting) -> RoundTrip:
    """Compress ``data`` into an in-memory HDF5 file with ``setting`` and read it back.

    Parameters
    ----------
    data : numpy.ndarray
        Detector data (integer or float, at least 1-D, not empty).
    setting : CodecSetting
        Codec, mode, value, optional ``input_dtype`` and chunk layout.

    Returns
    -------
    RoundTrip

    Raises
    ------
    ConfigError
        ``setting.validate(data.dtype)`` refused the setting (raised before any codec runs).
    InputError
        Empty or 0-d data, or an integer ``input_dtype`` too narrow for the data.
    """
    t_start = time.perf_counter()
    original = np.ascontiguousarray(data)
    if original.ndim == 0 or original.size == 0:
        raise InputError(f"cannot compress data of shape {original.shape}; expected a non-empty array")
    setting.validate(original.dtype)
    spec = setting.spec
    filt = setting.make_filter()
    chunks = setting.chunk_shape(original.shape)
    converted = _convert(original, setting.input_dtype)

    buf = io.BytesIO()
    fh = h5py.File(buf, "w")
    try:
        t0 = time.perf_counter()
        fh.create_dataset(_DATASET, data=converted, chunks=chunks, **filt)
        fh.close()
        compress_s = time.perf_counter() - t0
    finally:
        fh.close()

    # A fresh handle: nothing decompressed can be served from the writer's chunk cache.
    t0 = time.perf_counter()
    fh = h5py.File(buf, "r")
    try:
        ds = fh[_DATASET]
        decompressed = ds[()]
        decompress_s = time.perf_counter() - t0
        stored_nbytes = int(ds.id.get_storage_size())
        stored_chunks = tuple(int(c) for c in ds.chunks)
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() < 1:
            raise RuntimeError(f"{setting.label}: HDF5 recorded no filter on the dataset")
        filter_id, _flags, cd_values, _name = plist.get_filter(0)
        skipped = _skipped_chunks(ds.id)
    finally:
        fh.close()

    raw_nbytes = int(original.nbytes)
    max_err = _max_abs_error(original, decompressed)
    if not spec.lossy:
        bound_held: bool | None = max_err == 0.0
    elif setting.bounded:
        assert setting.value is not None
        bound_held = bool(max_err <= setting.value + _bound_tolerance(setting.value, decompressed))
    else:
        bound_held = None
    get_config = getattr(filt, "get_config", None)
    plugin_kwargs = dict(get_config()) if callable(get_config) else setting.plugin_kwargs()

    def _rate(seconds: float) -> float:
        return raw_nbytes / 1e6 / seconds if seconds > 0 else float("inf")

    def _ratio(nbytes: int) -> float:
        return nbytes / stored_nbytes if stored_nbytes > 0 else float("inf")

    return RoundTrip(
        setting=setting.as_dict(),
        label=setting.label,
        decompressed=decompressed,
        original_dtype=original.dtype.name,
        stored_dtype=decompressed.dtype.name,
        shape=tuple(original.shape),
        chunks=stored_chunks,
        raw_nbytes=raw_nbytes,
        stored_nbytes=stored_nbytes,
        ratio=_ratio(raw_nbytes),
        ratio_vs_input=_ratio(int(converted.nbytes)),
        compress_s=compress_s,
        decompress_s=decompress_s,
        compress_mbps=_rate(compress_s),
        decompress_mbps=_rate(decompress_s),
        max_abs_error=max_err,
        bound_held=bound_held,
        filter_id=int(filter_id),
        cd_values=[int(v) for v in cd_values],
        plugin_class=spec.plugin_class,
        plugin_kwargs=plugin_kwargs,
        dtype_converted=converted.dtype != original.dtype,
        skipped_chunks=skipped,
        seconds=time.perf_counter() - t_start,
    )
