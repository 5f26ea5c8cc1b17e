"""Detector frames, geometry and masks shared by the diffraction techniques (azint, sx).

Frames come from any fabio format (TIFF, CBF, EDF, also ``.bz2``/``.gz``) or an HDF5 dataset;
geometry from a pyFAI PONI file or a BioXTAS RAW settings file (``.cfg``, JSON) converted to
the equivalent pyFAI geometry. Every failure is an ``InputError`` naming the file and what
was expected. Raw files are opened read-only.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lossbound.diffraction.detector import integrator_for  # re-exported: one integrator cache for pipelines and codecs
from lossbound.core.errors import ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = ["count_dispersion", "expand_paths", "geometry_from_header", "integrator_for", "load_detector_frames",
           "load_geometry", "read_frames", "read_user_mask", "sentinel_mask"]

#: median variance / mean of the background shells outside which counts are not photon counts
DISPERSION_RANGE = (0.7, 1.5)

HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi"}
DEFAULT_KEY = "/entry/data/data"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_frames(path: Path, *, key: str | None = None, flipud: bool = False,
                max_frames: int | None = None, what: str = "dataset.key") -> tuple[np.ndarray, dict[str, Any]]:
    """A stack ``(n_frames, rows, cols)`` of detector frames, in the file's dtype.

    Parameters
    ----------
    path : Path
        HDF5 file (``key`` = dataset path, default ``/entry/data/data``) or any
        fabio-readable image (all its frames).
    key : str, optional
        HDF5 dataset path.
    flipud : bool
        Flip rows (some PONI files were fitted on the flipped image).
    max_frames : int, optional
        Keep the first ``max_frames`` frames.

    Returns
    -------
    frames, header
        The stack and a small JSON-able header (format, key, flipped, n_frames_in_file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected detector frames: TIFF, CBF, EDF or HDF5)")
    header: dict[str, Any] = {"flipud": bool(flipud)}
    if path.suffix.lower() in HDF5_SUFFIXES:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the filters of compressed frames, e.g. Bitshuffle-LZ4)

        key = key or DEFAULT_KEY
        try:
            with h5py.File(path, "r") as fh:
                if key not in fh or not isinstance(fh[key], h5py.Dataset):
                    raise InputError(f"{path}: no dataset {key!r}; set {what} to its path")
                ds = fh[key]
                if ds.ndim not in (2, 3):
                    raise InputError(f"{path}:{key} has shape {ds.shape}; expected 2-D frame(s)")
                n = 1 if ds.ndim == 2 else ds.shape[0]
                stop = n if max_frames is None else min(n, int(max_frames))
                frames = ds[()] if ds.ndim == 2 else ds[:stop]
        except OSError as exc:
            raise InputError(f"{path}: cannot read as HDF5 ({_first_line(exc)})") from None
        header.update(format="hdf5", key=key, n_frames_in_file=n)
    else:
        import fabio

        try:
            img = fabio.open(str(path))
            n = int(getattr(img, "nframes", 1) or 1)
            stop = n if max_frames is None else min(n, int(max_frames))
            frames = [np.asarray(img.data)] + [np.asarray(img.getframe(i).data) for i in range(1, stop)]
            frames = np.stack(frames)
            pilatus = getattr(img, "pilatus_headers", None) or _pilatus_header(
                _header_text(getattr(img, "header", {}) or {}))
            header.update(format=type(img).__name__, n_frames_in_file=n, count_cutoff=_count_cutoff(pilatus),
                          pilatus_geometry=_pilatus_geometry(pilatus))
        except Exception as exc:  # fabio raises many kinds on files it cannot parse
            raise InputError(f"{path}: cannot read as a detector image ({_first_line(exc)})") from None
    frames = np.asarray(frames)
    if frames.dtype.kind == "b":
        frames = frames.astype(np.uint8)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.size == 0 or frames.dtype.kind not in "iuf":
        raise InputError(f"{path}: frames of shape {frames.shape} and dtype {frames.dtype}; expected numeric 2-D frames")
    if flipud:
        frames = frames[:, ::-1, :]
    return np.ascontiguousarray(frames), header


def _header_text(header: dict[str, Any]) -> str:
    return "\n".join(f"{k} {v}" if "\n" not in str(v) else str(v) for k, v in header.items())


def _pilatus_header(text: str) -> Any:
    """fabio's parse of a Pilatus header (the ``# Key value`` lines of a CBF or TIFF), or
    None where the text is not one it can read."""
    from fabio.cbfimage import PilatusHeader

    fields: dict[str, Any] = {}
    for line in text.splitlines():
        try:
            parsed = PilatusHeader(line)
        except (ValueError, IndexError, TypeError):  # a line fabio cannot read: that line only
            continue
        fields.update({k: parsed[k] for k in PilatusHeader.KEYWORDS if k in parsed})
    return fields or None


def _count_cutoff(ph: Any) -> int | None:
    """``Count_cutoff`` of a Pilatus header (values above it are not counts)."""
    try:
        return int(ph["Count_cutoff"]) if ph is not None and "Count_cutoff" in ph else None
    except (TypeError, ValueError):
        return None


def _pilatus_geometry(ph: Any) -> dict[str, float] | None:
    """Wavelength (A), detector distance (m), beam centre (x, y px) and pixel size (m) from a
    Pilatus header; None when any is missing."""
    keys = ("Wavelength", "Detector_distance", "Beam_xy", "Pixel_size")
    if ph is None or not all(k in ph for k in keys):
        return None
    return {"wavelength_A": float(ph["Wavelength"]), "distance_m": float(ph["Detector_distance"]),
            "beam_x": float(ph["Beam_xy"][0]), "beam_y": float(ph["Beam_xy"][1]), "pixel_m": float(ph["Pixel_size"][0])}


def geometry_from_header(geometry: dict[str, float], shape: tuple[int, int]):
    """A pyFAI ``AzimuthalIntegrator`` from a Pilatus header's geometry (no detector tilt;
    the beam centre is the corner-based pixel coordinate the header gives)."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    px = geometry["pixel_m"]
    ai = AzimuthalIntegrator(detector=Detector(pixel1=px, pixel2=px, max_shape=tuple(shape)))
    ai.setFit2D(geometry["distance_m"] * 1e3, geometry["beam_x"], geometry["beam_y"], pixelX=px * 1e6, pixelY=px * 1e6)
    ai.wavelength = geometry["wavelength_A"] * 1e-10
    return ai


def sentinel_mask(frames: np.ndarray, *, count_cutoff: float | None = None) -> np.ndarray:
    """Pixels that are not measurements in any frame (True = masked), ``(rows, cols)``.

    Negative values (Pilatus -1 gaps / -2 bad pixels), the dtype's maximum on unsigned
    detectors (0xFFFFFFFF on an Eiger), NaN/inf, and values above ``count_cutoff``.
    """
    kind = frames.dtype.kind
    if kind == "i":
        bad = frames < 0
    elif kind == "u":
        bad = frames == np.iinfo(frames.dtype).max
    else:  # float frames may be dark-subtracted: negative values are measurements
        bad = ~np.isfinite(frames)
    if count_cutoff is not None:
        bad |= frames > count_cutoff
    return bad.any(axis=0)


def read_user_mask(path: Path, shape: tuple[int, int], *, key: str | None = None, flipud: bool = False) -> np.ndarray:
    """A user mask (non-zero = masked, pyFAI's convention) from ``.npy``, HDF5 or any fabio image."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            mask = np.load(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the mask ({_first_line(exc)})") from None
    else:
        mask = read_frames(path, key=key or "/mask", flipud=False, what="dataset.mask_key")[0][0]
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != tuple(shape):
        raise InputError(f"{path}: mask shape {mask.shape} does not match the frames' {tuple(shape)}")
    mask = mask != 0
    return mask[::-1] if flipud else mask


def load_geometry(path: Path, shape: tuple[int, int]):
    """A pyFAI ``AzimuthalIntegrator`` from a PONI file or a BioXTAS RAW ``.cfg`` settings file."""
    import pyFAI
    from pyFAI.detectors import Detector

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such geometry file (expected a pyFAI .poni or a BioXTAS RAW .cfg)")
    if path.suffix.lower() == ".cfg":
        try:
            cfg = json.loads(path.read_text())
            dist_mm = float(cfg["SampleDistance"])
            cx, cy = float(cfg["Xcenter"]), float(cfg["Ycenter"])
            px_um = float(cfg["DetectorPixelSizeX"]), float(cfg["DetectorPixelSizeY"])
            wavelength_A = float(cfg["WaveLength"])
            tilt, tilt_rot = float(cfg.get("DetectorTilt", 0.0)), float(cfg.get("DetectorTiltPlanRot", 0.0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a BioXTAS RAW settings file with SampleDistance, Xcenter, Ycenter, "
                             f"DetectorPixelSizeX/Y and WaveLength ({_first_line(exc)})") from None
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        det = Detector(pixel1=px_um[1] * 1e-6, pixel2=px_um[0] * 1e-6, max_shape=tuple(shape))
        if not (dist_mm > 0 and min(px_um) > 0 and wavelength_A > 0):
            raise InputError(f"{path}: SampleDistance, pixel sizes and WaveLength must be positive")
        ai = AzimuthalIntegrator(detector=det)
        try:
            ai.setFit2D(dist_mm, cx, cy, tilt=tilt, tiltPlanRotation=tilt_rot, pixelX=px_um[0], pixelY=px_um[1])
        except Exception as exc:  # pyFAI's conversion errors
            raise InputError(f"{path}: geometry not convertible ({_first_line(exc)})") from None
        ai.wavelength = wavelength_A * 1e-10
        return ai
    try:
        ai = pyFAI.load(str(path))
    except Exception as exc:  # pyFAI raises many kinds on a malformed file
        raise InputError(f"{path}: not a readable PONI file ({_first_line(exc)})") from None
    if ai.wavelength is None:
        raise InputError(f"{path}: the PONI file has no Wavelength; q and d-spacings need it")
    det = ai.detector
    if det.max_shape is None or tuple(det.max_shape) != tuple(shape):
        if det.max_shape is not None and tuple(det.max_shape) != tuple(shape):
            raise InputError(f"{path}: detector shape {tuple(det.max_shape)} does not match the frames' {tuple(shape)}")
        det.max_shape = tuple(shape)
        det.shape = tuple(shape)
    return ai


def check_option(name: str, value: Any, allowed: tuple) -> Any:
    if value not in allowed:
        raise ConfigError(f"azint {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


GEOMETRY_KEYS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "pixel1", "pixel2")


def expand_paths(spec: str) -> list[Path]:
    """A file, a folder (its files, sorted) or a glob pattern -> the frame files, sorted."""
    import glob

    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    else:
        return [path]
    if not files:
        raise InputError(f"{spec}: no frame files found (expected a file, a folder of frames or a glob pattern)")
    return files


def load_detector_frames(cfg: Mapping[str, Any], *, technique: str) -> dict[str, Any]:
    """Frames, geometry and mask described by a dataset config (shared by the diffraction
    techniques).

    Keys: ``path`` (a file, folder or glob: HDF5 or any fabio format), ``poni`` (PONI or RAW
    ``.cfg``; optional where a Pilatus header gives the geometry), ``key``, ``flipud``,
    ``max_frames``, ``mask_file`` / ``mask_key``, ``count_cutoff``.

    Returns
    -------
    dict
        ``frames`` (n, rows, cols), ``ai`` (pyFAI integrator), ``masked`` (rows, cols),
        ``geometry_vector`` (float64: geometry + shape, for the dataset checksum), ``meta``.
    """
    spec = str(cfg["path"])
    files = expand_paths(spec)
    poni = Path(str(cfg["poni"])).expanduser() if cfg.get("poni") else None
    if poni is None and files[0].suffix.lower() in HDF5_SUFFIXES:
        raise ConfigError(f"{technique} dataset {spec}: 'poni' is required (dataset.poni=<file.poni or RAW .cfg>)")
    max_frames = cfg.get("max_frames")
    if max_frames is not None and (not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 1):
        raise ConfigError(f"{technique} dataset {spec}: max_frames must be a positive integer or null, got {max_frames!r}")
    stacks, headers = [], []
    for file in files:
        left = None if max_frames is None else max_frames - sum(len(s) for s in stacks)
        if left is not None and left <= 0:
            break
        frames_i, header_i = read_frames(file, key=cfg.get("key"), flipud=bool(cfg.get("flipud", False)),
                                         max_frames=left)
        if stacks and (frames_i.shape[1:] != stacks[0].shape[1:] or frames_i.dtype != stacks[0].dtype):
            raise InputError(f"{file}: frames {frames_i.shape[1:]} {frames_i.dtype} differ from the first file's "
                             f"{stacks[0].shape[1:]} {stacks[0].dtype}")
        stacks.append(frames_i)
        headers.append(header_i)
    frames = stacks[0] if len(stacks) == 1 else np.concatenate(stacks)
    header = headers[0]
    shape = frames.shape[1:]
    if poni is not None:
        ai = load_geometry(poni, shape)
    elif header.get("pilatus_geometry"):  # a Pilatus CBF/TIFF header: wavelength, distance, beam centre
        ai = geometry_from_header(header["pilatus_geometry"], shape)
    else:
        raise ConfigError(f"{technique} dataset {spec}: 'poni' is required (dataset.poni=<file.poni or RAW .cfg>); "
                          f"the file's header has no geometry")
    cutoff = cfg.get("count_cutoff", None)
    if cutoff is None:
        cutoff = header.get("count_cutoff") or _hdf5_attr(files[0], cfg.get("key"), "count_cutoff")
    else:
        try:
            cutoff = float(cutoff)
        except (TypeError, ValueError):
            raise ConfigError(f"{technique} dataset {spec}: count_cutoff must be a number or null, got {cutoff!r}") from None
    masked = sentinel_mask(frames, count_cutoff=cutoff)
    n_sentinel = int(masked.sum())
    if cfg.get("mask_file"):
        masked |= read_user_mask(Path(str(cfg["mask_file"])).expanduser(), shape, key=cfg.get("mask_key"),
                                 flipud=bool(cfg.get("flipud", False)))
    if masked.all():
        raise InputError(f"{spec}: every pixel is masked (sentinels, count cut-off or mask file)")
    vec = np.array([float(getattr(ai, k)) for k in GEOMETRY_KEYS] + list(shape), dtype=np.float64)
    meta = {
        **{k: v for k, v in header.items() if k != "pilatus_geometry"},
        "geometry": ai.get_config(), "shape": list(frames.shape), "dtype": str(frames.dtype),
        "masked_pixels": int(masked.sum()), "sentinel_pixels": n_sentinel, "count_cutoff": cutoff,
        "poni": str(poni) if poni is not None else "from the file header", "files": len(stacks),
    }
    return {"frames": frames, "ai": ai, "masked": masked, "geometry_vector": vec, "meta": meta}


def _hdf5_attr(path: Path, key: str | None, attr: str) -> Any:
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return None
    import h5py

    with h5py.File(path, "r") as fh:
        ds = fh.get(key or DEFAULT_KEY)
        value = ds.attrs.get(attr) if ds is not None else None
    return value.item() if hasattr(value, "item") else value




def count_dispersion(ai: Any, frames: np.ndarray, masked: np.ndarray, *, npt: int = 200, max_frames: int = 2,
                     min_counts: float = 1.0) -> dict[str, Any]:
    """Do the counts behave like photons? The variance over the mean of each resolution shell
    (pyFAI's azimuthal sigma-clipped statistics, Bragg spots clipped away) is 1 for Poisson
    counts. Smooth azimuthal modulations (polarisation, texture, solid angle) add variance that
    grows as the mean squared, so the dispersion index is the median over the third of the
    shells with the fewest counts (at least ``min_counts`` per pixel), on up to ``max_frames``
    frames. Outside
    :data:`DISPERSION_RANGE` the data are scaled, summed, background-subtracted or otherwise
    not counts, and a Poisson re-measurement of them is no yardstick (``warning``)."""
    ratios = []
    for frame in frames[:max_frames]:
        res = ai.sigma_clip_ng(np.asarray(frame, np.float64), npt, unit="q_nm^-1", method=("no", "csr", "cython"),
                               error_model="azimuthal", mask=masked.astype(np.int8), thres=3.0, max_iter=5,
                               correctSolidAngle=False, polarization_factor=None)
        mean = np.asarray(res.intensity, np.float64)
        std = np.asarray(res.std if res.std is not None else res.sigma, np.float64)
        ok = np.isfinite(mean) & np.isfinite(std) & (mean >= min_counts)
        order = np.argsort(mean[ok])
        low = order[: max(10, order.size // 3)]
        ratios.append((std[ok] ** 2 / mean[ok])[low])
    r = np.concatenate(ratios) if ratios else np.zeros(0)
    if r.size == 0:
        return {"dispersion": None, "shells": 0, "note": f"no shell with >= {min_counts:g} counts per pixel"}
    d = float(np.median(r))
    out = {"dispersion": d, "shells": int(r.size), "range": list(DISPERSION_RANGE)}
    if not DISPERSION_RANGE[0] <= d <= DISPERSION_RANGE[1]:
        out["warning"] = (f"background variance / mean = {d:.3g} (photon counts: 1): the values do not behave like "
                          f"photon counts, so Poisson re-sampling is no yardstick for them (declare the data's gain "
                          f"or use technique.noise_reference.mode=off)")
    else:
        out["note"] = f"background variance / mean = {d:.3g} over {r.size} shells: photon counts"
    return out
