"""Built-in ptychography simulation (``sim_ptycho``): a known complex object scanned by a
focused, defocused probe on a Fermat spiral, far-field photon counts on a pixel detector.

- Object: a Siemens-star sector pattern and discs of several sizes in a weakly absorbing
  film (phase up to ~1 rad, amplitude 0.75-1, absorption following the phase), plus fine
  random texture, so the phase has structure down to two pixels.
- Probe: a zone plate's circular pupil with a central stop and defocus; its window is the
  detector's size; 90 % of its intensity lies within 61 object pixels, and the spiral's
  nearest-neighbour step is 8.4 pixels, so neighbouring positions overlap by ~86 % (>= 60 %).
- Counts: ``photons`` per pattern on average, Poisson; most photons fall in the bright-field
  disc, the high angles hold a few counts or none (as on an Eiger in ptychography).
- Detector: a beamstop (masked), a module gap (-1), dead pixels (-2) and a hot pixel above
  the count cut-off, written like :class:`lossbound.pipelines.simfiles.FrameOverlay`.

The file is CXI (``/entry_1/...``), read back like any user's CXI file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lossbound.pipelines.simfiles import FrameOverlay, FramesModel

DEFAULTS: dict[str, Any] = {
    "size": 64,            # detector pixels (square); also the probe window in object pixels
    "n_positions": 100,
    "step": 5.0,           # Fermat-spiral step (object pixels)
    "pupil_radius": 9.0,   # bright-field disc radius on the detector (pixels)
    "defocus": 14.0,       # quadratic pupil phase at the pupil's edge (rad)
    "photons": 2.0e5,      # mean photons per pattern
    "max_phase": 1.0,      # rad
    "seed": 0,
}
COUNT_CUTOFF = 1_000_000
HOT_VALUE = 2_000_000


def simulation_params(**overrides: Any) -> dict[str, Any]:
    """The complete parameters (defaults updated by ``overrides``; unknown keys refused)."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown simulation parameter(s) {', '.join(unknown)}; expected: {', '.join(DEFAULTS)}")
    params = {**DEFAULTS, **overrides}
    if int(params["size"]) < 32 or int(params["n_positions"]) < 9:
        raise ValueError("size must be >= 32 and n_positions >= 9")
    return params


def scan_positions(n: int, step: float) -> np.ndarray:
    """A Fermat spiral (row, col), shifted so the smallest coordinate is 0."""
    k = np.arange(n)
    r = step * np.sqrt(k)
    theta = k * np.pi * (3 - np.sqrt(5))
    pos = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    return pos - pos.min(axis=0)


def make_probe(size: int, pupil_radius: float, defocus: float) -> np.ndarray:
    """The probe in the object plane: the inverse FFT of a stopped, defocused circular pupil."""
    y, x = np.mgrid[:size, :size] - size / 2
    rho = np.hypot(y, x) / pupil_radius
    pupil = ((rho <= 1) & (rho >= 0.3)).astype(np.complex128) * np.exp(1j * defocus * rho**2)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil), norm="ortho"))
    return probe.astype(np.complex128)


def make_object(shape: tuple[int, int], *, max_phase: float, rng: np.random.Generator) -> np.ndarray:
    """A complex transmission function exp(i phase - absorption)."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx].astype(np.float64)
    cy, cx = ny / 2, nx / 2
    ang = np.arctan2(y - cy, x - cx)
    rad = np.hypot(y - cy, x - cx)
    phase = 0.6 * ((np.sin(18 * ang) > 0) & (rad < 0.42 * min(ny, nx)) & (rad > 4))
    for _ in range(14):
        r0 = rng.uniform(2.0, 9.0)
        py, px = rng.uniform(0, ny), rng.uniform(0, nx)
        phase += rng.uniform(0.15, 0.4) * (np.hypot(y - py, x - px) < r0)
    # fine texture (grain) down to the pixel scale, smoothed by one pixel
    from scipy.ndimage import gaussian_filter

    phase += 0.15 * gaussian_filter(rng.standard_normal(shape), 1.0) / 0.28
    phase = np.clip(phase, 0, None)
    phase *= max_phase / max(phase.max(), 1e-12)
    absorption = 0.25 * phase / max_phase
    return np.exp(1j * phase - absorption)


def detector_overlay(size: int, rng: np.random.Generator) -> tuple[FrameOverlay, np.ndarray]:
    """The detector's defects and the beamstop mask (True = blocked)."""
    gaps = np.zeros((size, size), bool)
    gaps[int(size * 0.7):int(size * 0.7) + 2, :] = True           # a horizontal module gap
    yy, xx = np.mgrid[:size, :size]
    beamstop = np.hypot(yy - size / 2, xx - size / 2) <= 1.5
    free = np.argwhere(~gaps & ~beamstop)
    pick = free[rng.choice(len(free), 4, replace=False)]
    return FrameOverlay(gaps=gaps, bad=pick[:3], hot=pick[3], hot_value=HOT_VALUE), beamstop


def simulation_model(**params: Any) -> tuple[FramesModel, dict[str, np.ndarray]]:
    """The expected counts with the detector's defects, and the truth (object, probe, positions)."""
    p = simulation_params(**params)
    rng = np.random.default_rng(int(p["seed"]))
    size = int(p["size"])
    pos = scan_positions(int(p["n_positions"]), float(p["step"]))
    corners = np.round(pos).astype(int) + 4
    shape = tuple(int(v) for v in corners.max(axis=0) + size + 4)
    obj = make_object(shape, max_phase=float(p["max_phase"]), rng=rng)
    probe = make_probe(size, float(p["pupil_radius"]), float(p["defocus"]))
    waves = np.stack([probe * obj[r:r + size, c:c + size] for r, c in corners])
    intensity = np.abs(np.fft.fftshift(np.fft.fft2(waves, norm="ortho"), axes=(-2, -1))) ** 2
    intensity *= float(p["photons"]) / intensity.sum(axis=(1, 2)).mean()
    overlay, beamstop = detector_overlay(size, rng)
    expected = intensity.copy()
    expected[:, beamstop] *= 1e-3            # the beamstop's transmission
    truth = {"object": obj.astype(np.complex64), "probe": (probe * np.sqrt(float(p["photons"]) /
             (np.abs(waves) ** 2).sum(axis=(1, 2)).mean())).astype(np.complex64),
             "positions": corners.astype(np.float64), "beamstop": beamstop}
    return FramesModel(expected=expected, overlay=overlay), truth


def write_simulation(path: Path, **params: Any) -> None:
    """Write the CXI file (atomically): Poisson counts (int32, Bitshuffle-LZ4, one pattern per
    chunk), positions in metres for the nominal 10 nm object pixel, the pixel mask (beamstop,
    gap, dead and hot pixels), the truth under ``/truth`` and the parameters under ``/simulation``."""
    import h5py
    import hdf5plugin

    from lossbound.pipelines.ptycho import io

    p = simulation_params(**params)
    model, truth = simulation_model(**p)
    counts = model.measure(np.random.default_rng(int(p["seed"]) + 1))
    ov = model.overlay
    mask = np.zeros(counts.shape[1:], np.uint32)
    mask[ov.gaps] |= 1
    mask[ov.bad[:, 0], ov.bad[:, 1]] |= 2
    mask[ov.hot[0], ov.hot[1]] |= 4
    mask[truth["beamstop"]] |= 8
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with h5py.File(tmp, "w") as fh:
        fh.attrs["cxi_version"] = 160
        e = fh.create_group("entry_1")
        det = e.create_group("instrument_1/detector_1")
        ds = det.create_dataset("data", data=counts, chunks=(1,) + counts.shape[1:], **hdf5plugin.Bitshuffle(cname="lz4"))
        ds.attrs["count_cutoff"] = COUNT_CUTOFF
        det["mask"] = mask
        geo = io.nominal_geometry(counts.shape[-1])
        det["distance"] = geo["distance"]
        det["x_pixel_size"] = geo["pixel_size"]
        det["y_pixel_size"] = geo["pixel_size"]
        e["instrument_1/source_1/energy"] = geo["energy_j"]
        e["data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        tr = np.zeros((len(truth["positions"]), 3))
        tr[:, 0] = truth["positions"][:, 1] * geo["object_pixel"]
        tr[:, 1] = truth["positions"][:, 0] * geo["object_pixel"]
        e["sample_1/geometry_1/translation"] = tr
        # the initial probe a user would start from: the optics' design, 10 % off in focus
        start = make_probe(counts.shape[-1], float(p["pupil_radius"]), 1.1 * float(p["defocus"]))
        e["instrument_1/source_1/probe"] = start.astype(np.complex64)
        t = fh.create_group("truth")
        for k in ("object", "probe", "positions"):
            t[k] = truth[k]
        sim = fh.create_group("simulation")
        for k, v in p.items():
            sim.attrs[k] = v
    tmp.replace(path)
