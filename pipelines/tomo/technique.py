"""Parallel-beam absorption tomography: flat/dark correction, -log and filtered back-projection.

The payload is the stack of projections; flats, darks and angles are kept exact.  The rotation
centre is fixed once on the raw data (``prepare``) so that compressed runs differ from the raw
run only through the projections.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import ConfigError, NotApplicable
from lossbound.core.gates import GateCheck
from lossbound.core.noise import is_counts, poisson_resample
from lossbound.pipelines import TECHNIQUES, simfiles
from lossbound.pipelines.base import Dataset, Result, Technique, dataset_name
from lossbound.pipelines.tomo import gates as tomo_gates
from lossbound.pipelines.tomo import io as tomo_io
from lossbound.pipelines.tomo import recon
from lossbound.pipelines.tomo.defects import find_defective_pixels, interpolate_pixels, remove_zingers
from lossbound.pipelines.tomo.gain import photon_transfer

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "backend": "auto",
    "filter_name": "hann",
    "center": None,
    "rows": {"start": 0, "stop": None, "step": 1},
    "max_rows": None,
    "halves": True,
    "min_transmission": 1e-3,
    "tomopy_algorithm": "gridrec",
    # defective pixels (dead, saturated, hot, non-finite): found on the raw scan, interpolated
    "defects": {"enabled": True, "dead_fraction": 0.1, "hot_sigma": 20.0},
    # single-frame spikes above the median of neighbouring frames by this many sigmas; null = off
    "zinger_sigma": 8.0,
    # algotom ring (stripe) removal on each sinogram: null (off) or 'sorting'
    "ring_removal": None,
}


@TECHNIQUES.register("tomo")
class TomoTechnique(Technique):
    """Tomographic reconstruction of selected detector rows.

    Parameters
    ----------
    config : mapping
        ``backend`` ('auto' | 'algotom' | 'skimage' | 'tomopy'), ``filter_name`` ('hann', ...),
        ``center`` (detector column of the rotation axis; None = found on the raw data),
        ``rows`` ({start, stop, step} of the detector rows to reconstruct), ``max_rows`` (None
        or the most rows to keep: the selection's step is multiplied until it fits), ``halves``
        (also reconstruct even- and odd-index angles, for half-set FRC), ``min_transmission``
        and ``tomopy_algorithm`` ('gridrec' | 'fbp').
    """

    name = "tomo"

    def __init__(self, config: Mapping[str, Any]) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:  # a typo (e.g. 'centre') must not silently run with defaults
            raise ConfigError(
                f"tomo pipeline: unknown option(s) {', '.join(unknown)}; expected: {', '.join(DEFAULT_CONFIG)}"
            )
        rows = {**DEFAULT_CONFIG["rows"], **dict(config.get("rows") or {})}
        defects = {**DEFAULT_CONFIG["defects"], **dict(config.get("defects") or {})}
        merged = {**DEFAULT_CONFIG, **config, "rows": rows, "defects": defects}
        if merged["center"] in ("auto", "none", "None"):
            merged["center"] = None
        super().__init__(merged)
        self.backend = recon.resolve_backend(str(merged["backend"]))
        recon.check_filter(self.backend, merged["filter_name"])  # fail at construction, not mid-sweep
        for key in ("start", "step"):
            if not isinstance(rows[key], int) or isinstance(rows[key], bool):
                raise ConfigError(f"tomo rows.{key} must be an integer, got {rows[key]!r}")
        if rows["step"] < 1:
            raise ConfigError(f"tomo rows.step must be >= 1, got {rows['step']}")
        if rows["stop"] is not None and not isinstance(rows["stop"], int):
            raise ConfigError(f"tomo rows.stop must be an integer or null, got {rows['stop']!r}")
        max_rows = merged["max_rows"]
        if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1):
            raise ConfigError(f"tomo max_rows must be a positive integer or null, got {max_rows!r}")
        if not 0.0 < float(merged["min_transmission"]) < 1.0:
            raise ConfigError(f"tomo min_transmission must be in (0, 1), got {merged['min_transmission']!r}")
        if unknown := sorted(set(defects) - set(DEFAULT_CONFIG["defects"])):
            raise ConfigError(f"tomo defects: unknown option(s) {', '.join(unknown)}; "
                              f"expected: {', '.join(DEFAULT_CONFIG['defects'])}")
        z = merged["zinger_sigma"]
        if z is not None and not (isinstance(z, (int, float)) and not isinstance(z, bool) and z > 0):
            raise ConfigError(f"tomo zinger_sigma must be a positive number or null, got {z!r}")
        if merged["ring_removal"] not in (None, "sorting"):
            raise ConfigError(f"tomo ring_removal must be null or 'sorting', got {merged['ring_removal']!r}")

    # ---------------------------------------------------------------------------------------
    # Data
    # ---------------------------------------------------------------------------------------

    def load(self, dataset_config: Mapping[str, Any]) -> Dataset:
        """Read the scan at ``path`` (generating the simulation there first if requested).

        ``dataset_config`` keys: ``name``, ``format`` ('dataexchange' | 'nxtomo' | 'auto'),
        ``path``, ``adu_per_photon`` (the camera's gain; null: measured from the flats'
        photon transfer, :func:`lossbound.pipelines.tomo.gain.photon_transfer`), ``angle_unit`` (null: the
        angle dataset's ``units`` attribute, degrees without one; or deg | rad) and, for the built-in simulation,
        ``simulation`` (keyword arguments of :func:`lossbound.pipelines.tomo.simulate.simulate_tomo`): the file
        is (re)generated when missing or written with other parameters.
        """
        cfg = dict(dataset_config)
        if not cfg.get("path"):
            raise ConfigError("tomo dataset: 'path' is required (the HDF5 scan file)")
        path = Path(str(cfg["path"])).expanduser()
        fmt = str(cfg.get("format") or "auto").lower()
        declared = cfg.get("adu_per_photon")
        if declared is not None:
            try:
                declared = float(declared)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"tomo dataset {path}: adu_per_photon must be a number or null, got {cfg.get('adu_per_photon')!r}"
                ) from None
            if not declared > 0:
                raise ConfigError(f"tomo dataset {path}: adu_per_photon must be > 0, got {declared}")
        simulation = cfg.get("simulation")
        sim_params = None
        if simulation is not None:
            if fmt not in ("auto", "dataexchange"):
                raise ConfigError(
                    f"tomo dataset {path}: a simulation is written as dataexchange, not {fmt!r}"
                )
            simfiles.check_home(path, cfg, hint=f"dataset=file dataset.path={path}")
            sim_params = ensure_simulation(path, simulation)
        angle_unit = cfg.get("angle_unit")
        if angle_unit is not None and angle_unit not in tomo_io.ANGLE_UNITS:
            raise ConfigError(f"tomo dataset {path}: angle_unit must be null (the file's units attribute), deg or "
                              f"rad, got {angle_unit!r}")
        arrays, fmt = tomo_io.read_scan(path, fmt=fmt, angle_unit=angle_unit)
        theta = arrays["theta"]
        measured = photon_transfer(arrays["flats"], arrays["darks"])
        adu = declared if declared is not None else measured.get("gain")
        gain_note = _gain_note(declared, measured)
        meta: dict[str, Any] = {
            "format": fmt,
            "adu_per_photon": adu,  # the gain used: the declared one, else the flats' photon transfer, else None
            "adu_per_photon_declared": declared,
            "adu_per_photon_measured": measured,
            "gain_note": gain_note,
            "shape": list(arrays["projections"].shape),
            "dtype": str(arrays["projections"].dtype),
            "n_flats": int(arrays["flats"].shape[0]),
            "n_darks": int(arrays["darks"].shape[0]),
            "angular_range_deg": float(theta.max() - theta.min()) if theta.size else 0.0,
            "angle_unit": angle_unit,
            "simulated": sim_params is not None,
        }
        if sim_params is not None:
            meta["simulation"] = sim_params
        truth = tomo_io.read_ground_truth(path, arrays=False)
        if truth is not None:
            meta["ground_truth"] = {"mu": "/phantom/mu", "labels": "/phantom/labels", **truth}
            meta["ground_truth"]["materials"] = {str(k): v for k, v in truth.get("materials", {}).items()}
        name, meta["name_given"] = dataset_name(cfg, path)
        log.info("tomo: loaded %s (%s, %s %s) from %s", name, fmt, meta["shape"], meta["dtype"], path)
        (log.warning if "disagree" in gain_note else log.info)("tomo: %s: %s", name, gain_note)
        # Pixels a detector wrote as NaN/Inf are not measurements: the payload's valid-pixel
        # mask leaves them out of the projection metrics (the pipeline interpolates them).
        mask = None
        proj = arrays["projections"]
        if proj.dtype.kind == "f" and not np.isfinite(proj).all():
            mask = np.isfinite(proj).all(axis=0)
            meta["non_finite_pixels"] = int((~mask).sum())
        return Dataset(name=name, arrays=arrays, payload="projections", source=str(path), meta=meta, mask=mask)

    # ---------------------------------------------------------------------------------------
    # Pipeline
    # ---------------------------------------------------------------------------------------

    def _rows(self, n_rows: int) -> slice:
        """The selected detector rows, evenly thinned to at most ``max_rows``."""
        r = self.config["rows"]
        sel = slice(r["start"], r["stop"], r["step"])
        selected = range(*sel.indices(n_rows))
        if len(selected) == 0:
            raise ConfigError(f"tomo rows {r} select no row of the {n_rows} detector rows")
        max_rows = self.config["max_rows"]
        if max_rows is not None and len(selected) > max_rows:
            thin = math.ceil(len(selected) / max_rows)
            sel = slice(selected.start, selected.stop, selected.step * thin)
        return sel

    def _sinograms(self, data: Dataset, rows: slice, defect_map: np.ndarray | None) -> tuple[np.ndarray, int]:
        """(n_selected_rows, n_angles, n_cols) line integrals of the selected rows, with
        zingers removed and the defective pixels of ``defect_map`` interpolated before -log;
        also returns the number of zinger pixels replaced."""
        a = data.arrays
        counts = np.array(a["projections"][:, rows, :], dtype=np.float32)
        darks = a["darks"][:, rows, :]
        zingers = 0
        if self.config["zinger_sigma"] is not None:
            offset = np.mean(darks, axis=0, dtype=np.float64).astype(np.float32)
            zingers = remove_zingers(counts, threshold_sigma=float(self.config["zinger_sigma"]),
                                     gain=float(data.meta.get("adu_per_photon") or 1.0), offset=offset)
        with np.errstate(invalid="ignore"):
            trans = recon.flat_dark_correct(counts, a["flats"][:, rows, :], darks,
                                            min_transmission=float(self.config["min_transmission"]))
        if defect_map is not None:
            interpolate_pixels(trans, defect_map[rows])
        sinos = np.ascontiguousarray(np.moveaxis(recon.minus_log(trans), 1, 0))
        if self.config["ring_removal"] == "sorting":
            from algotom.prep.removal import remove_stripe_based_sorting

            sinos = np.stack([remove_stripe_based_sorting(s, size=21) for s in sinos]).astype(np.float32)
        return sinos, zingers

    def defect_map(self, data: Dataset, prepared: Mapping[str, Any]) -> np.ndarray | None:
        """The (rows, cols) map of defective pixels found on the raw scan (None: none/off)."""
        pixels = prepared.get("defective_pixels") or []
        if not pixels:
            return None
        out = np.zeros(data.payload_array.shape[1:], bool)
        rr, cc = np.asarray(pixels, dtype=np.intp).T
        out[rr, cc] = True
        return out

    def _find_defects(self, raw: Dataset) -> dict[str, Any]:
        cfg = self.config["defects"]
        if not cfg["enabled"]:
            return {"defective_pixels": [], "defect_counts": {}}
        a = raw.arrays
        maps = find_defective_pixels(a["projections"], a["flats"], a["darks"],
                                     dead_fraction=float(cfg["dead_fraction"]), hot_sigma=float(cfg["hot_sigma"]))
        counts = {k: int(v.sum()) for k, v in maps.items() if k != "all"}
        pixels = np.argwhere(maps["all"]).tolist()
        if pixels:
            log.info("tomo: %d defective pixel(s) in %s (%s), interpolated from row neighbours in every run",
                     len(pixels), raw.name, ", ".join(f"{k} {n}" for k, n in counts.items() if n))
        return {"defective_pixels": pixels, "defect_counts": counts}

    def prepare(self, raw: Dataset) -> dict[str, Any]:
        """``center`` (the configured one, or Vo's estimate on the middle selected row),
        ``defective_pixels`` ([row, col] pairs), ``defect_counts`` (by kind) and
        ``zingers`` (pixels replaced in the raw run's selected rows)."""
        defects = self._find_defects(raw)
        rows = self._rows(raw.payload_array.shape[1])
        _, zingers = self._sinograms(raw, rows, self.defect_map(raw, defects)) \
            if self.config["zinger_sigma"] is not None else (None, 0)
        if zingers:
            log.info("tomo: %d zinger pixel(s) replaced in %s's selected rows", zingers, raw.name)
        defects["zingers"] = zingers
        if self.config["center"] is not None:
            center = float(self.config["center"])
            n_cols = raw.payload_array.shape[-1]
            if not 0.0 <= center <= n_cols - 1:
                raise ConfigError(f"tomo center {center} is outside the detector's columns [0, {n_cols - 1}]")
            return {"center": center, **defects}
        n_rows = raw.payload_array.shape[1]
        selected = range(*rows.indices(n_rows))
        middle = selected[len(selected) // 2]
        sino = self._sinograms(raw, slice(middle, middle + 1), self.defect_map(raw, defects))[0][0]
        center = recon.find_center(sino, raw.arrays["theta"])
        log.info("tomo: rotation centre of %s found at column %.2f (row %d)", raw.name, center, middle)
        return {"center": center, **defects}

    def run(self, data: Dataset, prepared: Mapping[str, Any]) -> Result:
        """``recon`` (and ``recon_even``/``recon_odd`` with halves): (n_rows_selected, N, N) float32."""
        center = float(prepared["center"])
        rows = self._rows(data.payload_array.shape[1])
        sinos, _ = self._sinograms(data, rows, self.defect_map(data, prepared))
        theta = np.deg2rad(np.asarray(data.arrays["theta"], dtype=np.float64))
        opts = dict(
            center=center,
            backend=self.backend,
            filter_name=self.config["filter_name"],
            tomopy_algorithm=self.config["tomopy_algorithm"],
        )
        out = {"recon": recon.reconstruct(sinos, theta, **opts)}
        if self.config["halves"]:
            out["recon_even"] = recon.reconstruct(sinos[:, 0::2], theta[0::2], **opts)
            out["recon_odd"] = recon.reconstruct(sinos[:, 1::2], theta[1::2], **opts)
        return out

    gate_defaults = tomo_gates.DEFAULTS

    def gates(self, data: Dataset, prepared: Mapping[str, Any], result: Result,
              settings: Mapping[str, Mapping[str, Any]], *, references: Mapping[str, Any]) -> list[GateCheck]:
        """The angles' span, the rotation centre against the entropy centre of the middle
        selected row, and the raw half-set FRC (:mod:`lossbound.pipelines.tomo.gates`)."""
        out: list[GateCheck] = []
        theta = np.asarray(data.arrays["theta"], dtype=np.float64)
        s = settings["angle_unit"]
        if s["action"] != "off":
            out.append(tomo_gates.angle_check(theta, min_span=float(s["min_span_deg"]),
                                              max_span=float(s["max_span_deg"]), unit=data.meta.get("angle_unit")))
        s = settings["rotation_centre"]
        if s["action"] != "off":
            rows = self._rows(data.payload_array.shape[1])
            selected = range(*rows.indices(data.payload_array.shape[1]))
            middle = selected[len(selected) // 2]
            sino = self._sinograms(data, slice(middle, middle + 1), self.defect_map(data, prepared))[0][0]
            theta_rad = np.deg2rad(theta)
            used = float(prepared["center"])
            configured = self.config["center"] is not None
            vo = recon.find_center(sino, theta) if configured else used
            n_cols = sino.shape[-1]

            def reconstruct(c: float) -> np.ndarray:
                c = min(max(c, 0.0), n_cols - 1.0)
                return recon.reconstruct(sino, theta_rad, center=c, backend=self.backend,
                                         filter_name=self.config["filter_name"],
                                         tomopy_algorithm=self.config["tomopy_algorithm"])

            entropy, figures = tomo_gates.centre_by_entropy(reconstruct, vo)
            out.append(tomo_gates.centre_check(used, vo, entropy, figures, configured=configured,
                                               max_px=float(s["max_px"])))
        s = settings["half_set_frc"]
        if s["action"] != "off":
            out.append(tomo_gates.frc_check(references.get("frc"), max_resolution_px=float(s["max_resolution_px"])))
        return out

    def noise_model(self, data: Dataset) -> str:
        """Projections are ADU over the dark level: ``dark + g * Poisson((x - dark) / g)`` with the
        camera's gain g — the declared ``dataset.adu_per_photon``, else the one the flats'
        photon transfer measures (float data included, e.g. the tooth's 4-pixel means). No gain
        (one flat and nothing declared) means no model: a guess of g would set the yardstick."""
        g = data.meta.get("adu_per_photon")
        if g is None:
            why = (data.meta.get("adu_per_photon_measured") or {}).get("reason", "no gain measured")
            raise NotApplicable(f"{data.name}: no gain for the projections ({why}) and the dataset declares none "
                                f"(set dataset.adu_per_photon=<ADU per photon>)")
        source = "declared (dataset.adu_per_photon)" if data.meta.get("adu_per_photon_declared") is not None \
            else "measured by the flats' photon transfer"
        return (f"dark + g*Poisson((projections - dark)/g), g = {g:.4g} ADU/photon {source}, "
                f"dark = mean of {data.meta.get('n_darks', '?')} darks")

    def noise_checks(self, data: Dataset) -> dict[str, Any]:
        """The gain declared and the gain the flats' photon transfer measures (and whether
        they disagree by more than 20 %)."""
        measured = data.meta.get("adu_per_photon_measured") or {}
        return {"gain_used": data.meta.get("adu_per_photon"), "gain_declared": data.meta.get("adu_per_photon_declared"),
                "gain_measured": measured.get("gain"), "gain_measured_se": measured.get("gain_se"),
                "note": data.meta.get("gain_note", "")}

    def data_key(self, data: Dataset) -> dict[str, Any]:
        # the gain sets the zinger threshold: a result computed with another gain is another result
        return {"adu_per_photon": data.meta.get("adu_per_photon")}

    def resample(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        self.noise_model(data)
        dark = np.mean(data.arrays["darks"], axis=0, dtype=np.float64)
        return data.with_payload(poisson_resample(data.payload_array, rng, valid=data.mask, offset=dark,
                                                  adu_per_photon=float(data.meta["adu_per_photon"])))

    def simulation_truth(self, data: Dataset):
        sim = data.meta.get("simulation")
        if sim is None:
            return None
        from lossbound.pipelines.base import SimulationTruth
        from lossbound.pipelines.tomo.simulate import simulation_model

        model = simulation_model(**{k: v for k, v in sim.items() if k != "version"})
        if tuple(model.transmission.shape) != data.payload_array.shape:
            return None

        def dataset(arrays: Mapping[str, np.ndarray]) -> Dataset:
            return dataclasses.replace(data, arrays={**data.arrays, **arrays})

        return SimulationTruth(noise_free=dataset(model.expected()), measure=lambda rng: dataset(model.measure(rng)),
                               note="another scan of the same sample: Poisson photons, flux jitter and read noise "
                                    "in the projections; exact flats and darks; the camera's defects and the "
                                    "scan's zingers as measured")

    def preview(self, result: Result) -> dict[str, Any]:
        """The middle reconstructed slice and its index."""
        recon = np.asarray(result["recon"])
        k = recon.shape[0] // 2
        return {"slice": k, "recon": np.array(recon[k])}

    def figure(self, raw: Mapping[str, Any], compressed: Mapping[str, Any], *, title: str = ""):
        """Middle reconstructed slice: raw | compressed | compressed - raw, with colorbars."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        a = np.asarray(raw["recon"])
        b = np.asarray(compressed["recon"])
        k = raw["slice"]
        diff = b - a
        finite = np.isfinite(a)
        lo, hi = np.percentile(a[finite], [0.5, 99.5]) if finite.any() else (0.0, 1.0)
        dfin = np.abs(diff[np.isfinite(diff)])
        dlim = float(np.percentile(dfin, 99.9)) if dfin.size else 0.0
        dlim = dlim if dlim > 0 else max(float(dfin.max()) if dfin.size else 0.0, 1e-12)
        fig = Figure(figsize=(13.5, 4.6))  # fixed margins: constrained layout costs more than drawing
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        panels = [
            (a, "raw", "gray", lo, hi),
            (b, "compressed", "gray", lo, hi),
            (diff, "compressed - raw", "RdBu_r", -dlim, dlim),
        ]
        for ax, (img, label, cmap, vmin, vmax) in zip(axes, panels):
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(label)
            ax.set_axis_off()
            fig.colorbar(im, ax=ax, shrink=0.85, label="attenuation (1/pixel)")
        rmse = float(np.sqrt(np.nanmean(diff**2)))
        fig.suptitle(f"{title}  (slice {k}, RMSE {rmse:.3g} /px)".strip())
        fig.subplots_adjust(left=0.01, right=0.97, bottom=0.03, top=0.88, wspace=0.12)
        return fig

    def describe(self) -> dict[str, Any]:
        """Configuration plus the resolved backend and its library version."""
        return {
            "technique": self.name,
            **self.config,
            "backend_resolved": self.backend,
            "backend_version": recon.backend_version(self.backend),
        }


def _gain_note(declared: float | None, measured: Mapping[str, Any]) -> str:
    """One line on the gain used and how the flats' photon transfer agrees with it."""
    g = measured.get("gain")
    if declared is None and g is None:
        return f"no gain: {measured.get('reason')}; the noise reference is off (fixed tolerances)"
    if declared is None:
        return f"gain {g:.3g} ADU/photon from the flats' photon transfer (+- {measured.get('gain_se', math.nan):.2g})"
    if g is None:
        return f"gain {declared:g} ADU/photon declared; the flats cannot check it ({measured.get('reason')})"
    if abs(declared / g - 1) > 0.2:
        return (f"declared gain {declared:g} ADU/photon and the flats' photon transfer ({g:.3g}) disagree by "
                f"{abs(declared / g - 1):.0%}: the declared one is used")
    return f"gain {declared:g} ADU/photon declared, {g:.3g} by the flats' photon transfer"


def ensure_simulation(path: Path, simulation: Mapping[str, Any]) -> dict[str, Any]:
    """Make sure ``path`` holds the simulation with these parameters; (re)generate it if not.

    A file without ``/simulation`` attributes is someone's data and is never overwritten.

    Returns
    -------
    dict
        The complete simulation parameters.
    """
    from lossbound.pipelines.tomo.simulate import read_simulation_attrs, simulate_tomo, simulation_params, write_dataexchange

    params = simfiles.resolve_params(simulation_params, simulation, technique="tomo", path=path)
    if simfiles.needs_writing(path, params, read_simulation_attrs, technique="tomo"):
        arrays = simulate_tomo(**{k: v for k, v in params.items() if k != "version"})
        write_dataexchange(path, arrays, attrs=params)
        log.info("tomo: wrote simulation %s", path)
    return params
