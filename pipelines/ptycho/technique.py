"""Ptychography (``ptycho``): far-field diffraction patterns at overlapping scan positions,
reconstructed to a complex object and a probe by CDTools on the CPU.

The payload is the stack of patterns (photon counts, what an Eiger or Jungfrau writes); the
positions, the initial probe and the pixel mask are kept exact. Every run (raw, compressed,
re-sampled) starts from the same probe and object guesses with the same seed, thread count
and iteration count, so the raw patterns reconstructed twice give the same object bit for
bit, and any difference comes from the data.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import ConfigError, InputError
from lossbound.core.gates import GateCheck
from lossbound.pipelines import TECHNIQUES, simfiles
from lossbound.pipelines.base import Dataset, Result, SimulationTruth, Technique, dataset_name
from lossbound.pipelines.ptycho import engine, gates, io

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "iterations": 30,      # Adam epochs (fixed: every run does the same work)
    "batch_size": 20,      # patterns per mini-batch
    "lr": 0.01,            # Adam's step
    "seed": 0,             # mini-batch order
    "padding": 8,          # object pixels around the scanned field
    "initial_probe": "file",  # file (the scan's probe when it has one, else estimated) | estimate
    # then these stages: [iterations, lr factor, batch size]; full-batch epochs at a tenth of the
    # step settle the mini-batch optimiser (simulation: loss 0.303 -> 0.261, late change 0.1 % -> 0)
    "stages": [[30, 0.1, 100]],
    # a thousandth of a photon added to the raw patterns (uniform, fixed seed): the raw result
    # carries this reconstruction too, so the evaluator measures how far a change far below
    # counting noise moves the object (the reconstruction's numerical floor)
    "stability_dither": 1.0e-3,
}


@TECHNIQUES.register("ptycho")
class PtychoTechnique(Technique):
    """Ptychographic reconstruction of every scan (:func:`lossbound.pipelines.ptycho.engine.reconstruct`).

    Parameters
    ----------
    config : mapping
        ``iterations``, ``batch_size``, ``lr``, ``seed``, ``padding``, ``initial_probe``
        ('file' | 'estimate').
    """

    name = "ptycho"

    def __init__(self, config: Mapping[str, Any]) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:
            raise ConfigError(f"ptycho pipeline: unknown option(s) {', '.join(unknown)}; "
                              f"expected: {', '.join(DEFAULT_CONFIG)}")
        merged = {**DEFAULT_CONFIG, **config}
        for key in ("iterations", "batch_size"):
            v = merged[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"ptycho pipeline: {key} must be a positive integer, got {v!r}")
        if not (isinstance(merged["lr"], (int, float)) and 0 < merged["lr"] <= 1):
            raise ConfigError(f"ptycho pipeline: lr must be in (0, 1], got {merged['lr']!r}")
        stages = merged["stages"]
        try:
            ok = isinstance(stages, (list, tuple)) and all(
                isinstance(x, (list, tuple)) and len(x) == 3 and int(x[0]) >= 1 and 0 < float(x[1]) <= 1
                and int(x[2]) >= 1 for x in stages)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"ptycho pipeline: stages must be a list of [iterations, lr factor in (0, 1], batch size], "
                              f"got {stages!r}")
        merged["stages"] = [[int(a), float(b), int(c)] for a, b, c in stages]
        dither = merged["stability_dither"]
        if dither is not None and not (isinstance(dither, (int, float)) and 0 < dither < 0.5):
            raise ConfigError(f"ptycho pipeline: stability_dither must be null or in (0, 0.5) counts, got {dither!r}")
        if merged["initial_probe"] not in ("file", "estimate"):
            raise ConfigError(f"ptycho pipeline: initial_probe must be file or estimate, got {merged['initial_probe']!r}")
        super().__init__(merged)

    # ---------------------------------------------------------------------------------------
    # Data
    # ---------------------------------------------------------------------------------------

    def load(self, dataset_config: Mapping[str, Any]) -> Dataset:
        """The scan of ``dataset_config``.

        Keys: ``path`` (CXI/HDF5 or npz, :mod:`lossbound.pipelines.ptycho.io`), ``max_positions``
        (the positions nearest the scan's centre; null = all), ``fftshift`` (auto | true |
        false), ``count_cutoff``, and for the built-in simulation ``simulation`` + ``generate_at``.
        """
        cfg = dict(dataset_config)
        if not cfg.get("path"):
            raise ConfigError("ptycho dataset: 'path' is required (the scan: CXI/HDF5 or npz)")
        # dataset=file carries every technique's keys, unset (null, false or auto): only a set one
        # is refused
        unknown = sorted(k for k, v in cfg.items() if v not in (None, False, "auto") and k not in {
            "path", "name", "max_positions", "fftshift", "count_cutoff", "simulation", "generate_at", "group", "notes"})
        if unknown:
            raise ConfigError(f"ptycho dataset: unknown key(s) {', '.join(unknown)}; expected path, name, "
                              f"max_positions, fftshift, count_cutoff (simulation, generate_at for sim_ptycho)")
        mp = cfg.get("max_positions")
        if mp is not None and (not isinstance(mp, int) or isinstance(mp, bool) or mp < 9):
            raise ConfigError(f"ptycho dataset: max_positions must be null or an integer >= 9, got {mp!r}")
        path = Path(str(cfg["path"])).expanduser()
        sim = None
        if cfg.get("simulation") is not None:
            sim = _ensure_simulation(path, cfg)
        scan = io.load_scan(path, cfg)
        arrays: dict[str, np.ndarray] = {"patterns": scan["patterns"], "positions": scan["positions"]}
        if scan["probe"] is not None:
            arrays["probe_init"] = np.asarray(scan["probe"], np.complex64)
        name, name_given = dataset_name(cfg, path)
        meta: dict[str, Any] = {"layout": scan["layout"], "geometry_cxi": scan["geometry"], "fftshift": scan["fftshift"],
                                "positions_used": scan["positions_used"], "positions_in_file": scan["positions_in_file"],
                                "simulated": sim is not None, "name_given": name_given,
                                "shape": list(scan["patterns"].shape), "dtype": str(scan["patterns"].dtype)}
        if sim is not None:
            meta["simulation"] = sim
            arrays.update(_truth_arrays(path, scan))
        log.info("ptycho: loaded %s: %d of %d patterns %s %s from %s (%d masked pixels)", name, scan["positions_used"],
                 scan["positions_in_file"], scan["patterns"].shape[1:], scan["patterns"].dtype, path,
                 int((~scan["valid"]).sum()))
        return Dataset(name=name, arrays=arrays, payload="patterns", source=str(path), meta=meta, mask=scan["valid"])

    # ---------------------------------------------------------------------------------------
    # Pipeline
    # ---------------------------------------------------------------------------------------

    def run(self, data: Dataset, prepared: Mapping[str, Any]) -> Result:
        """``object_phase``, ``object_amplitude``, ``illumination`` (the scanned field, object
        pixels), ``probe`` (complex), ``loss`` (per iteration), ``fit_to_noise`` (the final
        data fit in units of counting noise) and ``origin`` (scan coordinates of pixel 0, 0)."""
        why = engine.available()
        if why:
            raise ConfigError(why)
        cfg = self.config
        probe = data.arrays.get("probe_init") if cfg["initial_probe"] == "file" else None
        valid = data.mask if data.mask is not None else np.ones(data.payload_array.shape[1:], bool)
        patterns = data.payload_array
        rec = engine.reconstruct(patterns, valid, data.arrays["positions"], probe=probe, iterations=cfg["iterations"],
                                 batch_size=cfg["batch_size"], lr=float(cfg["lr"]), seed=cfg["seed"],
                                 padding=cfg["padding"], model_patterns=True, stages=tuple(tuple(x) for x in cfg["stages"]))
        fit = engine.data_fit(patterns, rec.model_patterns, valid, seed=cfg["seed"])
        return {"object_phase": np.angle(rec.obj).astype(np.float32), "object_amplitude": np.abs(rec.obj).astype(np.float32),
                "illumination": rec.illumination, "probe": rec.probe, "loss": rec.loss.astype(np.float64),
                "fit_to_noise": np.array([fit["fit_to_noise"]]), "origin": np.array(rec.origin, np.int64)}

    def raw_result(self, raw: Dataset) -> tuple[dict[str, Any], Result]:
        """The raw reconstruction, plus (``stability_*``) that of the raw patterns with
        ``stability_dither`` counts of uniform noise added to the valid pixels."""
        result = self.run(raw, {})
        dither = self.config["stability_dither"]
        if dither:
            rng = np.random.default_rng(self.config["seed"])
            valid = raw.mask if raw.mask is not None else np.ones(raw.payload_array.shape[1:], bool)
            noise = np.where(valid, rng.uniform(-dither, dither, raw.payload_array.shape), 0.0)
            shaken = self.run(raw.with_payload(raw.payload_array + noise), {})
            result.update(stability_phase=shaken["object_phase"], stability_amplitude=shaken["object_amplitude"])
        return {}, result

    gate_defaults = gates.DEFAULTS

    def gates(self, data: Dataset, prepared: Mapping[str, Any], result: Result,
              settings: Mapping[str, Mapping[str, Any]], *, references: Mapping[str, Any]) -> list[GateCheck]:
        """Does the reconstruction explain the patterns, has it converged, and how far does a
        change far below counting noise move it (:mod:`lossbound.pipelines.ptycho.gates`)."""
        return gates.checks(result, settings, floor=references.get("ptycho", {}).get("floor"))

    def describe(self) -> dict[str, Any]:
        out = {"technique": self.name, **self.config, "engine": "cdtools FancyPtycho (Adam), CPU, 1 thread"}
        try:
            import cdtools
            import torch

            out["versions"] = {"cdtools": str(getattr(cdtools, "__version__", "?")), "torch": str(torch.__version__)}
        except ImportError:
            pass
        return out

    def simulation_truth(self, data: Dataset) -> SimulationTruth | None:
        sim = data.meta.get("simulation")
        if sim is None:
            return None
        from lossbound.pipelines.ptycho.simulate import simulation_model

        model, _ = simulation_model(**sim)
        return simfiles.frames_truth(data, model, note="Poisson counts of the same expected patterns; beamstop, gap, "
                                     "dead and hot pixels as measured")

    def preview(self, result: Result) -> dict[str, Any]:
        """The object's phase and the illuminated field."""
        return {"phase": np.asarray(result["object_phase"]), "illumination": np.asarray(result["illumination"])}

    def figure(self, raw: Mapping[str, Any], compressed: Mapping[str, Any], *, title: str = ""):
        """The object's phase, raw | compressed | compressed - raw (global phase removed), over
        the well-illuminated field."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        a, b = np.asarray(raw["phase"]), np.asarray(compressed["phase"])
        ill = np.asarray(raw["illumination"])
        field = ill > 0.3 * ill.max()
        diff = np.angle(np.exp(1j * (b - a)))
        diff = diff - np.median(diff[field])
        a, b, diff = (np.where(field, x, np.nan) for x in (a, b, diff))
        lo, hi = np.nanpercentile(a, [0.5, 99.5])
        dlim = max(float(np.nanpercentile(np.abs(diff), 99.5)), 1e-6)
        fig = Figure(figsize=(13.5, 4.6))
        FigureCanvasAgg(fig)
        for ax, (img, label, cmap, vmin, vmax) in zip(fig.subplots(1, 3), [
                (a, "raw phase (rad)", "gray", lo, hi), (b, "compressed phase", "gray", lo, hi),
                (diff, "compressed - raw", "RdBu_r", -dlim, dlim)]):
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(label)
            ax.set_axis_off()
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        fig.suptitle(title)
        fig.subplots_adjust(left=0.02, right=0.96, bottom=0.03, top=0.88, wspace=0.15)
        return fig


def _ensure_simulation(path: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Write the simulation at its home when missing or simulated with other parameters."""
    from lossbound.pipelines.ptycho.simulate import simulation_params, write_simulation

    simfiles.check_home(path, cfg, hint=f"dataset=file technique=ptycho dataset.path={path}")
    params = simfiles.resolve_params(simulation_params, cfg["simulation"], technique="ptycho", path=path)
    if simfiles.needs_writing(path, params, simfiles.read_simulation_attrs, technique="ptycho"):
        write_simulation(path, **params)
        log.info("ptycho: wrote simulation %s", path)
    return params


def _truth_arrays(path: Path, scan: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The simulated object and where the loaded scan's origin lies on it (kept exact)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            obj = fh["truth/object"][()]
            pos = fh["truth/positions"][()]
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: simulated scan without its /truth ({exc})") from None
    if len(pos) != scan["positions_in_file"]:
        raise InputError(f"{path}: /truth/positions has {len(pos)} entries for {scan['positions_in_file']} patterns")
    return {"truth_object": obj.astype(np.complex64),
            "truth_offset": pos[scan["indices"]].min(axis=0).astype(np.float64)}
