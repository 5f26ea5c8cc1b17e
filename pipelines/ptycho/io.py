"""Reading a ptychography scan: diffraction patterns, scan positions, an initial probe, a mask.

Two layouts:

- **CXI** (``.cxi``, ``.h5``, ``.nxs``): ``/entry_1/instrument_1/detector_1/data`` (or
  ``/entry_1/data_1/data``), ``/entry_1/sample_1/geometry_1/translation`` (n x 3, metres: x, y,
  z), the energy (``/entry_1/instrument_1/source_1/energy``, J), ``detector_1/distance`` and
  ``x_pixel_size`` (m), an optional ``detector_1/mask`` (non-zero = masked) and an optional
  initial probe ``/entry_1/instrument_1/source_1/probe``.
- **npz** (``.npz``, ``.npz.bz2``; the tike layout of the shared Siemens-star scan): ``data``
  ((1,) n x N x N counts), ``scan`` ((1,) n x 2, row and column in object pixels), optional
  ``probe`` (… x N x N complex). The file stores no geometry, so everything is in object pixels.

Patterns are photon counts: values that are integers are kept as int32 (what a counting
detector writes); negative values (gaps, bad pixels) and values above ``count_cutoff`` are
masked, and masked pixels stay bit-exact through every codec.
"""
from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import InputError

__all__ = ["load_scan", "nominal_geometry", "select_positions"]

_PLANCK_C = 1.986445857e-25  # h c in J m
_DATA_KEYS = ("/entry_1/instrument_1/detector_1/data", "/entry_1/data_1/data")


def nominal_geometry(size: int, *, object_pixel: float = 10e-9) -> dict[str, float]:
    """A far-field geometry whose object pixel is ``object_pixel`` for ``size`` pixel patterns
    (12.4 keV, 75 µm pixels; what the simulation writes)."""
    wavelength = 1e-10
    pixel = 75e-6
    return {"energy_j": _PLANCK_C / wavelength, "pixel_size": pixel, "object_pixel": object_pixel,
            "distance": object_pixel * size * pixel / wavelength}


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        fh = bz2.open(path) if path.suffix == ".bz2" else open(path, "rb")
        with fh, np.load(fh) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read as npz ({str(exc).splitlines()[0]})") from None


def _read_npz(path: Path) -> dict[str, Any]:
    z = _npz(path)
    for key in ("data", "scan"):
        if key not in z:
            raise InputError(f"{path}: no {key!r} array; expected 'data' (patterns) and 'scan' (positions), "
                             f"found {', '.join(sorted(z)) or 'none'}")
    data = z["data"]
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    scan = z["scan"]
    while scan.ndim > 2 and scan.shape[0] == 1:
        scan = scan[0]
    probe = z.get("probe")
    if probe is not None:
        probe = np.asarray(probe)
        while probe.ndim > 2 and probe.shape[0] == 1:
            probe = probe[0]
    return {"patterns": data, "positions": np.asarray(scan, np.float64), "probe": probe, "mask": None,
            "layout": "npz", "geometry": None, "count_cutoff": None}


def _read_cxi(path: Path) -> dict[str, Any]:
    import h5py
    import hdf5plugin  # noqa: F401  (registers the filters the patterns may be stored with)

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: cannot read as HDF5 ({str(exc).splitlines()[0]})") from None
    with fh:
        key = next((k for k in _DATA_KEYS if k in fh), None)
        if key is None:
            raise InputError(f"{path}: no diffraction patterns at {' or '.join(_DATA_KEYS)} (CXI layout)")
        data = fh[key][()]
        cutoff = fh[key].attrs.get("count_cutoff")
        tkey = "/entry_1/sample_1/geometry_1/translation"
        if tkey not in fh:
            raise InputError(f"{path}: no scan positions at {tkey} (n x 3, metres)")
        tr = np.asarray(fh[tkey][()], np.float64)
        det = "/entry_1/instrument_1/detector_1"
        need = {"energy": "/entry_1/instrument_1/source_1/energy", "distance": f"{det}/distance",
                "pixel": f"{det}/x_pixel_size"}
        missing = [v for v in need.values() if v not in fh]
        if missing:
            raise InputError(f"{path}: missing {', '.join(missing)} (the geometry that sets the object pixel)")
        energy, distance, pixel = (float(np.asarray(fh[v][()]).ravel()[0]) for v in need.values())
        mask = fh[f"{det}/mask"][()] if f"{det}/mask" in fh else None
        probe_key = "/entry_1/instrument_1/source_1/probe"
        probe = fh[probe_key][()] if probe_key in fh else None
    if tr.ndim != 2 or tr.shape[1] < 2:
        raise InputError(f"{path}: {tkey} has shape {tr.shape}; expected (n, 3)")
    if data.ndim != 3 or min(energy, distance, pixel) <= 0:
        raise InputError(f"{path}: expected a stack of patterns (n, N, N) and a positive energy, distance and "
                         f"pixel size; got {data.shape} and {energy}, {distance}, {pixel}")
    dx = _PLANCK_C / energy * distance / (data.shape[-1] * pixel)
    positions = np.stack([tr[:, 1], tr[:, 0]], axis=1) / dx
    return {"patterns": data, "positions": positions, "probe": probe, "mask": mask, "layout": "cxi",
            "geometry": {"energy_j": energy, "distance": distance, "pixel_size": pixel, "object_pixel": dx},
            "count_cutoff": None if cutoff is None else float(cutoff)}


def select_positions(positions: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the ``limit`` positions nearest the scan's centre, in scan order (a compact
    patch keeps the overlap of the full scan); all of them when ``limit`` is None."""
    if limit is None or limit >= len(positions):
        return np.arange(len(positions))
    centre = np.median(positions, axis=0)
    return np.sort(np.argsort(((positions - centre) ** 2).sum(axis=1), kind="stable")[: int(limit)])


def load_scan(path: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Patterns (n, N, N), valid-pixel mask (N, N), positions (n, 2: row, col, object pixels),
    the initial probe or None, the indices of the kept positions in the file, and what was
    read, checked against each other (one-line
    ``InputError`` naming the file otherwise). ``cfg``: ``max_positions``, ``fftshift``
    (auto | true | false: move zero frequency from the corner to the centre), ``count_cutoff``."""
    if not path.exists():
        raise InputError(f"{path}: no such file (dataset.path)")
    name = path.name.lower()
    scan = _read_npz(path) if name.endswith((".npz", ".npz.bz2")) else _read_cxi(path)
    data, pos, probe = scan["patterns"], scan["positions"], scan["probe"]
    if data.ndim != 3 or data.shape[1] != data.shape[2] or data.shape[1] < 16:
        raise InputError(f"{path}: patterns have shape {data.shape}; expected (n, N, N) with N >= 16")
    if pos.shape != (data.shape[0], 2):
        raise InputError(f"{path}: {data.shape[0]} patterns but positions of shape {pos.shape}; expected "
                         f"({data.shape[0]}, 2): one position per pattern")
    if not np.isfinite(pos).all():
        raise InputError(f"{path}: scan positions contain NaN or infinity")
    if np.ptp(pos, axis=0).max() <= 0:
        raise InputError(f"{path}: all scan positions are equal; a ptychographic scan needs overlapping positions")
    if probe is not None and (probe.shape != data.shape[1:] or not np.iscomplexobj(probe)):
        raise InputError(f"{path}: initial probe has shape {probe.shape} ({probe.dtype}); expected complex "
                         f"{data.shape[1:]} like the patterns")
    if np.iscomplexobj(data) or not np.isfinite(data[np.isfinite(data)]).all():
        raise InputError(f"{path}: patterns must be real photon counts, got {data.dtype}")
    shift = cfg.get("fftshift", "auto")
    if shift not in ("auto", True, False):
        raise InputError(f"dataset.fftshift must be auto, true or false, got {shift!r}")
    mean = np.mean(np.where(data >= 0, data, 0), axis=0)
    n = data.shape[-1]
    corner = np.nanmean(np.roll(mean, (n // 2, n // 2), axis=(0, 1))[n // 2 - 4:n // 2 + 4, n // 2 - 4:n // 2 + 4])
    centre = np.nanmean(mean[n // 2 - 4:n // 2 + 4, n // 2 - 4:n // 2 + 4])
    shifted = bool(shift is True or (shift == "auto" and corner > 10 * max(centre, 1e-12)))
    if shifted:
        data = np.fft.fftshift(data, axes=(-2, -1))
        if scan["mask"] is not None:
            scan["mask"] = np.fft.fftshift(scan["mask"])
    keep = select_positions(pos, cfg.get("max_positions"))
    data, pos = data[keep], pos[keep]
    masked = np.zeros(data.shape[1:], bool) if scan["mask"] is None else np.asarray(scan["mask"]) != 0
    if masked.shape != data.shape[1:]:
        raise InputError(f"{path}: mask has shape {masked.shape}; expected {data.shape[1:]}")
    nan = ~np.isfinite(data)
    masked |= nan.any(axis=0) | (data < 0).any(axis=0)
    cutoff = cfg.get("count_cutoff", scan["count_cutoff"])
    if cutoff is not None:
        masked |= (data > float(cutoff)).any(axis=0)
    integer = bool(np.all(np.equal(np.mod(data[:, ~masked], 1), 0))) and np.nanmax(data) < 2**31
    if integer and data.dtype.kind == "f":
        data = np.where(nan, -1, data).astype(np.int32)
    if masked.all():
        raise InputError(f"{path}: every detector pixel is masked")
    pos = pos - pos.min(axis=0)   # the scan's corner at the origin
    return {"patterns": data, "valid": ~masked, "positions": pos, "probe": probe, "layout": scan["layout"],
            "geometry": scan["geometry"], "fftshift": shifted, "indices": keep, "positions_used": int(len(keep)),
            "positions_in_file": int(scan["positions"].shape[0])}
