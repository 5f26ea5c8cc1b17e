"""Read tomography scans (DataExchange and NXtomo HDF5 layouts), read-only, with checked shapes.

Every reader returns ``projections`` (n_angles, n_rows, n_cols) in the stored dtype, ``flats``
and ``darks`` (n, n_rows, n_cols) in their stored dtype and ``theta`` (n_angles,) float64 in
degrees.  Problems with the input raise :class:`lossbound.core.errors.InputError` with one line
naming the file and the key.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from lossbound.core.errors import InputError

log = logging.getLogger(__name__)

DATAEXCHANGE_KEYS: dict[str, str] = {
    "projections": "exchange/data",
    "flats": "exchange/data_white",
    "darks": "exchange/data_dark",
    "theta": "exchange/theta",
}
"""Default dataset paths of the DataExchange layout (theta in degrees)."""

_NX_DATA = ("data/data", "instrument/detector/data")
_NX_KEY = ("instrument/detector/image_key", "data/image_key")
_NX_ANGLE = ("sample/rotation_angle", "data/rotation_angle")
_IMAGE_KEYS = {"projections": 0, "flats": 1, "darks": 2}


def _open(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning the usual failures into one-line InputErrors."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found (expected an HDF5 tomography scan)")
    if p.is_dir():
        raise InputError(f"{p}: is a directory (expected an HDF5 tomography scan file)")
    try:
        if not h5py.is_hdf5(p):
            raise InputError(f"{p}: not an HDF5 file (expected a DataExchange or NXtomo scan)")
        return h5py.File(p, "r")
    except OSError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: cannot open as HDF5 ({msg})") from None


def _dataset(f: h5py.File, key: str, what: str) -> h5py.Dataset:
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        found = "a group" if obj is not None else "missing"
        raise InputError(f"{f.filename}: dataset '/{key.lstrip('/')}' {found} (expected {what})")
    return obj


ANGLE_UNITS = ("deg", "rad")


def _theta_degrees(ds: h5py.Dataset, values: np.ndarray, unit: str | None = None) -> np.ndarray:
    """Angles in degrees: in ``unit`` ('deg' | 'rad') when given (``dataset.angle_unit``),
    else as the ``units`` attribute says (degrees without one)."""
    if unit is None:
        units = ds.attrs.get("units", b"degrees")
        units = units.decode() if isinstance(units, bytes) else str(units)
        unit = "rad" if units.strip().lower() in ("rad", "radian", "radians") else "deg"
    values = np.asarray(values, dtype=np.float64).ravel()
    return np.rad2deg(values) if unit == "rad" else values


def _check(path: str, arrays: Mapping[str, np.ndarray], keys: Mapping[str, str]) -> None:
    """Shapes must agree: 3-D stacks of equal frame shape, one angle per projection."""
    proj = arrays["projections"]
    for name in ("projections", "flats", "darks"):
        a = arrays[name]
        if a.ndim != 3:
            raise InputError(
                f"{path}: '{keys[name]}' has shape {a.shape} (expected a 3-D stack (frames, rows, columns))"
            )
        if a.shape[0] == 0:
            raise InputError(f"{path}: '{keys[name]}' has no frames (expected at least one)")
        if a.shape[1:] != proj.shape[1:]:
            raise InputError(
                f"{path}: '{keys[name]}' frames are {a.shape[1:]} but projections '{keys['projections']}' "
                f"frames are {proj.shape[1:]} (expected equal frame shapes)"
            )
    theta = arrays["theta"]
    if theta.size != proj.shape[0]:
        raise InputError(
            f"{path}: '{keys['theta']}' has {theta.size} angles for {proj.shape[0]} projections "
            f"in '{keys['projections']}' (expected one angle per projection)"
        )
    if not np.all(np.isfinite(theta)):
        raise InputError(f"{path}: '{keys['theta']}' contains non-finite angles")
    _check_content(path, arrays, keys)


# A frame with more non-finite pixels than this is not a measurement with some bad pixels.
MAX_NON_FINITE_FRACTION = 0.5


def _check_content(path: str, arrays: Mapping[str, np.ndarray], keys: Mapping[str, str]) -> None:
    """Refuse data no reconstruction can be computed from, naming what is wrong."""
    for name in ("projections", "flats", "darks"):
        a = arrays[name]
        if a.dtype.kind not in "iuf":
            raise InputError(
                f"{path}: '{keys[name]}' has dtype {a.dtype} (expected integer or floating-point detector counts)"
            )
        if a.dtype.kind == "f":
            bad = (~np.isfinite(a)).reshape(a.shape[0], -1).mean(axis=1)
            if bad.max() > MAX_NON_FINITE_FRACTION:
                i = int(np.argmax(bad))
                raise InputError(
                    f"{path}: '{keys[name]}' frame {i} is {100 * bad[i]:.0f} % NaN/Inf "
                    f"(expected at most {100 * MAX_NON_FINITE_FRACTION:.0f} % non-finite pixels)"
                )
    proj = arrays["projections"]
    if not np.any(np.nan_to_num(proj, nan=0.0, posinf=0.0, neginf=0.0)):
        raise InputError(f"{path}: '{keys['projections']}' is all zero (expected measured projections)")
    with np.errstate(all="ignore"):
        open_beam = np.nanmedian(np.asarray(arrays["flats"], np.float64)) - \
            np.nanmedian(np.asarray(arrays["darks"], np.float64))
    if not open_beam > 0:
        raise InputError(
            f"{path}: flats '{keys['flats']}' are not above the darks '{keys['darks']}' "
            f"(median open beam {open_beam:.4g}; expected open-beam frames brighter than the darks)"
        )


def read_dataexchange(
    path: str | os.PathLike, *, keys: Mapping[str, str] | None = None, angle_unit: str | None = None
) -> dict[str, np.ndarray]:
    """Read a DataExchange scan (read-only).

    Parameters
    ----------
    path : path-like
        The HDF5 file.
    keys : mapping, optional
        Overrides of :data:`DATAEXCHANGE_KEYS` (``projections``, ``flats``, ``darks``, ``theta``
        -> dataset path).
    angle_unit : {'deg', 'rad'}, optional
        The unit of the stored angles; None: the ``units`` attribute (degrees without one).

    Returns
    -------
    dict
        ``projections``, ``flats``, ``darks`` (stored dtypes) and ``theta`` (float64 degrees).

    Raises
    ------
    InputError
        Missing or non-HDF5 file, missing dataset, inconsistent shapes.
    """
    keys = {**DATAEXCHANGE_KEYS, **(keys or {})}
    what = {
        "projections": "projections (angles, rows, columns)",
        "flats": "flat fields (frames, rows, columns)",
        "darks": "dark fields (frames, rows, columns)",
        "theta": "rotation angles in degrees, one per projection",
    }
    with _open(path) as f:
        out: dict[str, np.ndarray] = {}
        for name in ("projections", "flats", "darks", "theta"):
            ds = _dataset(f, keys[name], what[name])
            out[name] = _theta_degrees(ds, ds[()], angle_unit) if name == "theta" else np.asarray(ds[()])
    _check(str(path), out, keys)
    return out


def _first(f: h5py.Group, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if isinstance(f.get(c), h5py.Dataset)), None)


def _nx_entry(f: h5py.File) -> h5py.Group | None:
    """The NXtomo entry: the first NXentry whose definition is NXtomo, else one with its data."""
    candidates = [g for g in f.values() if isinstance(g, h5py.Group)]
    for g in candidates:
        definition = g.get("definition")
        if isinstance(definition, h5py.Dataset):
            value = definition[()]
            value = value.decode() if isinstance(value, bytes) else str(value)
            if value.strip() == "NXtomo":
                return g
    for g in candidates:
        if _first(g, _NX_DATA) and _first(g, _NX_KEY):
            return g
    return None


def _read_frames(ds: h5py.Dataset, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` (increasing) of a stack, read as contiguous runs (fast in HDF5)."""
    if index.size == 0:
        return np.empty((0,) + ds.shape[1:], ds.dtype)
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    runs = np.split(index, breaks)
    return np.concatenate([ds[int(r[0]) : int(r[-1]) + 1] for r in runs], axis=0)


def read_nxtomo(path: str | os.PathLike, *, angle_unit: str | None = None) -> dict[str, np.ndarray]:
    """Read an NXtomo scan (read-only): frames split by ``image_key`` (0 projection, 1 flat, 2 dark).

    The frames are ``<entry>/data/data`` or ``<entry>/instrument/detector/data``, the keys
    ``<entry>/instrument/detector/image_key`` (or ``<entry>/data/image_key``) and the angles
    ``<entry>/sample/rotation_angle`` (or ``<entry>/data/rotation_angle``), degrees unless its
    ``units`` attribute says radians.

    Returns
    -------
    dict
        ``projections``, ``flats``, ``darks`` (stored dtype) and ``theta`` (float64 degrees).

    Raises
    ------
    InputError
        Missing or non-HDF5 file, no NXtomo entry, missing dataset, inconsistent shapes.
    """
    with _open(path) as f:
        entry = _nx_entry(f)
        if entry is None:
            raise InputError(
                f"{path}: no NXtomo entry (expected '/entry/data/data' or '/entry/instrument/detector/data' with an image_key)"
            )
        e = entry.name.strip("/")
        data_key = _first(entry, _NX_DATA)
        if data_key is None:
            raise InputError(
                f"{path}: dataset '/{e}/{_NX_DATA[0]}' missing (expected the detector frames, also looked for '/{e}/{_NX_DATA[1]}')"
            )
        key_key = _first(entry, _NX_KEY)
        if key_key is None:
            raise InputError(
                f"{path}: dataset '/{e}/{_NX_KEY[0]}' missing (expected image_key 0=projection, 1=flat, 2=dark per frame)"
            )
        angle_key = _first(entry, _NX_ANGLE)
        if angle_key is None:
            raise InputError(
                f"{path}: dataset '/{e}/{_NX_ANGLE[0]}' missing (expected the rotation angle of every frame)"
            )
        data = entry[data_key]
        image_key = np.asarray(entry[key_key][()]).ravel()
        angles = _theta_degrees(entry[angle_key], entry[angle_key][()], angle_unit)
        if data.ndim != 3:
            raise InputError(
                f"{path}: '/{e}/{data_key}' has shape {data.shape} (expected a 3-D stack (frames, rows, columns))"
            )
        n = data.shape[0]
        for key, values in ((key_key, image_key), (angle_key, angles)):
            if values.size != n:
                raise InputError(
                    f"{path}: '/{e}/{key}' has {values.size} values for {n} frames in '/{e}/{data_key}' (expected one per frame)"
                )
        out = {name: _read_frames(data, np.flatnonzero(image_key == k)) for name, k in _IMAGE_KEYS.items()}
        out["theta"] = angles[image_key == 0]
    names = {
        "projections": f"/{e}/{data_key}[image_key==0]",
        "flats": f"/{e}/{data_key}[image_key==1]",
        "darks": f"/{e}/{data_key}[image_key==2]",
        "theta": f"/{e}/{angle_key}",
    }
    _check(str(path), out, names)
    return out


def find_format(path: str | os.PathLike) -> str:
    """'dataexchange' or 'nxtomo', from the file's layout (opened read-only)."""
    with _open(path) as f:
        if isinstance(f.get(DATAEXCHANGE_KEYS["projections"]), h5py.Dataset):
            return "dataexchange"
        if _nx_entry(f) is not None:
            return "nxtomo"
    raise InputError(f"{path}: unknown layout (expected DataExchange '/exchange/data' or an NXtomo entry)")


READERS = {"dataexchange": read_dataexchange, "nxtomo": read_nxtomo}


def read_scan(
    path: str | os.PathLike, *, fmt: str = "auto", **kwargs: Any
) -> tuple[dict[str, np.ndarray], str]:
    """Read a scan in format ``fmt`` ('dataexchange', 'nxtomo' or 'auto'); returns (arrays, format)."""
    if fmt == "auto":
        fmt = find_format(path)
    if fmt not in READERS:
        raise InputError(f"{path}: unknown format {fmt!r} (expected auto, dataexchange or nxtomo)")
    return READERS[fmt](path, **kwargs), fmt


def read_ground_truth(path: str | os.PathLike, *, arrays: bool = True) -> dict[str, Any] | None:
    """The simulation's ground truth of a file (``/phantom``), or None when it has none.

    Returns ``center`` (true rotation axis column), ``materials`` (id -> name and attenuation per
    pixel) and, when ``arrays`` is true, ``mu`` and ``labels`` (n_rows, n_cols, n_cols).
    """
    import json

    with _open(path) as f:
        gt = f.get("phantom")
        if not isinstance(gt, h5py.Group):
            return None
        out: dict[str, Any] = {}
        if isinstance(gt.get("center"), h5py.Dataset):
            out["center"] = float(gt["center"][()])
        if "materials" in gt.attrs:
            raw = gt.attrs["materials"]
            out["materials"] = {
                int(k): v for k, v in json.loads(raw.decode() if isinstance(raw, bytes) else raw).items()
            }
        if arrays:
            for name in ("mu", "labels"):
                if isinstance(gt.get(name), h5py.Dataset):
                    out[name] = gt[name][()]
        return out
