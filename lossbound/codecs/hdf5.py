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
from .store import read_payload, write_payload

__all__ = ["BoundCheck", "RoundTrip", "check_bound", "filter_from_config", "filter_from_options", "roundtrip",
           "skipped_chunks"]

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
        Data read back with masked pixels restored, in the stored dtype (``input_dtype`` if
        set, else the detector dtype) — widened where that cannot hold the masked values
        (float32 + uint32 sentinels -> float64).
    original_dtype, stored_dtype : str
        Detector dtype and dtype written to HDF5.
    shape, chunks : tuple of int
        Data shape and the chunk shape HDF5 recorded.
    raw_nbytes : int
        Bytes of the original array (detector dtype).
    stored_nbytes : int
        Bytes HDF5 stored (``get_storage_size()``) for the payload plus, where the data have
        masked pixels, the mask and the masked pixels' values.
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
    bound_kind : str or None
        'absolute' or 'poisson_sigma' (:attr:`CodecSetting.bound_kind`).
    max_error_sigma : float or None
        ``max |error| / sqrt(count)`` over valid pixels with a positive count
        ('poisson_sigma' bounds only; a changed zero count makes it inf).
    masked_pixels : int
        Pixels of the payload outside the valid mask (kept away from the codec).
    masked_pixels_changed : int
        Masked pixels whose value read back differs from the original (must be 0; NaN
        equals NaN). Counts towards ``bound_held``.
    mask_nbytes : int
        Bytes stored for the mask and the masked pixels' values (included in
        ``stored_nbytes``).
    transform, transform_params
        Pre-transform of the chain and its parameters (None / {} without one).
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
    bound_kind: str | None = None
    max_error_sigma: float | None = None
    masked_pixels: int = 0
    masked_pixels_changed: int = 0
    mask_nbytes: int = 0
    transform: str | None = None
    transform_params: dict[str, Any] = dataclasses.field(default_factory=dict)

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
            "masked_pixels": float(self.masked_pixels),
            "masked_pixels_changed": float(self.masked_pixels_changed),
        }
        if self.max_error_sigma is not None:
            out["max_error_sigma"] = float(self.max_error_sigma)
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


def _max_abs_error(original: np.ndarray, decompressed: np.ndarray, valid: np.ndarray | None = None) -> float:
    """``max |decompressed - original|`` in float64 over the ``valid`` pixels (all when None)."""
    diff = np.subtract(decompressed, original, dtype=np.float64)
    if original.dtype.kind == "f" or decompressed.dtype.kind == "f":
        # the same NaN or the same infinity at a place is no error (inf - inf would be NaN)
        kept = (np.isnan(original) & np.isnan(decompressed)) | (np.isinf(original) & (original == decompressed))
        diff[kept] = 0.0
    np.abs(diff, out=diff)
    # where= instead of gathering the valid pixels: no copies of a multi-GB stack
    return float(diff.max(initial=0.0, where=True if valid is None else valid)) if diff.size else 0.0


def _bound_tolerance(value: float, stored: np.dtype, original: np.ndarray) -> float:
    """Slack for float rounding when checking ``error <= value`` (not a loosened bound): one
    ulp of the stored float dtype at the data's largest magnitude."""
    tol = abs(value) * 1e-6
    if stored.kind == "f":
        finite = np.abs(original[np.isfinite(original)]) if original.dtype.kind == "f" else np.abs(original)
        if finite.size:
            tol += float(np.finfo(stored).eps) * float(finite.max())
    return tol


def skipped_chunks(dsid: h5py.h5d.DatasetID) -> int:
    """Count chunks whose filter mask says a filter was skipped."""
    masks: list[int] = []
    if hasattr(dsid, "chunk_iter"):
        try:
            dsid.chunk_iter(lambda info: masks.append(info.filter_mask))
            return sum(1 for m in masks if m)
        except Exception:  # older HDF5 builds lack H5Dchunk_iter; fall back below
            masks.clear()
    return sum(1 for i in range(dsid.get_num_chunks()) if dsid.get_chunk_info(i).filter_mask)


def _changed(original: np.ndarray, restored: np.ndarray) -> int:
    """Pixels whose value differs (NaN equals NaN)."""
    differ = restored != original
    if original.dtype.kind == "f" or restored.dtype.kind == "f":
        differ &= ~(np.isnan(original) & np.isnan(restored))
    return int(differ.sum())


def _sigma_error(original: np.ndarray, restored: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """|error| / sqrt(count) per valid pixel (inf where a zero count changed, 0 where exact)."""
    orig = original if valid is None else original[valid]
    rest = restored if valid is None else restored[valid]
    err = np.abs(np.subtract(rest, orig, dtype=np.float64))
    sigma = np.sqrt(np.maximum(orig.astype(np.float64), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / sigma)
    return ratio


@dataclasses.dataclass(frozen=True)
class BoundCheck:
    """What reading a payload back says about its codec's promise.

    ``max_abs_error`` over valid pixels; ``max_error_sigma`` (``poisson_sigma`` bounds only);
    ``masked_pixels`` and how many of them changed (any change breaks the promise);
    ``allowed``: the bound in its own units (0 for lossless, None for unbounded modes);
    ``held``: None for unbounded modes without a changed masked pixel.
    """

    max_abs_error: float
    max_error_sigma: float | None
    masked_pixels: int
    masked_pixels_changed: int
    allowed: float | None
    held: bool | None


def check_bound(original: np.ndarray, restored: np.ndarray, setting: CodecSetting, *,
                stored_dtype: np.dtype, valid: np.ndarray | None = None) -> BoundCheck:
    """Check ``restored`` against ``original`` under ``setting``'s bound — the one check used by
    round trips and by applying a threshold to a file.

    Absolute bounds allow ``value`` plus one ulp of ``stored_dtype`` at the data's largest
    magnitude (float rounding, not a looser bound); ``poisson_sigma`` bounds
    ``sigma_error_per_value * value`` errors in units of sqrt(count); lossless: exact. Errors are
    measured over ``valid`` pixels (broadcasts to the data); the others must be bit-identical.
    """
    full_valid = None if valid is None else np.broadcast_to(np.asarray(valid, bool), original.shape)
    if full_valid is None or full_valid.all():
        full_valid = None
        max_err, masked, changed = _max_abs_error(original, restored), 0, 0
    else:
        max_err = _max_abs_error(original, restored, full_valid)
        invalid = ~full_valid
        masked = int(invalid.sum())
        changed = _changed(original[invalid], restored[invalid])
    spec, kind = setting.spec, setting.bound_kind
    max_sigma = allowed = None
    held: bool | None = None
    if not spec.lossy:
        allowed, held = 0.0, max_err == 0.0
    elif kind == "absolute":
        assert setting.value is not None
        allowed = float(setting.value)
        held = bool(max_err <= allowed + _bound_tolerance(allowed, np.dtype(stored_dtype), original))
    elif kind == "poisson_sigma":
        assert setting.value is not None
        ratio = _sigma_error(original, restored, full_valid)
        max_sigma = float(ratio.max()) if ratio.size else 0.0
        allowed = spec.sigma_error_per_value * float(setting.value)
        held = bool(max_sigma <= allowed * (1 + 1e-9))
    if changed and held is not False:
        held = False
    return BoundCheck(float(max_err), max_sigma, masked, changed, allowed, held)


def roundtrip(data: np.ndarray, setting: CodecSetting, *, valid: np.ndarray | None = None,
              geometry: Mapping[str, Any] | None = None) -> RoundTrip:
    """Compress ``data`` into an in-memory HDF5 file with ``setting`` and read it back.

    The file is written and read by :func:`lossbound.codecs.store.write_payload` and
    :func:`~lossbound.codecs.store.read_payload` — the same code that applies a threshold to a
    user's file — so the figures describe what a reader gets.

    Parameters
    ----------
    data : numpy.ndarray
        Detector data (integer or float, at least 1-D, not empty).
    setting : CodecSetting
        Codec chain, mode, value, optional ``input_dtype`` and chunk layout.
    valid : numpy.ndarray of bool, optional
        Valid pixels (broadcasts to ``data``). Masked pixels never reach the codec and must
        come back unchanged; errors and bounds are measured over valid pixels.
    geometry : mapping, optional
        Detector geometry, for chains whose transform models the frame (``bragg_sparsify``).

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
    setting.validate(original.dtype, has_geometry=geometry is not None)
    spec = setting.spec
    filt = setting.make_filter()
    if valid is not None:
        valid = np.asarray(valid, bool)
        try:
            full_valid = np.broadcast_to(valid, original.shape)
        except ValueError:
            raise InputError(f"mask of shape {valid.shape} does not fit data of shape {original.shape}") from None
        if full_valid.all():
            valid = full_valid = None
    else:
        full_valid = None

    buf = io.BytesIO()
    fh = h5py.File(buf, "w")
    try:
        t0 = time.perf_counter()
        write_payload(fh, _DATASET, original, setting, valid=valid, geometry=geometry)
        fh.close()
        compress_s = time.perf_counter() - t0
    finally:
        fh.close()

    # A fresh handle: nothing decompressed can be served from the writer's chunk cache.
    t0 = time.perf_counter()
    fh = h5py.File(buf, "r")
    try:
        decompressed = read_payload(fh, _DATASET)
        decompress_s = time.perf_counter() - t0
        ds = fh[_DATASET]
        payload_nbytes = int(ds.id.get_storage_size())
        stored_nbytes = sum(int(fh[k].id.get_storage_size()) for k in fh)
        stored_dtype = ds.dtype.name
        stored_chunks = tuple(int(c) for c in ds.chunks)
        plist = ds.id.get_create_plist()
        if plist.get_nfilters() < 1:
            raise RuntimeError(f"{setting.label}: HDF5 recorded no filter on the dataset")
        filter_id, _flags, cd_values, _name = plist.get_filter(0)
        skipped = skipped_chunks(ds.id)
    finally:
        fh.close()

    raw_nbytes = int(original.nbytes)
    check = check_bound(original, decompressed, setting, stored_dtype=np.dtype(stored_dtype), valid=full_valid)
    get_config = getattr(filt, "get_config", None)
    plugin_kwargs = dict(get_config()) if callable(get_config) else setting.plugin_kwargs()
    converted_nbytes = original.size * np.dtype(stored_dtype).itemsize

    def _rate(seconds: float) -> float:
        return raw_nbytes / 1e6 / seconds if seconds > 0 else float("inf")

    def _ratio(nbytes: int) -> float:
        return nbytes / stored_nbytes if stored_nbytes > 0 else float("inf")

    return RoundTrip(
        setting=setting.as_dict(),
        label=setting.label,
        decompressed=decompressed,
        original_dtype=original.dtype.name,
        stored_dtype=stored_dtype,
        shape=tuple(original.shape),
        chunks=stored_chunks,
        raw_nbytes=raw_nbytes,
        stored_nbytes=stored_nbytes,
        ratio=_ratio(raw_nbytes),
        ratio_vs_input=_ratio(int(converted_nbytes)),
        compress_s=compress_s,
        decompress_s=decompress_s,
        compress_mbps=_rate(compress_s),
        decompress_mbps=_rate(decompress_s),
        max_abs_error=check.max_abs_error,
        bound_held=check.held,
        filter_id=int(filter_id),
        cd_values=[int(v) for v in cd_values],
        plugin_class=spec.plugin_class,
        plugin_kwargs=plugin_kwargs,
        dtype_converted=np.dtype(stored_dtype) != original.dtype,
        skipped_chunks=skipped,
        seconds=time.perf_counter() - t_start,
        bound_kind=setting.bound_kind,
        max_error_sigma=check.max_error_sigma,
        masked_pixels=check.masked_pixels,
        masked_pixels_changed=check.masked_pixels_changed,
        mask_nbytes=stored_nbytes - payload_nbytes,
        transform=spec.transform,
        transform_params=setting.transform_params(),
    )
