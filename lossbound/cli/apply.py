"""Apply an approved threshold to a user's HDF5 file, or export it for an acquisition system.

::

    lossbound apply THRESHOLDS.yaml --codec NAME IN.h5 OUT.h5 [--dataset /entry/data/data]
        [--from-dataset DSNAME] [--allow-unreviewed] [--poni FILE] [--overwrite]
    lossbound apply THRESHOLDS.yaml --codec NAME --export [--from-dataset DSNAME]

``OUT.h5`` is ``IN.h5`` with one dataset, the payload (detector frames), written through the
threshold's codec chain by :func:`lossbound.codecs.write_payload` — the code path the study measured:
pre-transform, dtype, filter, chunks, and the detector's masked pixels (NaN/Inf; negative
values on signed integers; the dtype's maximum on unsigned integers; values above the payload's
``count_cutoff`` attribute; the rule of :func:`lossbound.pipelines.frames.sentinel_mask`) kept apart
losslessly in ``<name>_mask`` / ``<name>_masked_values``. Every other object, attribute and
link is copied unchanged (HDF5's object copy, no data loaded; object and region references
point into ``OUT.h5``). ``IN.h5`` is opened read-only and never written.

The written file is re-opened and checked against the input before it appears under its
name: masked pixels bit-identical, and the error over valid pixels within the bound (absolute:
``max |error| <= bound``; ``poisson_sigma``: ``|error| <= sigma_error_per_value x bound x
sqrt(count)``; lossless: exact; unbounded modes and ``sparsify_*``: mask only). A failed check
leaves no ``OUT.h5`` and exits 1.

Only a threshold whose review status is ``approved`` is applied or exported
(:mod:`lossbound.results.signoff`); ``--allow-unreviewed`` overrides that with a warning naming the
status. Bad input is one line ``error: ...`` on stderr and exit code 2.

The payload is processed in memory, whole (fine for a scan of a few GB; larger files need a
frame-by-frame writer, not done yet).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import hdf5plugin  # noqa: F401  (registers the filters: reading compressed input, verifying the output)
import numpy as np
import yaml

from lossbound.codecs import CodecSetting, read_payload, write_payload
# The round trip's own bound check, so that applying and measuring agree to the last ulp.
from lossbound.codecs.hdf5 import check_bound, skipped_chunks
from lossbound.codecs.store import MASK_SUFFIX, VALUES_SUFFIX
from lossbound.cli.parsing import OneLineParser, first_line
from lossbound.core.errors import ConfigError, InputError
from lossbound.results import signoff
from lossbound.results.export import codec_config, needs_write_payload
from lossbound.results.thresholds import setting_for
from lossbound.pipelines.frames import load_geometry, sentinel_mask

log = logging.getLogger(__name__)

__all__ = ["ApplyReport", "VerificationError", "apply_threshold", "detector_valid", "export_config",
           "find_payload", "main", "select_entry", "verify_payload"]

DEFAULT_PAYLOADS = ("/entry/data/data", "/exchange/data")
EXIT_INPUT, EXIT_VERIFY = 2, 1
_CHAIN_ATTR = "lossbound_chain"


class VerificationError(Exception):
    """The written file does not give the input back within the threshold's bound."""


@dataclasses.dataclass
class ApplyReport:
    """What :func:`apply_threshold` wrote and measured.

    Attributes
    ----------
    src : Path or None
        Input file (None from :func:`verify_payload` alone).
    dst : Path
        Output file.
    payload : str
        Path of the payload dataset in both files.
    label : str
        The codec setting (``'sz3 absolute=2'``).
    review : str
        Review status of the threshold (``approved``, or what the override let through).
    input_nbytes : int
        Bytes of the payload in memory (its uncompressed size in the detector dtype).
    stored_nbytes : int
        Bytes HDF5 stored for the payload plus its mask datasets.
    ratio : float
        ``input_nbytes / stored_nbytes``.
    max_error : float
        Max |error| over valid pixels (counts).
    max_error_sigma : float or None
        Max |error| / sqrt(count) over valid pixels ('poisson_sigma' bounds only).
    bound : float
        The threshold's value.
    bound_kind : str or None
        'absolute', 'poisson_sigma', 'lossless' or None (not bounded: mask only checked).
    allowed : float or None
        The largest error the check accepted (counts, or sigmas for 'poisson_sigma').
    masked_pixels : int
        Detector pixels masked (in every frame), kept exactly beside the payload.
    masked_values : int
        Values of the payload at those pixels (``masked_pixels`` x frames).
    skipped_chunks : int
        Chunks HDF5 stored without the filter (h5py filters are optional; non-zero means the
        ratio is not the codec's).
    """

    src: Path | None
    dst: Path
    payload: str
    label: str
    review: str
    input_nbytes: int
    stored_nbytes: int
    ratio: float
    max_error: float
    max_error_sigma: float | None
    bound: float
    bound_kind: str | None
    allowed: float | None
    masked_pixels: int
    masked_values: int
    skipped_chunks: int = 0

    def summary(self) -> str:
        """One line: ratio, measured error against the bound, masked pixels kept."""
        if self.bound_kind == "poisson_sigma":
            check = f"max error {self.max_error_sigma:.4g} sigma <= {self.allowed:.4g} sigma (poisson_sigma)"
        elif self.bound_kind == "absolute":
            check = f"max error {self.max_error:.6g} <= bound {self.bound:g} (absolute)"
        elif self.bound_kind == "lossless":
            check = "max error 0 (lossless)"
        else:
            check = f"max error {self.max_error:.6g} (not bounded, checked: mask only)"
        skipped = f"; WARNING filter skipped on {self.skipped_chunks} chunk(s)" if self.skipped_chunks else ""
        where = f"{self.src}:{self.payload} -> {self.dst}" if self.src is not None else f"{self.dst}:{self.payload}"
        return (f"{self.label} [{self.review}] {where}: ratio {self.ratio:.3g} "
                f"({_mb(self.input_nbytes)} -> {_mb(self.stored_nbytes)} with mask), {check}, "
                f"{self.masked_pixels} masked detector pixel(s) ({self.masked_values} values) kept exactly{skipped}")


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.3g} MB"


# -- the thresholds entry ------------------------------------------------------------------------
def select_entry(doc: Mapping[str, Any], codec: str, *, from_dataset: str | None = None,
                 path: Any = "") -> dict[str, Any]:
    """The combined entry ``doc["codecs"][codec]``, or one dataset's own with ``from_dataset``
    (``doc``: a whole thresholds file, or one group's :func:`lossbound.results.signoff.scope`).

    Raises
    ------
    InputError
        Unknown codec or dataset (the known ones listed), or a codec without a threshold.
    """
    codecs = doc.get("codecs") or {}
    if codec not in codecs:
        where = f"group {doc['group']!r} of the thresholds file" if doc.get("group") else "the thresholds file"
        raise InputError(f"{path}: no codec {codec!r} in {where}; expected one of: "
                         f"{_listing(sorted(codecs))}")
    entry = codecs[codec]
    if from_dataset is not None:
        datasets = doc.get("datasets") or {}
        if from_dataset not in datasets:
            raise InputError(f"{path}: no dataset {from_dataset!r} in the thresholds file; expected one of: "
                             f"{_listing(sorted(datasets))}")
        per = (datasets[from_dataset].get("codecs") or {})
        if codec not in per:
            raise InputError(f"{path}: dataset {from_dataset!r} has no codec {codec!r}; expected one of: "
                             f"{_listing(sorted(per))}")
        entry = per[codec]
    if entry.get("bound") is None:
        where = (f" on dataset {from_dataset!r}" if from_dataset
                 else f" (limiting dataset {entry.get('limiting_dataset')!r})")
        raise InputError(f"{path}: codec {codec!r} has no threshold{where}: nothing passed; expected a codec "
                         f"with a bound")
    return dict(entry)


def _gate(doc: Mapping[str, Any], codec: str, *, allow_unreviewed: bool, path: Path,
          from_dataset: str | None = None) -> str:
    if from_dataset is not None and not allow_unreviewed:
        # experts sign off the combined threshold; one dataset's own bound is more lossy
        raise InputError(f"{path}: --from-dataset {from_dataset}: reviews cover the combined threshold of "
                         f"{codec!r}, not one dataset's own; expected no --from-dataset, or --allow-unreviewed")
    status = signoff.require_approved(doc, codec, allow_unreviewed=allow_unreviewed, path=path)
    if status["status"] != "approved":
        who = f" by {status['reviewer']}" if status.get("reviewer") else ""
        log.warning("%s: threshold of codec %r is %s%s, not approved; used anyway (--allow-unreviewed)",
                    path, codec, status["status"], who)
    return status["status"]


def _setting(entry: Mapping[str, Any], path: Path):
    try:
        return setting_for(entry)
    except ConfigError as exc:
        raise InputError(f"{path}: {exc}") from None


def export_config(thresholds: Path, codec: str, *, from_dataset: str | None = None,
                  allow_unreviewed: bool = False, group: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The approved threshold of ``codec`` as :func:`lossbound.results.export.codec_config`.

    Returns
    -------
    config, note
        The configuration, and a one-line note when the chain has a pre-transform that
        ``create_dataset`` alone does not apply (else None).
    """
    thresholds = Path(thresholds)
    doc = signoff.scope(signoff.load_document(thresholds), group, path=thresholds)
    entry = select_entry(doc, codec, from_dataset=from_dataset, path=thresholds)
    status = _gate(doc, codec, allow_unreviewed=allow_unreviewed, path=thresholds, from_dataset=from_dataset)
    try:
        config = codec_config(entry)
    except ConfigError as exc:
        raise InputError(f"{thresholds}: {exc}") from None
    config["review"] = status
    note = None
    if needs_write_payload(entry):
        note = (f"chain has a pre-transform ({entry['transform']}): the filter alone does not reproduce it; "
                f"write with lossbound.codecs.write_payload or lossbound apply")
    return config, note


# -- the payload -----------------------------------------------------------------------------------
def _numeric_datasets(fh: h5py.File) -> list[tuple[str, tuple[int, ...], str]]:
    found: list[tuple[str, tuple[int, ...], str]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "iuf" and obj.shape:
            found.append(("/" + name, tuple(obj.shape), obj.dtype.name))

    fh.visititems(visit)
    return found


def _listing(items: Sequence[str], limit: int = 10) -> str:
    items = list(items)
    if not items:
        return "(none)"
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def find_payload(fh: h5py.File, path: str | None = None, *, file: Any = "") -> str:
    """The payload dataset's path: ``path``, else the first of ``/entry/data/data`` and
    ``/exchange/data``, else the largest numeric dataset of at least 2 dimensions.

    Raises
    ------
    InputError
        ``path`` is not a numeric dataset of at least 2 dimensions (the file's numeric
        datasets listed), or the file has none.
    """
    def describe() -> str:
        return _listing([f"{p} {'x'.join(map(str, s))} {d}" for p, s, d in _numeric_datasets(fh)])

    if path is not None:
        obj = fh.get(path)
        if not isinstance(obj, h5py.Dataset):
            what = "a group" if isinstance(obj, h5py.Group) else "missing"
            raise InputError(f"{file}: dataset {path!r} is {what}; expected one of: {describe()}")
        _check_payload(obj, file)
        return path
    for candidate in DEFAULT_PAYLOADS:
        obj = fh.get(candidate)
        if isinstance(obj, h5py.Dataset):
            _check_payload(obj, file)
            log.info("%s: payload %s (the first of %s present); --dataset picks another", file, candidate,
                     ", ".join(DEFAULT_PAYLOADS))
            return candidate
    frames = [(int(np.prod(s)), p) for p, s, _ in _numeric_datasets(fh) if len(s) >= 2]
    if not frames:
        raise InputError(f"{file}: no numeric dataset of at least 2 dimensions (detector frames); "
                         f"pass --dataset; numeric datasets: {describe()}")
    chosen = max(frames)[1]
    log.info("%s: payload %s (neither of %s exists; the largest numeric dataset of >= 2 dims); "
             "--dataset picks another", file, chosen, ", ".join(DEFAULT_PAYLOADS))
    return chosen


def _check_payload(ds: h5py.Dataset, file: Any) -> None:
    if ds.dtype.kind not in "iuf" or ds.ndim < 2 or ds.size == 0:
        raise InputError(f"{file}: dataset {ds.name!r} is {ds.dtype} of shape {ds.shape}; expected numeric "
                         f"detector frames (integer or float, at least 2-D, not empty)")


def detector_valid(data: np.ndarray, *, count_cutoff: float | None = None) -> np.ndarray | None:
    """Valid pixels of detector frames (the pipelines' rule, :func:`lossbound.pipelines.frames.sentinel_mask`).

    Parameters
    ----------
    data : ndarray
        Frames, at least 2-D (the last two axes are the detector's rows and columns).
    count_cutoff : float, optional
        Values above it are not counts (Pilatus ``Count_cutoff``).

    Returns
    -------
    ndarray of bool, shape ``data.shape[-2:]``, or None
        True at pixels that hold a measurement in every frame; None when all do. NaN/Inf,
        negative values on signed integers (-1 gaps, -2 bad pixels) and the dtype's maximum
        on unsigned integers (0xFFFFFFFF) mark a pixel invalid.
    """
    frames = data.reshape((-1,) + data.shape[-2:])
    masked = sentinel_mask(frames, count_cutoff=count_cutoff)
    return None if not masked.any() else ~masked


# -- copying every other object --------------------------------------------------------------------
def _has_refs(dtype: np.dtype) -> bool:
    if h5py.check_ref_dtype(dtype) is not None:
        return True
    base = h5py.check_vlen_dtype(dtype)
    if base is not None:
        return isinstance(base, np.dtype) and _has_refs(base)  # vlen strings give str/bytes
    if dtype.names:
        return any(_has_refs(dtype.fields[n][0]) for n in dtype.names)
    if dtype.subdtype is not None:
        return _has_refs(dtype.subdtype[0])
    return False


def _copy_attr(src: Any, dst: Any, name: str) -> None:
    """One attribute with its exact file datatype and dataspace (big-endian, padding, charset)."""
    aid = src.attrs.get_id(name)
    if name in dst.attrs:
        del dst.attrs[name]
    space, ftype = aid.get_space(), aid.get_type()
    new = h5py.h5a.create(dst.id, name.encode("utf-8"), ftype, space)
    if space.get_simple_extent_type() == h5py.h5s.NULL:
        return
    if aid.dtype.hasobject:  # variable-length data: through h5py's conversion
        buf = np.empty(aid.shape, dtype=aid.dtype)
        aid.read(buf)
        new.write(buf)
    else:  # fixed-size: the bytes as stored (no string re-padding, no byte swapping)
        buf = np.empty(aid.shape, dtype=np.dtype(("V", ftype.get_size())))
        aid.read(buf, mtype=ftype)
        new.write(buf, mtype=ftype)


def _copy_attrs(src: Any, dst: Any, *, skip: Sequence[str] = ()) -> None:
    for name in src.attrs:
        if name not in skip and not _has_refs(src.attrs.get_id(name).dtype):
            _copy_attr(src, dst, name)  # attributes holding references: _fix_references


def _tracked(group: h5py.Group) -> bool:
    return bool(group.id.get_create_plist().get_link_creation_order())


def _addr(obj: Any) -> int:
    return int(h5py.h5o.get_info(obj.id).addr)


class _Copier:
    """Copy ``src`` into ``dst`` link by link; the payload object is written by ``write``."""

    def __init__(self, src: h5py.File, dst: h5py.File, payload_addr: int, primary: str,
                 write: Callable[[h5py.Group, str], None]):
        self.src, self.dst = src, dst
        self.payload_addr, self.primary, self.write = payload_addr, primary, write
        self.seen: dict[int, str] = {}
        self.payload_links: list[str] = []  # other hard links to the payload object

    def run(self) -> None:
        self.seen[_addr(self.src["/"])] = "/"  # a link back to the root stays a link
        _copy_attrs(self.src, self.dst)
        self._walk(self.src, self.dst, "/")
        for path in self.payload_links:
            self.dst[path] = self.dst[self.primary]  # a hard link to the new payload
        self._fix_references()

    def _walk(self, sg: h5py.Group, dg: h5py.Group, prefix: str) -> None:
        for name in sg:
            path = prefix + name
            link = sg.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                dg[name] = h5py.SoftLink(link.path)
                continue
            if isinstance(link, h5py.ExternalLink):
                dg[name] = h5py.ExternalLink(link.filename, link.path)
                continue
            obj = sg[name]
            addr = _addr(obj)
            if addr == self.payload_addr:
                if path == self.primary:
                    self.write(dg, name)
                else:
                    self.payload_links.append(path)
                continue
            if addr in self.seen:  # a second hard link to an object already copied
                dg[name] = self.dst[self.seen[addr]]
                continue
            self.seen[addr] = path
            if isinstance(obj, h5py.Group):
                new = dg.create_group(name, track_order=_tracked(obj))
                _copy_attrs(obj, new)
                self._walk(obj, new, path + "/")
            else:  # datasets and named datatypes: HDF5's object copy (filters, layout, attributes)
                sg.copy(name, dg, name=name)

    # object and region references copied by HDF5 into another file are null: point them
    # at the same paths in the new file
    def _resolve(self, ref: Any) -> Any:
        if not ref:
            return ref
        try:
            if isinstance(ref, h5py.RegionReference):
                name = h5py.h5r.get_name(ref, self.src.id)
                space = h5py.h5r.get_region(ref, self.src.id)
                return h5py.h5r.create(self.dst.id, name, h5py.h5r.DATASET_REGION, space)
            name = self.src[ref].name
        except (KeyError, ValueError, OSError, RuntimeError) as exc:  # a dangling reference in the input
            log.warning("%s: a reference that points nowhere (%s) is left null", self.src.filename, first_line(exc))
            return h5py.h5r.Reference()
        if name is None or name not in self.dst:
            log.warning("%s: a reference to an unnamed object is left null", self.src.filename)
            return h5py.h5r.Reference()
        return self.dst[name].ref

    def _remap(self, value: Any, dtype: np.dtype) -> Any:
        if h5py.check_ref_dtype(dtype) is not None:
            arr = np.asarray(value, dtype=object)
            out = np.empty(arr.shape, dtype=object)
            for idx in np.ndindex(arr.shape):
                out[idx] = self._resolve(arr[idx])
            return out if arr.ndim else out[()]
        base = h5py.check_vlen_dtype(dtype)
        if isinstance(base, np.dtype):
            arr = np.asarray(value, dtype=object)
            out = np.empty(arr.shape, dtype=object)
            for idx in np.ndindex(arr.shape):
                out[idx] = np.asarray(self._remap(arr[idx], base), dtype=base)
            return out if arr.ndim else out[()]
        if dtype.names:
            out = np.array(value, dtype=dtype, copy=True)
            for n in dtype.names:
                if _has_refs(dtype.fields[n][0]):
                    out[n] = self._remap(np.asarray(value[n]), dtype.fields[n][0])
            return out
        return value

    def _fix_references(self) -> None:
        objects: list[tuple[str, Any]] = [("/", self.src)]
        self.src.visititems(lambda name, obj: objects.append(("/" + name, obj)))
        for path, obj in objects:
            if path not in self.dst:
                continue
            target = self.dst[path]
            for name in obj.attrs:
                aid = obj.attrs.get_id(name)
                if not _has_refs(aid.dtype):
                    continue
                if name in target.attrs:
                    del target.attrs[name]
                space = aid.get_space()
                new = h5py.h5a.create(target.id, name.encode("utf-8"), aid.get_type(), space)
                if space.get_simple_extent_type() != h5py.h5s.NULL:
                    buf = np.empty(aid.shape, dtype=aid.dtype)
                    aid.read(buf)
                    new.write(np.asarray(self._remap(buf, aid.dtype), dtype=aid.dtype).reshape(aid.shape))
            if (isinstance(obj, h5py.Dataset) and _has_refs(obj.dtype) and obj.size
                    and _addr(obj) != self.payload_addr):
                target[...] = self._remap(obj[()], obj.dtype)


# -- applying ---------------------------------------------------------------------------------------
def _check_paths(src: Path, dst: Path, *, overwrite: bool) -> None:
    if not src.exists():
        raise InputError(f"{src}: no such file; expected the HDF5 file to compress")
    if not src.is_file():
        raise InputError(f"{src}: not a file; expected the HDF5 file to compress")
    if not h5py.is_hdf5(src):
        raise InputError(f"{src}: not an HDF5 file; expected the HDF5 file to compress")
    same = src.resolve() == dst.resolve()
    if not same and dst.exists():
        try:
            same = os.path.samefile(src, dst)
        except OSError:
            same = False
    if same:
        raise InputError(f"{dst}: is the input file {src}; expected another output file (the input is never written)")
    if dst.is_dir():
        raise InputError(f"{dst}: is a directory; expected an output file name")
    if dst.exists() and not overwrite:
        raise InputError(f"{dst}: exists; expected a new file name, or pass --overwrite")
    if not dst.parent.is_dir():
        raise InputError(f"{dst}: its folder {dst.parent} does not exist")


def apply_threshold(thresholds: Path, codec: str, src: Path, dst: Path, *, dataset: str | None = None,
                    from_dataset: str | None = None, allow_unreviewed: bool = False, poni: Path | None = None,
                    overwrite: bool = False, group: str | None = None) -> ApplyReport:
    """Write ``src`` to ``dst`` with its payload through ``codec``'s threshold, and check it.

    Parameters
    ----------
    thresholds : Path
        A LossBound thresholds file (``runs/thresholds/<technique>.yaml``).
    codec : str
        Codec name in it (``doc["codecs"]``).
    src, dst : Path
        Input file (opened read-only) and output file (written under a temporary name,
        renamed once verified).
    dataset : str, optional
        Payload dataset path (default: see :func:`find_payload`).
    from_dataset : str, optional
        Use that measured dataset's own threshold instead of the combined (conservative) one.
    group : str, optional
        Use that group's (sample type's) threshold and review (``groups.<group>``) instead of
        the overall one.
    allow_unreviewed : bool
        Apply a threshold that is not ``approved`` (a warning names its status).
    poni : Path, optional
        Detector geometry (pyFAI PONI, or BioXTAS RAW ``.cfg``); required by chains that model
        the frame (``sparsify_*``).
    overwrite : bool
        Replace an existing ``dst``.

    Returns
    -------
    ApplyReport

    Raises
    ------
    InputError
        Bad thresholds file, codec, review status, input or output path, payload, or geometry.
    VerificationError
        The written file does not give the payload back within the bound (no ``dst`` left).
    """
    thresholds, src, dst = Path(thresholds), Path(src), Path(dst)
    doc = signoff.scope(signoff.load_document(thresholds), group, path=thresholds)
    entry = select_entry(doc, codec, from_dataset=from_dataset, path=thresholds)
    review = _gate(doc, codec, allow_unreviewed=allow_unreviewed, path=thresholds, from_dataset=from_dataset)
    setting = _setting(entry, thresholds)
    _check_paths(src, dst, overwrite=overwrite)
    spec = setting.spec
    if spec.needs_geometry and poni is None:
        raise InputError(f"{thresholds}: codec {codec!r} models diffraction frames from the detector geometry; "
                         f"expected --poni FILE (pyFAI PONI or BioXTAS RAW .cfg)")
    if poni is not None and not spec.needs_geometry:
        log.info("--poni ignored: codec %r does not use the detector geometry", codec)

    tmp = dst.parent / f".{dst.name}.lossbound-{os.getpid()}.tmp"
    try:
        with h5py.File(src, "r") as fin:
            payload = find_payload(fin, dataset, file=src)
            ds = fin[payload]
            if Path(ds.file.filename).resolve() != src.resolve():
                raise InputError(f"{src}:{payload} is an external link into {ds.file.filename}; expected a dataset "
                                 f"of this file (apply to that file instead)")
            primary, parent, name, payload_addr = _payload_location(fin, payload, ds)
            for suffix in (MASK_SUFFIX, VALUES_SUFFIX):
                if name + suffix in parent:
                    raise InputError(f"{src}: {parent.name.rstrip('/')}/{name + suffix} exists beside the payload; "
                                     f"expected a file not already written by LossBound")
            measured = _measured_dtypes(doc, codec, entry, from_dataset)
            if measured and ds.dtype.name not in measured:
                raise InputError(f"{src}:{payload} is {ds.dtype.name}; the threshold of {codec!r} was measured on "
                                 f"{', '.join(sorted(measured))} data; expected the same detector dtype")
            if _CHAIN_ATTR in ds.attrs:
                raise InputError(f"{src}:{payload} already carries {_CHAIN_ATTR!r} (written by LossBound); "
                                 f"expected detector data as measured")
            try:
                data = ds[()]
            except (OSError, ValueError) as exc:
                raise InputError(f"{src}:{payload}: cannot read ({first_line(exc)})") from None
            cutoff = ds.attrs.get("count_cutoff")
            cutoff = float(cutoff) if cutoff is not None and np.size(cutoff) == 1 else None
            valid = detector_valid(data, count_cutoff=cutoff)
            geometry = None
            if spec.needs_geometry:
                geometry = load_geometry(Path(poni), tuple(data.shape[-2:])).get_config()
            try:
                setting.validate(data.dtype, has_geometry=geometry is not None)
            except ConfigError as exc:
                raise InputError(f"{src}:{payload}: {exc}") from None

            written: list[str] = []

            def write(group: h5py.Group, leaf: str) -> None:
                out = write_payload(group, leaf, data, setting, valid=valid, geometry=geometry)
                _copy_attrs(ds, out[0], skip=(_CHAIN_ATTR,))
                written.extend(d.name for d in out)

            root_order = _tracked(fin["/"])
            with h5py.File(tmp, "w", track_order=root_order, userblock_size=fin.userblock_size or None) as fout:
                _Copier(fin, fout, payload_addr, primary, write).run()
                if not written:  # the payload sits only under a group reached through another hard link
                    raise InputError(f"{src}:{payload}: could not place the payload in the copy; expected it at "
                                     f"{primary}")
            if fin.userblock_size:
                with open(src, "rb") as fh_in, open(tmp, "r+b") as fh_out:
                    fh_out.write(fh_in.read(fin.userblock_size))
        try:
            report = verify_payload(tmp, written[0], data, setting, valid=valid, review=review)
        except VerificationError as exc:
            raise VerificationError(f"{exc}; {dst} not written") from None
        report.src, report.dst, report.payload = src, dst, primary
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return report


def _measured_dtypes(doc: Mapping[str, Any], codec: str, entry: Mapping[str, Any],
                     from_dataset: str | None) -> set[str]:
    """Detector dtypes the threshold was measured on (every contributing dataset's); empty when
    the file does not say."""
    if from_dataset is not None:
        names = [from_dataset]
    else:
        names = list(((doc.get("codecs") or {}).get(codec) or {}).get("per_dataset") or {})
    found = {(((doc.get("datasets") or {}).get(n) or {}).get("codecs") or {}).get(codec, {}).get("detector_dtype")
             for n in names}
    found.add(entry.get("detector_dtype"))
    return {str(d) for d in found if d}


def _payload_location(fin: h5py.File, path: str, ds: h5py.Dataset) -> tuple[str, h5py.Group, str, int]:
    """Where the payload object is written: ``path`` when it is a hard link, else (a soft link
    to it) its first hard link; the other hard links to it become links to the new dataset."""
    addr = _addr(ds)
    hard: list[str] = []

    def visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.HardLink) and _addr(fin[name]) == addr:
            hard.append("/" + name)

    fin.visititems_links(visit)
    norm = "/" + path.strip("/")
    primary = norm if norm in hard else (hard[0] if hard else norm)
    parent_path, _, leaf = primary.rpartition("/")
    return primary, fin[parent_path or "/"], leaf, addr


def verify_payload(path: Path, payload: str, original: np.ndarray, setting: CodecSetting, *,
                   valid: np.ndarray | None = None, review: str = "") -> ApplyReport:
    """Check a written payload against the data it was written from.

    Parameters
    ----------
    path : Path
        HDF5 file holding the payload (opened read-only).
    payload : str
        Payload dataset path; ``<payload>_mask`` / ``<payload>_masked_values`` beside it are
        used when present (:func:`lossbound.codecs.read_payload`).
    original : ndarray
        The data as the detector wrote it.
    setting : CodecSetting
        The chain it was written with (its mode and value are the bound checked).
    valid : ndarray of bool, optional
        Valid pixels (broadcasts to ``original``); errors are measured over them, and the
        others must come back bit-identical.
    review : str
        Review status, for the report.

    Returns
    -------
    ApplyReport
        ``src`` None, ``dst`` = ``path``.

    Raises
    ------
    VerificationError
        A masked pixel changed, or the error exceeds the bound (absolute: ``bound`` + the float
        rounding slack :func:`lossbound.codecs.hdf5.roundtrip` allows; ``poisson_sigma``:
        ``sigma_error_per_value x bound`` sigmas; lossless: any change). Unbounded modes and
        frame-modelling chains: only the masked pixels are checked.
    """
    parent, _, leaf = payload.rstrip("/").rpartition("/")
    with h5py.File(path, "r") as fh:
        group = fh[parent or "/"]
        restored = read_payload(group, leaf)
        ds = group[leaf]
        stored_dtype = ds.dtype
        written = [leaf] + [leaf + sfx for sfx in (MASK_SUFFIX, VALUES_SUFFIX) if leaf + sfx in group]
        stored_nbytes = sum(int(group[n].id.get_storage_size()) for n in written)
        skipped = skipped_chunks(ds.id)
    if restored.shape != original.shape:
        raise VerificationError(f"{path}:{payload} read back has shape {restored.shape}; expected {original.shape}")
    check = check_bound(original, restored, setting, stored_dtype=np.dtype(stored_dtype), valid=valid)
    if check.masked_pixels_changed:
        raise VerificationError(f"{path}:{payload}: {check.masked_pixels_changed} masked value(s) changed; "
                                f"expected them exact")
    kind = setting.bound_kind if setting.spec.lossy else "lossless"
    value = float(setting.value) if setting.value is not None else 0.0
    if check.held is False:
        got = f"{check.max_error_sigma:.4g} sigma" if kind == "poisson_sigma" else f"{check.max_abs_error:.6g}"
        raise VerificationError(f"{path}:{payload}: {setting.label} gives max error {got} > allowed "
                                f"{check.allowed:.6g} ({kind})")
    input_nbytes = int(original.nbytes)
    return ApplyReport(
        src=None, dst=Path(path), payload=payload, label=setting.label, review=review, input_nbytes=input_nbytes,
        stored_nbytes=stored_nbytes, ratio=input_nbytes / stored_nbytes if stored_nbytes else float("inf"),
        max_error=check.max_abs_error, max_error_sigma=check.max_error_sigma, bound=value, bound_kind=kind,
        allowed=check.allowed, masked_pixels=0 if valid is None else int((~np.asarray(valid, bool)).sum()),
        masked_values=check.masked_pixels,
        skipped_chunks=int(skipped),
    )


# -- command line -----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="lossbound apply",
        description="Write an HDF5 file's detector frames through an approved LossBound threshold "
                    "(every other object copied), or --export the codec configuration.")
    p.add_argument("thresholds", type=Path, help="thresholds file (runs/thresholds/<technique>.yaml)")
    p.add_argument("files", nargs="*", type=Path, metavar="IN.h5 OUT.h5", help="input and output file")
    p.add_argument("--codec", required=True, help="codec name in the thresholds file")
    p.add_argument("--dataset", help="payload dataset path (default: /entry/data/data, /exchange/data, "
                                     "else the largest numeric dataset of >= 2 dims)")
    p.add_argument("--from-dataset", help="use this measured dataset's own threshold, not the combined one")
    p.add_argument("--group", help="use this group's (sample type's) threshold and its review, not the overall one")
    p.add_argument("--allow-unreviewed", action="store_true",
                   help="apply or export a threshold that is not approved (a warning names its status)")
    p.add_argument("--poni", type=Path, help="detector geometry (needed by sparsify_* codecs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5")
    p.add_argument("--export", action="store_true", help="print the codec configuration as YAML; no files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 ok, 1 verification failed, 2 bad input)."""
    if not logging.getLogger().handlers:  # run as a program: our notes, others' warnings (not hdf5plugin's info)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
        logging.getLogger("lossbound").setLevel(logging.INFO)
    try:
        args = _parser().parse_intermixed_args(argv)
        if args.export:
            if args.files:
                raise InputError(f"--export takes no IN.h5/OUT.h5, got {' '.join(map(str, args.files))}")
            config, note = export_config(args.thresholds, args.codec, from_dataset=args.from_dataset,
                                         allow_unreviewed=args.allow_unreviewed, group=args.group)
            sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
            if note:
                print(f"# note: {note}")
            return 0
        if len(args.files) != 2:
            raise InputError(f"expected IN.h5 OUT.h5 after the thresholds file (or --export), "
                             f"got {len(args.files)} path(s)")
        report = apply_threshold(args.thresholds, args.codec, args.files[0], args.files[1], dataset=args.dataset,
                                 from_dataset=args.from_dataset, allow_unreviewed=args.allow_unreviewed,
                                 poni=args.poni, overwrite=args.overwrite, group=args.group)
    except InputError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except VerificationError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_VERIFY
    except OSError as exc:  # disk full, permissions on OUT's folder
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_VERIFY
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
