"""Azimuthal integration (powder diffraction, SAXS/WAXS) with pyFAI.

The payload is the stack of detector frames; the geometry (PONI) and the detector mask are
kept exact. One ``AzimuthalIntegrator`` is built per process and geometry and reused for the
raw and every compressed frame (pyFAI keeps its CSR matrix for the same shape, mask, unit
and bins), so a point costs one sparse matrix-vector product per frame.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import ConfigError
from lossbound.core.gates import GateCheck
from lossbound.pipelines import TECHNIQUES, simfiles
from lossbound.pipelines import frames as fio
from lossbound.pipelines.azint import gates
from lossbound.pipelines.base import Dataset, Result, Technique, dataset_name

log = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "npt": 1000,                   # radial bins of the 1-D profile
    "unit": "q_nm^-1",             # or 2th_deg, q_A^-1, r_mm
    "method": ["bbox", "csr", "cython"],  # pixel splitting, engine, implementation
    "polarization_factor": 0.99,   # null = no polarisation correction
    "correct_solid_angle": True,
    "error_model": "poisson",      # sigma per bin from the counts
    "cake": {"enabled": False, "npt_azim": 360},
}
_UNITS = ("q_nm^-1", "q_A^-1", "2th_deg", "2th_rad", "r_mm")

# A 'realistic' later geometry refinement for the reduction reference: the beam centre moves
# by half a pixel and the distance by 0.1 %, typical of re-calibrating a powder setup.
REFINEMENT = {"centre_half_pixel": {"poni1": 0.5, "poni2": 0.5}, "distance_0.1pct": {"dist": 1e-3}}


@TECHNIQUES.register("azint")
class AzintTechnique(Technique):
    """Azimuthal integration of every frame to a 1-D profile with Poisson sigma per bin.

    Parameters
    ----------
    config : mapping
        ``npt``, ``unit`` (q_nm^-1 | q_A^-1 | 2th_deg | 2th_rad | r_mm), ``method`` (pyFAI
        method triple), ``polarization_factor`` (None = off), ``correct_solid_angle``,
        ``error_model`` ('poisson' | 'azimuthal'), ``cake`` ({enabled, npt_azim}: also a 2-D
        cake per frame in the result).
    """

    name = "azint"

    def __init__(self, config: Mapping[str, Any]) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:
            raise ConfigError(f"azint pipeline: unknown option(s) {', '.join(unknown)}; "
                              f"expected: {', '.join(DEFAULT_CONFIG)}")
        cake = {**DEFAULT_CONFIG["cake"], **dict(config.get("cake") or {})}
        merged = {**DEFAULT_CONFIG, **config, "cake": cake}
        merged["method"] = [str(m) for m in merged["method"]] if not isinstance(merged["method"], str) \
            else merged["method"]
        super().__init__(merged)
        npt = merged["npt"]
        if not isinstance(npt, int) or isinstance(npt, bool) or npt < 10:
            raise ConfigError(f"azint npt must be an integer >= 10, got {npt!r}")
        fio.check_option("unit", merged["unit"], _UNITS)
        fio.check_option("error_model", merged["error_model"], ("poisson", "azimuthal"))
        pf = merged["polarization_factor"]
        if pf is not None and not (isinstance(pf, (int, float)) and -1.0 <= pf <= 1.0):
            raise ConfigError(f"azint polarization_factor must be null or in [-1, 1], got {pf!r}")

    # ---------------------------------------------------------------------------------------
    # Data
    # ---------------------------------------------------------------------------------------

    def load(self, dataset_config: Mapping[str, Any]) -> Dataset:
        """Frames, geometry and mask of ``dataset_config``.

        Keys: ``path`` (frames: a file, folder or glob; HDF5 or any fabio format), ``poni``
        (pyFAI PONI or BioXTAS RAW ``.cfg``; optional for Pilatus CBF/TIFF files whose header
        gives the geometry), ``key`` (HDF5 dataset, default /entry/data/data), ``flipud``,
        ``max_frames``, ``mask_file`` / ``mask_key`` (user mask, non-zero = masked),
        ``count_cutoff`` (values above are masked; default from the file's header),
        ``calibrant`` (pyFAI calibrant name, for the peak evaluators), ``sample`` ('powder' |
        'saxs' | None: which evaluators apply), and for the built-in
        simulation ``simulation`` + ``generate_at``.
        """
        cfg = dict(dataset_config)
        if not cfg.get("path"):
            raise ConfigError("azint dataset: 'path' is required (the detector frames)")
        path = Path(str(cfg["path"])).expanduser()
        sim = None
        if cfg.get("simulation") is not None:
            from lossbound.pipelines.azint.simulate import simulation_params, write_simulation

            sim = simfiles.ensure_frames_simulation(cfg, technique="azint", make_params=simulation_params,
                                                    write=write_simulation)
            cfg["poni"] = cfg.get("poni") or str(path.with_suffix(".poni"))
        loaded = fio.load_detector_frames(cfg, technique="azint")
        frames, masked = loaded["frames"], loaded["masked"]
        meta = {**loaded["meta"], "calibrant": cfg.get("calibrant"), "sample": cfg.get("sample"),
                "simulated": sim is not None}
        name, meta["name_given"] = dataset_name(cfg, path)
        if sim is not None:
            meta["simulation"] = sim
        log.info("azint: loaded %s %s %s from %s (%d masked pixels), geometry %s", name, frames.shape, frames.dtype,
                 path, meta["masked_pixels"], meta["poni"])
        return Dataset(name=name, arrays={"frames": frames, "geometry": loaded["geometry_vector"]}, payload="frames",
                       source=str(path), meta=meta, mask=~masked)

    # ---------------------------------------------------------------------------------------
    # Pipeline
    # ---------------------------------------------------------------------------------------

    def integrator(self, data: Dataset, geometry: Mapping[str, Any] | None = None, *, cache: bool = True):
        """The dataset's AzimuthalIntegrator (or that of ``geometry``), built once per process."""
        return fio.integrator_for(geometry or data.geometry, data.payload_array.shape[1:], cache=cache)

    def _method(self):
        m = self.config["method"]
        return m if isinstance(m, str) else tuple(m)

    def integrate(self, data: Dataset, *, geometry: Mapping[str, Any] | None = None,
                  mask: np.ndarray | None = None) -> Result:
        """1-D profiles of every frame (and cakes when enabled) with ``geometry``/``mask``
        overriding the dataset's (for the reduction reference)."""
        # a geometry or mask other than the dataset's (the reduction reference) is used once
        ai = self.integrator(data, geometry, cache=geometry is None and mask is None)
        masked = (~data.mask if data.mask is not None else np.zeros(data.payload_array.shape[1:], bool)) \
            if mask is None else mask
        mask_u8 = masked.astype(np.int8)
        cfg = self.config
        kwargs = dict(unit=cfg["unit"], method=self._method(), mask=mask_u8, error_model=cfg["error_model"],
                      polarization_factor=cfg["polarization_factor"], correctSolidAngle=cfg["correct_solid_angle"])
        intensity, sigma, cakes = [], [], []
        radial = None
        for frame in data.payload_array:
            res = ai.integrate1d(frame, cfg["npt"], **kwargs)
            radial = res.radial
            intensity.append(res.intensity)
            sigma.append(res.sigma if res.sigma is not None else np.full_like(res.intensity, np.nan))
            if cfg["cake"]["enabled"]:
                ck = ai.integrate2d(frame, cfg["npt"], int(cfg["cake"]["npt_azim"]), unit=cfg["unit"],
                                    method=self._method(), mask=mask_u8, polarization_factor=cfg["polarization_factor"],
                                    correctSolidAngle=cfg["correct_solid_angle"])
                cakes.append(ck.intensity)
        out = {"radial": np.asarray(radial, np.float64), "intensity": np.asarray(intensity, np.float64),
               "sigma": np.asarray(sigma, np.float64)}
        if cakes:
            out["cake"] = np.asarray(cakes, np.float32)
        return out

    def prepare(self, raw: Dataset) -> dict[str, Any]:
        """``reduction``: what storing only the profiles would give (:meth:`reduction`)."""
        return self.raw_result(raw)[0]

    def raw_result(self, raw: Dataset) -> tuple[dict[str, Any], Result]:
        """:meth:`prepare` from the raw profiles, which are the raw result too (integrated once)."""
        result = self.integrate(raw)
        reduction = self.reduction(raw, result)
        log.info("azint: storing only the 1-D profiles of %s: %.0fx; a half-pixel beam-centre refinement "
                 "would move the stored profile by up to %.3g sigma", raw.name, reduction["profile_ratio"],
                 reduction["centre_half_pixel_max_dev_sigma"])
        return {"reduction": reduction}, result

    def report_extras(self, prepared: Mapping[str, Any]) -> dict[str, Any]:
        return {"reduction": prepared["reduction"]} if "reduction" in prepared else {}

    def run(self, data: Dataset, prepared: Mapping[str, Any]) -> Result:
        """``radial`` (npt,), ``intensity`` and ``sigma`` (n_frames, npt), optional ``cake``."""
        return self.integrate(data)

    def reduction(self, raw: Dataset, result: Result) -> dict[str, float]:
        """Storing only the 1-D profiles: their ratio, and what they cannot recover.

        A later geometry refinement (beam centre by half a pixel, distance by 0.1 %) or mask
        correction re-integrates the raw frames; a stored profile cannot follow. The figures
        compare the re-integration with the stored profile in units of its own sigma.
        """
        frames = raw.payload_array
        n_bins = result["intensity"].size
        stored = 4 * (n_bins * 2 + result["radial"].size)  # float32 intensity + sigma + axis
        out: dict[str, float] = {"profile_ratio": float(frames.nbytes / stored)}
        base = dict(raw.geometry)
        ai = self.integrator(raw)
        for label, change in REFINEMENT.items():
            geo = dict(base)
            for k, v in change.items():
                pixel = {"poni1": ai.detector.pixel1, "poni2": ai.detector.pixel2}.get(k)
                geo[k] = base[k] + v * (pixel if pixel is not None else base[k])
            moved = self.integrate(raw, geometry=geo)
            out.update(_deviation(result, moved, prefix=label))
        # a mask correction: pixels a later hot-pixel search flags (above 5x the count the
        # frame's own profile predicts at their radius and 20 sigma above it), masked in a
        # re-integration
        hot = _hot_pixels(raw, result, self.integrator(raw), self.config["unit"], self.config["polarization_factor"])
        if hot.any():
            moved = self.integrate(raw, mask=(~raw.mask if raw.mask is not None else np.zeros_like(hot)) | hot)
            out.update(_deviation(result, moved, prefix="mask_correction"))
        out["mask_correction_pixels"] = float(hot.sum())
        return out

    def data_key(self, data: Dataset) -> dict[str, Any]:
        """The calibrant and sample type, which set the evaluators that apply (not in the
        frames' content)."""
        return {k: data.meta[k] for k in ("calibrant", "sample") if data.meta.get(k) is not None}

    gate_defaults = gates.DEFAULTS

    def gates(self, data: Dataset, prepared: Mapping[str, Any], result: Result,
              settings: Mapping[str, Mapping[str, Any]], *, references: Mapping[str, Any]) -> list[GateCheck]:
        """Does the PONI fit the frames: the orientation (:func:`lossbound.pipelines.azint.gates.orientation_check`)
        and the beam centre (:func:`lossbound.pipelines.azint.gates.centre_check`)."""
        valid = data.mask if data.mask is not None else np.ones(data.payload_array.shape[1:], bool)
        return gates.checks(data.payload_array, valid, self.integrator(data), settings,
                            polarization=self.config["polarization_factor"], flipped=bool(data.meta.get("flipud")))

    def noise_checks(self, data: Dataset) -> dict[str, Any]:
        """Whether the counts behave like photons (:func:`lossbound.pipelines.frames.count_dispersion`)."""
        masked = ~data.mask if data.mask is not None else np.zeros(data.payload_array.shape[1:], bool)
        return fio.count_dispersion(self.integrator(data), data.payload_array, masked)

    def simulation_truth(self, data: Dataset):
        sim = data.meta.get("simulation")
        if sim is None:
            return None
        from lossbound.pipelines.azint.simulate import simulation_model

        return simfiles.frames_truth(data, simulation_model(**sim), note="Poisson counts of the same expected "
                                     "frame; gaps, bad and hot pixels and zingers as measured")

    def preview(self, result: Result) -> dict[str, Any]:
        """The first frame's profile and sigma."""
        return {"radial": np.asarray(result["radial"]), "intensity": np.asarray(result["intensity"][0]),
                "sigma": np.asarray(result["sigma"][0]), "unit": self.config["unit"]}

    def figure(self, raw: Mapping[str, Any], compressed: Mapping[str, Any], *, title: str = ""):
        """Raw and compressed profiles (log scale) and their difference in units of the raw sigma."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        x = np.asarray(raw["radial"])
        a, b, s = (np.asarray(raw["intensity"]), np.asarray(compressed["intensity"]), np.asarray(raw["sigma"]))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(s > 0, (b - a) / s, np.nan)
        fig = Figure(figsize=(10, 6.5))
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        top.plot(x, a, lw=1.0, label="raw", color="k")
        top.plot(x, b, lw=0.8, label="compressed", color="tab:red", alpha=0.8)
        top.set_yscale("log")
        top.set_ylabel("intensity")
        top.legend(loc="upper right")
        bottom.plot(x, z, lw=0.6, color="tab:blue")
        bottom.axhline(0, color="k", lw=0.5)
        for lim in (-1, 1):
            bottom.axhline(lim, color="gray", lw=0.5, ls="--")
        bottom.set_ylabel("(compressed - raw) / sigma")
        bottom.set_xlabel(str(raw.get("unit", "")))
        finite = z[np.isfinite(z)]
        chi2 = float(np.mean(finite**2)) if finite.size else float("nan")
        fig.suptitle(f"{title}  (reduced chi2 {chi2:.3g}, max |dI|/sigma {np.max(np.abs(finite)) if finite.size else 0:.3g})")
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.08, top=0.92, hspace=0.08)
        return fig


def _deviation(ref: Result, other: Result, *, prefix: str) -> dict[str, float]:
    a, b, s = ref["intensity"], other["intensity"], ref["sigma"]
    ok = np.isfinite(a) & np.isfinite(b) & (s > 0)
    z = (b[ok] - a[ok]) / s[ok]
    return {f"{prefix}_chi2_red": float(np.mean(z**2)) if z.size else math.nan,
            f"{prefix}_max_dev_sigma": float(np.max(np.abs(z))) if z.size else math.nan}


def _hot_pixels(raw: Dataset, result: Result, ai, unit: str, polarization: float | None) -> np.ndarray:
    """Valid pixels far above their frame's radial profile (5x and 20 sigma) in any frame."""
    shape = raw.payload_array.shape[1:]
    r = ai.center_array(shape, unit=unit)
    radial = result["radial"]
    hot = np.zeros(shape, bool)
    valid = raw.mask if raw.mask is not None else np.ones(shape, bool)
    scale = ai.solidAngleArray(shape)
    if polarization is not None:
        scale = scale * ai.polarization(shape, factor=polarization)
    for frame, prof in zip(raw.payload_array, result["intensity"]):
        expected = np.interp(r, radial, np.nan_to_num(prof)) * scale
        hot |= valid & (frame > 5 * expected) & (frame > expected + 20 * np.sqrt(np.maximum(expected, 1.0)))
    return hot
