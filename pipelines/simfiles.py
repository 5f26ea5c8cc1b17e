"""Built-in simulated datasets on disk: written only at their own home, regenerated when their
parameters change, never written over a file that is someone's data."""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lossbound.core.errors import ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = ["FrameOverlay", "FramesModel", "check_home", "needs_writing", "resolve_params"]


def check_home(path: Path, cfg: Mapping[str, Any], *, hint: str) -> None:
    """Refuse a simulated dataset pointed at another path than its ``generate_at``: writing
    a simulation there would look as if the user's own data had been evaluated."""
    home = Path(str(cfg.get("generate_at") or path)).expanduser()
    if path.resolve() != home.resolve():
        raise InputError(f"{path}: dataset {cfg.get('name') or 'simulation'} is simulated at {home} only; "
                         f"to evaluate data of your own use {hint}")


def resolve_params(make: Callable[..., dict[str, Any]], simulation: Mapping[str, Any] | None, *,
                   technique: str, path: Path) -> dict[str, Any]:
    """``make(**simulation)`` (the complete parameters) with a one-line error for bad ones."""
    try:
        return make(**dict(simulation or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{technique} dataset {path}: bad simulation parameters: {exc}") from None


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def needs_writing(path: Path, params: Mapping[str, Any], read_attrs: Callable[[Path], Mapping[str, Any] | None], *,
                  technique: str) -> bool:
    """True when ``path`` is missing or holds a simulation with other parameters.

    Raises ``InputError`` when ``path`` exists but is not a LossBound simulation (no
    ``/simulation`` attributes): someone's data are never overwritten.
    """
    if not path.exists():
        log.info("%s: %s not found; simulating it", technique, path)
        return True
    try:
        stored = read_attrs(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read as HDF5 ({str(exc).splitlines()[0]})") from None
    if stored is None:
        raise InputError(
            f"{path}: exists but is not a LossBound simulation (no /simulation attributes); refusing to overwrite it")
    changed = sorted(k for k in set(params) | set(stored) if not _same_value(stored.get(k), params.get(k)))
    if changed:
        log.info("%s: %s was simulated with other parameters (%s); regenerating", technique, path, ", ".join(changed))
    return bool(changed)


def read_simulation_attrs(path: Path) -> dict[str, Any] | None:
    """The ``/simulation`` attributes of a simulated file (None: not a simulation). Read-only."""
    import h5py

    with h5py.File(path, "r") as fh:
        if "simulation" not in fh:
            return None
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in fh["simulation"].attrs.items()}


def write_frames(path: Path, poni: Path, frames: np.ndarray, ai, params: Mapping[str, Any], *,
                 count_cutoff: float, extra: Mapping[str, Any] | None = None) -> None:
    """Simulated detector frames as ``/entry/data/data`` (Bitshuffle-LZ4, one frame per chunk,
    ``count_cutoff`` attribute), the parameters as ``/simulation`` attributes, ``extra``
    datasets (path -> array or string), and the geometry as a PONI file; both files appear
    atomically (written aside, then renamed)."""
    import h5py
    import hdf5plugin

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with h5py.File(tmp, "w") as fh:
        ds = fh.create_dataset("/entry/data/data", data=frames, chunks=(1,) + frames.shape[1:],
                               **hdf5plugin.Bitshuffle(cname="lz4"))
        ds.attrs["count_cutoff"] = count_cutoff
        for key, value in (extra or {}).items():
            fh[key] = value
        sim = fh.create_group("simulation")
        for k, v in params.items():
            sim.attrs[k] = v
    ai.save(str(poni.with_suffix(".poni.tmp")))
    tmp.replace(path)
    poni.with_suffix(".poni.tmp").replace(poni)


def ensure_frames_simulation(cfg: Mapping[str, Any], *, technique: str, make_params: Callable[..., dict[str, Any]],
                             write: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The simulated frames of a diffraction dataset config (``path``, ``poni``,
    ``generate_at``, ``simulation``), (re)written by ``write(path, poni, **params)`` when
    missing or simulated with other parameters. The geometry goes beside the frames as
    ``<stem>.poni``; another ``poni`` path is refused (never write over a user's file)."""
    path = Path(str(cfg["path"])).expanduser()
    check_home(path, cfg, hint=f"dataset=file dataset.path={path}")
    poni = Path(str(cfg.get("poni") or path.with_suffix(".poni"))).expanduser()
    if poni.resolve() != path.with_suffix(".poni").resolve():
        raise InputError(f"{poni}: the simulation's geometry is written beside it, as {path.with_suffix('.poni')}")
    params = resolve_params(make_params, cfg["simulation"], technique=technique, path=path)
    if needs_writing(path, params, read_simulation_attrs, technique=technique) or not poni.exists():
        write(path, poni, **params)
        log.info("%s: wrote simulation %s and its geometry %s", technique, path, poni)
    return params


@dataclasses.dataclass(frozen=True)
class FrameOverlay:
    """What a simulated photon-counting detector writes besides photons: module gaps (-1),
    bad pixels (-2), a hot pixel above the count cut-off, and per frame the zingers (pixel
    positions and the counts they add)."""

    gaps: np.ndarray
    bad: np.ndarray
    hot: np.ndarray
    hot_value: int
    zingers: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """``frames`` (n, rows, cols) with the detector's defects, in place (in the order the
        simulation writes them)."""
        frames[:, self.gaps] = -1
        frames[:, self.bad[:, 0], self.bad[:, 1]] = -2
        frames[:, self.hot[0], self.hot[1]] = self.hot_value
        for i, (z, add) in enumerate(self.zingers[: len(frames)]):
            frames[i, z[:, 0], z[:, 1]] += add.astype(frames.dtype)
        return frames


@dataclasses.dataclass(frozen=True)
class FramesModel:
    """A simulated stack of count frames: the expected counts per pixel (``expected``, frames x
    rows x cols) and the detector's defects. :meth:`measured` is the noise-free measurement
    (float), :meth:`measure` one more independent measurement (Poisson counts, int32), both with
    the same defects, so two of them differ by counting noise only."""

    expected: np.ndarray
    overlay: FrameOverlay

    def measured(self) -> np.ndarray:
        return self.overlay.apply(np.array(self.expected, dtype=np.float64))

    def measure(self, rng: np.random.Generator) -> np.ndarray:
        return self.overlay.apply(rng.poisson(self.expected).astype(np.int32))


def frames_truth(data, model: FramesModel, *, note: str):
    """The :class:`~lossbound.pipelines.base.SimulationTruth` of a loaded frames dataset whose payload
    the simulation ``model`` wrote (None when the loader changed its shape, e.g. max_frames)."""
    from lossbound.pipelines.base import SimulationTruth

    if model.expected.shape != data.payload_array.shape:
        return None

    def measure(rng: np.random.Generator):
        return data.with_payload(model.measure(rng).astype(data.payload_array.dtype))

    return SimulationTruth(noise_free=data.with_payload(model.measured()), measure=measure, note=note)
