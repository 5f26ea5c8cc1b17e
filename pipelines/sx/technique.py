"""Serial crystallography on stills: spot finding, hit calls, indexing with the known cell,
and integration of the indexed reflections.

The payload is the stack of stills; geometry and detector mask stay exact. Per frame, the
background and its noise per resolution shell come from pyFAI's sigma-clipped azimuthal
statistics (one integrator per process and geometry, reused), and spots are found on 3x3 box
sums above background + k sigma (:mod:`lossbound.pipelines.sx.spots`). A frame with at least
``min_spots`` spots is a hit. Hits are indexed with the dataset's cell (rstbx DPS basis
search in the cctbx worker process, known-cell basis choice and least-squares refinement:
:mod:`lossbound.pipelines.sx.indexing`, :mod:`lossbound.diffraction.lattice`); the reflections the refined
orientation predicts on the Ewald sphere (within the excitation errors its own indexed spots
show) are integrated by summation over a small box. Each compressed frame gets its own
background model, spots, orientation and integration, exactly as the pipeline would run on
data read back from a compressed file.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from lossbound.diffraction import lattice
from lossbound.core.errors import ConfigError
from lossbound.core.gates import GateCheck
from lossbound.pipelines import TECHNIQUES, simfiles
from lossbound.pipelines import frames as fio
from lossbound.pipelines.base import Dataset, Result, Technique, dataset_name
from lossbound.pipelines.sx import gates as sx_gates
from lossbound.pipelines.sx import indexing
from lossbound.pipelines.sx import spots as sp

log = logging.getLogger(__name__)

_REFLECTION_FIELDS = ("frame", "hkl", "y", "x", "intensity", "sigma")

DEFAULT_CONFIG: dict[str, Any] = {
    "npt": 500,               # resolution shells of the background model
    "unit": "q_nm^-1",
    "clip_sigma": 3.0,        # sigma-clipping threshold of the shell statistics
    "clip_iterations": 5,
    "k_sigma": 5.0,           # spot threshold on the 3x3 box sum, in units of its noise
    "min_pixels": 2,          # smallest spot (pixels above threshold)
    "min_spots": 20,          # a frame with at least this many spots is a hit
    "index": True,            # index hits with the dataset's cell (needs cctbx-base)
    "index_tolerance_px": 3.0,     # a spot is indexed within this distance of its prediction
    "index_min_fraction": 0.25,    # ... and a frame when this fraction of its spots is (random: 3-6 %)
    "index_cell_tolerance": 0.05,  # ... and its refined cell is this close to the known one
    "integration_half_box": 2,     # reflections integrated over a (2 h + 1)^2 pixel box
    "excitation_quantile": 0.95,   # predict reflections within this quantile of the indexed spots' excitation errors
    "refine_geometry": True,       # refine beam centre, distance and cell once from every indexed raw still
    "refine_cell_per_still": False,  # per still: orientation only, with the dataset's (refined) cell
}


@TECHNIQUES.register("sx")
class SxTechnique(Technique):
    """Spot finding and hit calls on every still.

    Parameters
    ----------
    config : mapping
        ``npt``, ``unit``, ``clip_sigma``, ``clip_iterations``, ``k_sigma``, ``min_pixels``,
        ``min_spots`` (see ``conf/technique/sx.yaml``).
    """

    name = "sx"

    def __init__(self, config: Mapping[str, Any]) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:
            raise ConfigError(f"sx pipeline: unknown option(s) {', '.join(unknown)}; expected: {', '.join(DEFAULT_CONFIG)}")
        merged = {**DEFAULT_CONFIG, **config}
        for key in ("clip_sigma", "k_sigma", "index_tolerance_px", "index_min_fraction", "index_cell_tolerance",
                    "excitation_quantile"):
            if not isinstance(merged[key], (int, float)) or isinstance(merged[key], bool) or merged[key] <= 0:
                raise ConfigError(f"sx {key} must be a positive number, got {merged[key]!r}")
        for key in ("index", "refine_geometry", "refine_cell_per_still"):
            if not isinstance(merged[key], bool):
                raise ConfigError(f"sx {key} must be true or false, got {merged[key]!r}")
        for key in ("index_min_fraction", "excitation_quantile"):
            if merged[key] > 1:
                raise ConfigError(f"sx {key} is a fraction in (0, 1], got {merged[key]!r}")
        for key in ("npt", "clip_iterations", "min_pixels", "min_spots", "integration_half_box"):
            if not isinstance(merged[key], int) or isinstance(merged[key], bool) or merged[key] < 1:
                raise ConfigError(f"sx {key} must be a positive integer, got {merged[key]!r}")
        super().__init__(merged)

    def load(self, dataset_config: Mapping[str, Any]) -> Dataset:
        """Stills of ``dataset_config``: ``path`` (a file, folder or glob; any fabio format or
        HDF5), ``poni`` (optional where the CBF header gives the geometry), ``cell``
        ([a, b, c, alpha, beta, gamma]), ``space_group``, plus the keys of
        :func:`lossbound.pipelines.frames.load_detector_frames`; ``simulation`` + ``generate_at`` for
        the built-in stills."""
        cfg = dict(dataset_config)
        if not cfg.get("path"):
            raise ConfigError("sx dataset: 'path' is required (a file, folder or glob of stills)")
        path = Path(str(cfg["path"])).expanduser()
        sim = None
        if cfg.get("simulation") is not None:
            from lossbound.pipelines.sx.simulate import simulation_params, write_simulation

            sim = simfiles.ensure_frames_simulation(cfg, technique="sx", make_params=simulation_params,
                                                    write=write_simulation)
            cfg["poni"] = cfg.get("poni") or str(path.with_suffix(".poni"))
        loaded = fio.load_detector_frames(cfg, technique="sx")
        cell = cfg.get("cell")
        if cell is not None:
            try:
                cell = [float(v) for v in cell]
            except (TypeError, ValueError):
                cell = None
            if cell is None or len(cell) != 6 or min(cell) <= 0 or max(cell[3:]) >= 180:
                raise ConfigError(f"sx dataset {path}: cell must be [a, b, c, alpha, beta, gamma] "
                                  f"(lengths > 0, angles in (0, 180)), got {cfg.get('cell')!r}")
        meta = {**loaded["meta"], "cell": cell, "space_group": cfg.get("space_group"), "simulated": sim is not None}
        if sim is not None:
            meta["simulation"] = sim
            meta["ground_truth"] = {"spots": "/truth/spots", "orientations": "/truth/orientations"}
        name, meta["name_given"] = dataset_name(cfg, path)
        frames = loaded["frames"]
        log.info("sx: loaded %s %s %s from %s (%d files, %d masked pixels), geometry %s", name, frames.shape,
                 frames.dtype, path, meta["files"], meta["masked_pixels"], meta["poni"])
        return Dataset(name=name, arrays={"frames": frames, "geometry": loaded["geometry_vector"]}, payload="frames",
                       source=str(path), meta=meta, mask=~loaded["masked"])

    # ---------------------------------------------------------------------------------------

    def integrator(self, data: Dataset, geometry: Mapping[str, Any] | None = None):
        """The AzimuthalIntegrator of ``geometry`` (default: the dataset's), built once per
        process and geometry."""
        return fio.integrator_for(geometry or data.geometry, data.payload_array.shape[1:])

    def run(self, data: Dataset, prepared: Mapping[str, Any]) -> Result:
        """Spots, indexing and reflections (:meth:`find`) with the geometry and cell
        :meth:`prepare` refined."""
        return self.find(data, geometry=prepared.get("geometry"), cell=prepared.get("cell"),
                         refine_cell=self._per_still_cell(prepared))

    def _per_still_cell(self, prepared: Mapping[str, Any]) -> bool:
        """Each still refines its own cell unless the dataset's cell was refined (and the
        configuration does not ask for both)."""
        return bool(self.config["refine_cell_per_still"] or "cell" not in prepared)

    def find(self, data: Dataset, *, in_flight: int = 1, geometry: Mapping[str, Any] | None = None,
             cell: Any = None, refine_cell: bool | None = None) -> Result:
        """Every frame's spots as concatenated arrays (``spot_frame``, ``spot_y``, ``spot_x``,
        ``spot_intensity``, ``spot_sigma``, ``spot_peak``, ``spot_pixels``, ``spot_indexed``),
        ``n_spots`` and ``hit`` per frame; with indexing, per frame ``indexed``,
        ``indexed_fraction``, ``rmsd_px``, ``basis`` (direct cell vectors as rows, Å, pyFAI's
        lab frame), ``orientation_covariance`` (rad², from the refinement) and ``cell``, and
        the integrated reflections ``refl_frame``, ``refl_hkl``, ``refl_y``, ``refl_x``,
        ``refl_intensity``, ``refl_sigma``. Up to ``in_flight`` hits are indexed at once, each
        in a cctbx worker process (the process's own, and for more, workers of this call only);
        the result is the same for any value. ``geometry`` and ``cell`` replace the dataset's
        (the refined ones); ``refine_cell`` says whether each still refines its own cell
        (default: only without a refined ``cell``)."""
        refine = (cell is None or self.config["refine_cell_per_still"]) if refine_cell is None else refine_cell
        cell = self._indexing_cell(data) if cell is None or not self.config["index"] else list(cell)
        indexers = [indexing.indexer(), *(indexing.Indexer() for _ in range(in_flight - 1))] if cell is not None else []
        try:
            return self._find(data, cell, indexers, geometry=geometry, refine_cell=refine)
        finally:
            for extra in indexers[1:]:
                extra.close()

    def _find(self, data: Dataset, cell: list[float] | None, indexers: list[indexing.Indexer], *,
              geometry: Mapping[str, Any] | None, refine_cell: bool) -> Result:
        cfg = self.config
        ai = self.integrator(data, geometry)
        shape = data.payload_array.shape[1:]
        masked = ~data.mask if data.mask is not None else np.zeros(shape, bool)
        plane = indexing.detector_plane(ai) if cell is not None else None
        rows: dict[str, list[np.ndarray]] = {f: [] for f in (*sp.SPOT_FIELDS, "frame", "indexed")}
        refl: dict[str, list[np.ndarray]] = {f: [] for f in _REFLECTION_FIELDS}
        n = data.payload_array.shape[0]
        frame_out = {"n_spots": np.zeros(n, np.int64), "indexed": np.zeros(n, bool),
                     "indexed_fraction": np.full(n, np.nan), "rmsd_px": np.full(n, np.nan),
                     "basis": np.full((n, 3, 3), np.nan), "cell": np.full((n, 6), np.nan),
                     "orientation_covariance": np.full((n, 3, 3), np.nan)}
        options = {"tolerance_px": cfg["index_tolerance_px"], "min_fraction": cfg["index_min_fraction"],
                   "cell_tolerance": cfg["index_cell_tolerance"], "min_spots": cfg["min_spots"],
                   "refine_cell": bool(refine_cell)}

        # Hits are indexed in the cctbx worker processes while this one finds the next frames'
        # spots. Frames are finished (rows, reflections) in frame order: a frame waits for the
        # hits before it. Entries: (frame index, frame, background, spots, reply or None).
        pending: collections.deque[tuple[int, Any, Any, dict[str, np.ndarray], Any]] = collections.deque()
        busy: dict[int, concurrent.futures.Future] = {}  # indexer -> its reply in flight

        def finish() -> None:
            i, frame, bg, spots, reply = pending.popleft()
            indexed = np.zeros(spots["y"].size, bool) if reply is None else self._use_indexing(
                i, frame, bg, masked, spots, reply.result(), plane, frame_out, refl)
            for f in sp.SPOT_FIELDS:
                rows[f].append(spots[f])
            rows["frame"].append(np.full(spots["y"].size, i, np.int32))
            rows["indexed"].append(indexed)

        frames = tqdm(data.payload_array, desc=f"sx: {data.name}", unit="frame", leave=False,
                      disable=None if self.progress else True)
        for i, frame in enumerate(frames):
            bg, sigma = sp.background_model(ai, frame, masked, npt=cfg["npt"], unit=cfg["unit"],
                                            thres=float(cfg["clip_sigma"]), max_iter=cfg["clip_iterations"])
            spots = sp.find_spots(frame, bg, sigma, masked, k=float(cfg["k_sigma"]), min_pixels=cfg["min_pixels"])
            frame_out["n_spots"][i] = spots["y"].size
            if indexers and spots["y"].size >= cfg["min_spots"]:
                while all(k in busy and not busy[k].done() for k in range(len(indexers))):
                    finish()  # every indexer busy: the oldest frame first
                k = next(k for k in range(len(indexers)) if k not in busy or busy[k].done())
                busy[k] = indexers[k].submit(spots["y"], spots["x"], cell=cell, plane=plane, options=options)
                pending.append((i, frame, bg, spots, busy[k]))
            else:
                pending.append((i, None, None, spots, None))
            while pending and (pending[0][4] is None or pending[0][4].done()):
                finish()
        while pending:
            finish()
        out = {f"spot_{f}": np.concatenate(v) for f, v in rows.items()}
        out.update(frame_out)
        out["hit"] = sp.hits(out["n_spots"], min_spots=cfg["min_spots"])
        for f, v in refl.items():
            out[f"refl_{f}"] = np.concatenate(v) if v else np.zeros((0, 3) if f == "hkl" else 0,
                                                                    np.int32 if f in ("frame", "hkl") else np.float64)
        return out

    def _indexing_cell(self, data: Dataset) -> list[float] | None:
        """The cell to index with, or None when indexing is off or the dataset has no cell."""
        if not self.config["index"]:
            return None
        cell = data.meta.get("cell")
        if cell is None:
            log.info("sx: %s has no cell (dataset.cell): hits are not indexed", data.name)
            return None
        if not indexing.cctbx_available():
            raise ConfigError("sx indexing needs cctbx-base (pip install 'lossbound[sx]'), "
                              "or set technique.pipeline.index=false")
        return list(cell)

    def _use_indexing(self, i: int, frame: np.ndarray, bg: np.ndarray, masked: np.ndarray,
                      spots: Mapping[str, np.ndarray], r: Mapping[str, Any], plane: lattice.DetectorPlane,
                      frame_out: dict[str, np.ndarray], refl: dict[str, list[np.ndarray]]) -> np.ndarray:
        """Record frame ``i``'s indexing reply ``r`` and integrate its predicted reflections;
        returns which spots are indexed."""
        cfg = self.config
        frame_out["indexed_fraction"][i] = r["fraction"]
        if not r["indexed"]:
            log.debug("sx: frame %d not indexed: %s", i, r["reason"])
            return np.zeros(spots["y"].size, bool)
        near = np.asarray(r["distance_px"]) < cfg["index_tolerance_px"]
        frame_out["indexed"][i] = True
        frame_out["rmsd_px"][i] = r["rmsd_px"]
        frame_out["basis"][i] = r["basis"]
        frame_out["cell"][i] = r["cell"]
        frame_out["orientation_covariance"][i] = r["orientation_covariance"]
        eps = np.abs(lattice.excitation_errors(r["basis"], np.asarray(r["hkl"])[near], plane))
        pred = lattice.predict_reflections(r["basis"], plane, frame.shape,
                                           max_excitation=float(np.quantile(eps, cfg["excitation_quantile"])),
                                           edge=cfg["integration_half_box"] + 1)
        intensity, sigma, ok = sp.integrate_boxes(frame, bg, masked, pred["y"], pred["x"],
                                                  half=cfg["integration_half_box"])
        refl["frame"].append(np.full(int(ok.sum()), i, np.int32))
        refl["hkl"].append(pred["hkl"][ok])
        refl["y"].append(pred["y"][ok])
        refl["x"].append(pred["x"][ok])
        refl["intensity"].append(intensity[ok])
        refl["sigma"].append(sigma[ok])
        return near

    def prepare(self, raw: Dataset) -> dict[str, Any]:
        """See :meth:`raw_result`."""
        return self.raw_result(raw)[0]

    def report_extras(self, prepared: Mapping[str, Any]) -> dict[str, Any]:
        return {"reduction": prepared["reduction"]} if "reduction" in prepared else {}

    def raw_result(self, raw: Dataset) -> tuple[dict[str, Any], Result]:
        """The raw result (found while the geometry is refined) and the raw pipeline's own figures, logged on the study run as ``raw_*``: hit rate,
        spots per hit, indexed rate (indexed frames / hits), mean indexed fraction of spots,
        mean positional RMSD, reflections per indexed frame; on the simulation, the true spots
        and orientations it recovers. ``reduction``: what triage (keeping hits only) gains.

        With indexing and ``refine_geometry``: a first pass indexes every hit with the
        header's geometry (each still refining its own cell), then the beam centre, the
        detector distance and the cell are refined once from every indexed raw still together
        (:func:`lossbound.diffraction.lattice.refine_detector`); ``geometry`` and ``cell`` (the
        refined ones) are what the raw and every compressed run then use, each still refining
        its orientation only. ``geometry_refinement``: RMSD before and after, the shifts, the
        refined cell against the known one."""
        cell = self._indexing_cell(raw)
        out: dict[str, Any] = {}
        first = None
        if cell is not None and self.config["refine_geometry"]:
            first = self.find(raw, in_flight=self.processes, refine_cell=True)
            refined = self._refine_geometry(raw, first, cell)
            if refined is not None:
                out.update(refined)
        result = self.find(raw, in_flight=self.processes, geometry=out.get("geometry"), cell=out.get("cell"),
                           refine_cell=self._per_still_cell(out))
        if first is not None and "cell" in out and int(result["indexed"].sum()) < int(first["indexed"].sum()):
            # too few stills to pin the cell (distance and cell scale are nearly degenerate for
            # stills): a refinement that loses stills is not used
            log.warning("sx: %s: the refined geometry indexes %d stills, the header's %d: the header's geometry "
                        "is kept, each still refining its own cell", raw.name, int(result["indexed"].sum()),
                        int(first["indexed"].sum()))
            out = {"geometry_refinement": {**out["geometry_refinement"], "used": False,
                                           "why_not": f"indexed {int(result['indexed'].sum())} stills against the "
                                                      f"header geometry's {int(first['indexed'].sum())}"}}
            result = first
        if "geometry_refinement" in out and out["geometry_refinement"].get("used", True):
            idx = result["indexed"]
            out["geometry_refinement"]["rmsd_after_px"] = float(np.mean(result["rmsd_px"][idx])) if idx.any() else None
            log.info("sx: %s geometry refined: beam centre moved by (%.2f, %.2f) px, distance by %.3f mm; mean RMSD "
                     "%.2f -> %.2f px; cell %s (known %s)", raw.name, *out["geometry_refinement"]["beam_shift_px"],
                     out["geometry_refinement"]["distance_shift_mm"], out["geometry_refinement"]["rmsd_before_px"],
                     out["geometry_refinement"]["rmsd_after_px"] or float("nan"),
                     [round(v, 3) for v in out["cell"][:3]], cell[:3])
        n, hit, indexed = result["n_spots"], result["hit"], result["indexed"]
        figures: dict[str, Any] = {
            "hit_rate": float(hit.mean()), "mean_spots_per_hit": float(n[hit].mean()) if hit.any() else 0.0}
        if cell is not None:
            figures.update({
                "indexed_rate": float(indexed[hit].mean()) if hit.any() else 0.0,
                "mean_indexed_fraction": float(np.mean(result["indexed_fraction"][indexed])) if indexed.any() else 0.0,
                "mean_rmsd_px": float(np.mean(result["rmsd_px"][indexed])) if indexed.any() else float("nan"),
                "reflections_per_indexed_frame": float(result["refl_frame"].size / max(int(indexed.sum()), 1)),
                # the orientation's own standard error (largest axis), what misorientation_max_sigma divides by
                "median_orientation_sigma_deg": _median_sigma_deg(result["orientation_covariance"][indexed]),
            })
        truth = _truth(raw)
        if truth is not None:
            figures.update(_truth_figures(result, truth, hit, out.get("cell", cell)))
        log.info("sx: raw pipeline on %s: hit rate %.2f, %.0f spots per hit%s%s", raw.name, figures["hit_rate"],
                 figures["mean_spots_per_hit"],
                 f", {int(indexed.sum())} of {int(hit.sum())} hits indexed ({figures['mean_indexed_fraction']:.0%} of "
                 f"their spots, RMSD {figures['mean_rmsd_px']:.2f} px)" if "indexed_rate" in figures else "",
                 f", recovers {figures['true_spot_recall']:.0%} of the true spots above 100 counts and "
                 f"{figures.get('true_orientation_recovered', 0):.0%} of the true orientations"
                 if "true_spot_recall" in figures else "")
        frames = int(n.size)
        kept = int(hit.sum())
        return {"raw": figures, **out, "reduction": {
            "triage_frames": frames, "triage_frames_kept": kept,
            # frames are equal in size, so keeping hits only divides the volume by this
            "triage_ratio": float(frames / kept) if kept else float("inf")}}, result

    def _refine_geometry(self, raw: Dataset, first: Result, cell: list[float]) -> dict[str, Any] | None:
        """Beam centre, distance and cell from the first pass's indexed stills (None when
        fewer than 20 spots are indexed)."""
        ai = self.integrator(raw)
        plane = indexing.detector_plane(ai)
        stills = []
        for f in np.flatnonzero(first["indexed"]):
            sel = (first["spot_frame"] == f) & first["spot_indexed"].astype(bool)
            if sel.sum() >= 6:
                stills.append((first["spot_y"][sel], first["spot_x"][sel], first["basis"][f]))
        if sum(len(y) for y, _, _ in stills) < 20:
            log.warning("sx: %s: too few indexed spots to refine the geometry; the header's is used", raw.name)
            return None
        fit = lattice.refine_detector(stills, cell, plane, tolerance_px=float(self.config["index_tolerance_px"]))
        d_slow, d_fast, d_normal = fit["shift_mm"]
        geometry = dict(raw.geometry)
        geometry["poni1"] = float(geometry["poni1"]) + d_slow * 1e-3
        geometry["poni2"] = float(geometry["poni2"]) + d_fast * 1e-3
        geometry["dist"] = float(geometry["dist"]) + d_normal * 1e-3
        check = indexing.detector_plane(fio.integrator_for(geometry, raw.payload_array.shape[1:], cache=False))
        off = float(np.max(np.abs(np.subtract(check.origin, fit["plane"].origin))))
        if off > 1e-6:  # mm: the pyFAI geometry must be the refined plane
            log.warning("sx: refined geometry differs from the refined plane by %.3g mm", off)
        known = np.asarray(cell, float)
        refined = np.asarray(fit["cell"], float)
        return {"geometry": geometry, "cell": [float(v) for v in refined], "geometry_refinement": {
            "rmsd_before_px": fit["rmsd_before_px"], "rmsd_refined_px": fit["rmsd_after_px"],
            "spots": fit["spots"], "stills": len(stills),
            "beam_shift_px": [-d_slow / (float(ai.pixel1) * 1e3), -d_fast / (float(ai.pixel2) * 1e3)],
            "distance_shift_mm": d_normal,
            "cell_deviation_from_known": float(np.max(np.abs(refined[:3] / known[:3] - 1)))}}

    def data_key(self, data: Dataset) -> dict[str, Any]:
        """The cell and space group the hits are indexed with (not in the frames' content)."""
        return {k: data.meta[k] for k in ("cell", "space_group") if data.meta.get(k) is not None}

    gate_defaults = sx_gates.DEFAULTS

    def gates(self, data: Dataset, prepared: Mapping[str, Any], result: Result,
              settings: Mapping[str, Mapping[str, Any]], *, references: Mapping[str, Any]) -> list[GateCheck]:
        """Indexing rate and RMSD of the raw run, and the beam-centre shift the geometry
        refinement found (:mod:`lossbound.pipelines.sx.gates`)."""
        valid = data.mask if data.mask is not None else np.ones(data.payload_array.shape[1:], bool)
        return sx_gates.checks(prepared, settings, frames=data.payload_array, valid=valid,
                               ai=self.integrator(data))  # the header's geometry: is it off?

    def describe(self) -> dict[str, Any]:
        # version: the result's content (not only the config) changed; cached raw results
        # and journal points of an older version are not reused
        return {**super().describe(), "result_version": 3}

    def noise_checks(self, data: Dataset) -> dict[str, Any]:
        """Whether the counts behave like photons (:func:`lossbound.pipelines.frames.count_dispersion`)."""
        masked = ~data.mask if data.mask is not None else np.zeros(data.payload_array.shape[1:], bool)
        return fio.count_dispersion(self.integrator(data), data.payload_array, masked)

    def simulation_truth(self, data: Dataset):
        sim = data.meta.get("simulation")
        if sim is None:
            return None
        from lossbound.pipelines.sx.simulate import simulation_model

        return simfiles.frames_truth(data, simulation_model(**sim), note="Poisson counts of the same expected "
                                     "stills (same crystals and orientations); gaps, bad and hot pixels as measured")

    def preview(self, result: Result) -> dict[str, Any]:
        """Spots of the first hit frame (or frame 0)."""
        hits = np.flatnonzero(result["hit"])
        f = int(hits[0]) if hits.size else 0
        sel = result["spot_frame"] == f
        return {"frame": f, "y": np.asarray(result["spot_y"][sel]), "x": np.asarray(result["spot_x"][sel]),
                "intensity": np.asarray(result["spot_intensity"][sel]), "n_spots": np.asarray(result["n_spots"])}

    def figure(self, raw: Mapping[str, Any], compressed: Mapping[str, Any], *, title: str = ""):
        """Spot positions of one frame: raw (circles) and compressed (crosses), whole detector."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 7.5))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.scatter(raw["x"], raw["y"], s=18, facecolors="none", edgecolors="k", linewidths=0.6,
                   label=f"raw ({raw['x'].size})")
        ax.scatter(compressed["x"], compressed["y"], s=10, marker="x", color="tab:red", linewidths=0.6,
                   label=f"compressed ({compressed['x'].size})")
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_xlabel("column (px)")
        ax.set_ylabel("row (px)")
        ax.legend(loc="upper right")
        fig.suptitle(f"{title}  (frame {raw['frame']})")
        return fig


def _median_sigma_deg(covariances: np.ndarray) -> float:
    """Median over frames of the largest standard error (degrees) of the refined orientation."""
    sig = [np.degrees(np.sqrt(np.linalg.eigvalsh(c).max())) for c in covariances if np.isfinite(c).all()]
    return float(np.median(sig)) if sig else float("nan")


def _truth(raw: Dataset) -> dict[str, np.ndarray] | None:
    if "ground_truth" not in raw.meta:
        return None
    import h5py

    with h5py.File(raw.source, "r") as fh:
        return {"spots": fh["/truth/spots"][()], "orientations": fh["/truth/orientations"][()]}


def _truth_figures(result: Result, truth: Mapping[str, np.ndarray], hit: np.ndarray,
                   cell: Any) -> dict[str, float]:
    """Recall of the true spots with >= 100 counts (within 1.5 px), hit-call accuracy and,
    with indexing, the fraction of true crystals indexed within 0.1 degree of the true
    orientation and the largest misorientation (up to lattice symmetry)."""
    from scipy.spatial import cKDTree

    spots = truth["spots"]
    true_hit = ~np.isnan(truth["orientations"][:, 0, 0])
    found = total = 0
    for f in np.flatnonzero(true_hit):
        t = spots[(spots[:, 0] == f) & (spots[:, 6] >= 100)]
        sel = result["spot_frame"] == f
        if not t.size:
            continue
        total += len(t)
        if sel.any():
            d, _ = cKDTree(np.column_stack([result["spot_y"][sel], result["spot_x"][sel]])).query(t[:, 1:3])
            found += int((d <= 1.5).sum())
    out = {"true_spot_recall": found / total if total else float("nan"),
           "hit_accuracy": float(np.mean(hit == true_hit))}
    if cell is not None and true_hit.any():  # cell: None when indexing is off
        ops = lattice.symmetry_ops(cell)
        angles = []
        for f in np.flatnonzero(true_hit):
            if not result["indexed"][f]:
                angles.append(np.inf)
                continue
            true_basis = np.diag(np.asarray(cell[:3], float)) @ truth["orientations"][f].T  # orthogonal cells
            angles.append(lattice.misorientation_deg(result["basis"][f], true_basis, ops)[0])
        angles_arr = np.asarray(angles)
        out["true_orientation_recovered"] = float(np.mean(angles_arr <= 0.1))
        finite = angles_arr[np.isfinite(angles_arr)]
        out["true_misorientation_max_deg"] = float(finite.max()) if finite.size else float("nan")
    return out
