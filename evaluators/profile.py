"""Integrated 1-D profiles (powder diffraction, SAXS) compared in units of their own noise.

Pure functions first (skimage.metrics style), then the evaluators that apply them to the
``radial`` / ``intensity`` / ``sigma`` arrays of an azimuthal-integration result. A stack's
frames are compared bin by bin; peak fits and SAXS analyses use the mean profile.

Why these yardsticks: the compressed profile differs from the raw one by what the codec did,
and the raw profile carries its own counting noise ``sigma`` per bin, so the difference in
units of ``sigma`` tells whether the codec matters next to the noise the measurement already
has (reduced chi2 = 0.25 means the codec's error is half the noise, total noise +12 %). Peak
positions are compared with the peak width (the instrument resolution), intensities with
the peak area, the lattice parameter with its own fit uncertainty.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Mapping

import numpy as np
from scipy import optimize, signal

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, reject_unknown, result_array
from lossbound.evaluators.image import check_same_shape
from lossbound.core.errors import ConfigError

__all__ = [
    "cubic_lattice_constant",     "d_spacing", "find_strong_peaks", "fit_peak", "guinier_fit", "log_binned_ratio",
    "profile_deviation", "pseudo_voigt", "refine_cubic_lattice",
]



@functools.lru_cache(maxsize=None)
def cubic_lattice_constant(calibrant: str | None) -> float | None:
    """The lattice constant (Angstrom) of a cubic pyFAI calibrant, from its first reflection
    (``a = d * sqrt(h² + k² + l²)``, e.g. CeO2 5.411651 from NIST SRM 674b); None for an
    unknown or non-cubic calibrant."""
    if not calibrant:
        return None
    from pyFAI.calibrant import get_calibrant

    try:
        cal = get_calibrant(str(calibrant))
        cal.dspacing  # reads the calibrant's file: its cell and reflections
        config = cal.config
    except (KeyError, ValueError, OSError):
        return None
    if config is None or "cubic" not in str(config.cell or "").lower() or not config.reflections:
        return None
    first = config.reflections[0]
    h, k, l = (int(v) for v in first.hkl)
    return float(first.dspacing) * math.sqrt(h * h + k * k + l * l)


def profile_deviation(reference: np.ndarray, test: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Deviation of ``test`` from ``reference`` in units of ``sigma`` (the reference's noise).

    Parameters
    ----------
    reference, test : ndarray
        Profiles (any shape, e.g. frames x bins).
    sigma : ndarray
        Standard deviation of ``reference`` per bin; bins with sigma <= 0 or non-finite
        values are left out.

    Returns
    -------
    dict
        ``chi2_red`` (mean of z**2, z = (test - reference) / sigma), ``max_dev_sigma``
        (max |z|), ``bias_sigma`` (mean z: a systematic shift), ``rwp`` (weighted profile
        R-factor sqrt(sum w dI**2 / sum w I**2), w = 1/sigma**2) and ``bins`` (used).
    """
    check_same_shape(reference, test, what="profile")
    check_same_shape(reference, sigma, what="profile and sigma")
    ref, tst, sig = (np.asarray(a, np.float64) for a in (reference, test, sigma))
    ok = np.isfinite(ref) & np.isfinite(sig) & (sig > 0)
    if (ok & ~np.isfinite(tst)).any():  # a bin the codec made undefined is an infinite deviation
        return {"chi2_red": math.inf, "max_dev_sigma": math.inf, "bias_sigma": math.inf, "rwp": math.inf,
                "bins": float(ok.sum())}
    if not ok.any():
        return {"chi2_red": math.nan, "max_dev_sigma": math.nan, "bias_sigma": math.nan, "rwp": math.nan, "bins": 0.0}
    z = (tst[ok] - ref[ok]) / sig[ok]
    w = 1.0 / sig[ok] ** 2
    denom = float(np.sum(w * ref[ok] ** 2))
    return {
        "chi2_red": float(np.mean(z**2)),
        "max_dev_sigma": float(np.max(np.abs(z))),
        "bias_sigma": float(np.mean(z)),
        "rwp": float(np.sqrt(np.sum(w * (tst[ok] - ref[ok]) ** 2) / denom)) if denom > 0 else math.nan,
        "bins": float(ok.sum()),
    }


def pseudo_voigt(x: np.ndarray, x0: float, fwhm: float, area: float, eta: float) -> np.ndarray:
    """Area-normalised pseudo-Voigt: ``area * (eta * Lorentz + (1 - eta) * Gauss)``, same FWHM."""
    dx = (np.asarray(x, np.float64) - x0) / fwhm
    gauss = (2.0 / fwhm) * math.sqrt(math.log(2) / math.pi) * np.exp(-4.0 * math.log(2) * dx**2)
    lorentz = (2.0 / (math.pi * fwhm)) / (1.0 + 4.0 * dx**2)
    return area * (eta * lorentz + (1.0 - eta) * gauss)


def _peak_model(x, x0, fwhm, area, eta, b0, b1, *, xc):
    return pseudo_voigt(x, x0, fwhm, area, eta) + b0 + b1 * (x - xc)


def fit_peak(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, *, start: Mapping[str, float]
             ) -> dict[str, float] | None:
    """Pseudo-Voigt on a linear local background, weighted by ``sigma`` (scipy least squares).

    Parameters
    ----------
    x, y, sigma : ndarray
        The window of the profile around one peak.
    start : mapping
        Start values ``x0``, ``fwhm``, ``area`` (``eta``, ``b0``, ``b1`` optional).

    Returns
    -------
    dict or None
        ``x0, fwhm, area, eta, b0, b1`` and their standard errors ``x0_err, fwhm_err,
        area_err``; None when the fit fails or is not a peak.
    """
    ok = np.isfinite(y) & np.isfinite(sigma) & (sigma > 0)
    x, y, sigma = x[ok], y[ok], sigma[ok]
    if x.size < 7:
        return None
    xc = float(x.mean())
    span = float(x[-1] - x[0])
    p0 = [start["x0"], start["fwhm"], start["area"], start.get("eta", 0.5),
          start.get("b0", float(np.min(y))), start.get("b1", 0.0)]
    lo = [x[0], span / x.size / 4, 0.0, 0.0, -np.inf, -np.inf]
    hi = [x[-1], span, np.inf, 1.0, np.inf, np.inf]
    p0 = [min(max(v, l + 1e-12 * abs(l) if np.isfinite(l) else v), h) for v, l, h in zip(p0, lo, hi)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, pcov = optimize.curve_fit(lambda xx, *p: _peak_model(xx, *p, xc=xc), x, y, p0=p0, sigma=sigma,
                                            absolute_sigma=True, bounds=(lo, hi), method="trf", max_nfev=400)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(6, np.nan)
    names = ("x0", "fwhm", "area", "eta", "b0", "b1")
    out = {k: float(v) for k, v in zip(names, popt)}
    out.update({f"{k}_err": float(e) for k, e in zip(names[:3], err[:3])})
    if not (out["area"] > 0 and out["fwhm"] > 0):
        return None
    return out


def find_strong_peaks(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, *, n_peaks: int = 8,
                      min_prominence_sigma: float = 20.0, window_fwhm: float = 3.0) -> list[dict[str, Any]]:
    """The ``n_peaks`` most prominent peaks (prominence >= ``min_prominence_sigma`` sigma), each
    with a fit window of +- ``window_fwhm`` FWHM (at least 5 bins) and start values."""
    y = np.nan_to_num(np.asarray(y, np.float64))
    s = np.nan_to_num(np.asarray(sigma, np.float64), nan=np.inf)
    idx, props = signal.find_peaks(y, prominence=min_prominence_sigma * np.maximum(s, 1e-300), width=1)
    order = np.argsort(props["prominences"])[::-1][:n_peaks]
    dx = float(np.median(np.diff(x)))
    peaks = []
    for i in sorted(order, key=lambda k: idx[k]):
        width_bins = float(props["widths"][i])
        half = max(5, int(math.ceil(window_fwhm * width_bins)))
        lo, hi = max(0, idx[i] - half), min(len(x), idx[i] + half + 1)
        fwhm = width_bins * dx
        peaks.append({"window": [int(lo), int(hi)], "start": {
            "x0": float(x[idx[i]]), "fwhm": fwhm, "area": float(props["prominences"][i]) * fwhm}})
    return peaks


def d_spacing(radial: np.ndarray, unit: str, wavelength_m: float) -> np.ndarray:
    """d-spacing in Angstrom of radial positions in ``unit`` (q_nm^-1, q_A^-1, 2th_deg, 2th_rad)."""
    r = np.asarray(radial, np.float64)
    if unit == "q_nm^-1":
        return 20.0 * math.pi / r
    if unit == "q_A^-1":
        return 2.0 * math.pi / r
    lam = wavelength_m * 1e10
    if unit == "2th_deg":
        return lam / (2.0 * np.sin(np.deg2rad(r) / 2.0))
    if unit == "2th_rad":
        return lam / (2.0 * np.sin(r / 2.0))
    raise ValueError(f"no d-spacing for radial unit {unit!r}; expected q_nm^-1, q_A^-1, 2th_deg or 2th_rad")


def refine_cubic_lattice(d: np.ndarray, d_err: np.ndarray, *, a0: float, tolerance: float = 0.005
                         ) -> tuple[float, float, int]:
    """Weighted least-squares lattice parameter of a cubic phase from observed d-spacings.

    Each d is indexed as ``a0 / sqrt(N)`` (N = h² + k² + l², nearest integer) when that
    matches within ``tolerance`` (relative); ``a = d * sqrt(N)``, averaged with weights
    ``1 / (d_err * sqrt(N))**2``. Returns ``(a, a_err, n_reflections)``, NaN when none index.
    """
    d = np.asarray(d, np.float64)
    d_err = np.asarray(d_err, np.float64)
    n = np.rint((a0 / d) ** 2)
    ok = (n >= 1) & np.isfinite(d_err) & (d_err > 0) & (np.abs(a0 / np.sqrt(np.maximum(n, 1)) - d) / d < tolerance)
    if not ok.any():
        return math.nan, math.nan, 0
    a_i = d[ok] * np.sqrt(n[ok])
    w = 1.0 / (d_err[ok] * np.sqrt(n[ok])) ** 2
    a = float(np.sum(w * a_i) / np.sum(w))
    return a, float(1.0 / math.sqrt(np.sum(w))), int(ok.sum())


def guinier_fit(q: np.ndarray, intensity: np.ndarray, sigma: np.ndarray, *, qrg_max: float = 1.3,
                min_points: int = 8) -> dict[str, float] | None:
    """Guinier analysis ``ln I = ln I0 - (q Rg)² / 3`` over the lowest q with ``q Rg <= qrg_max``.

    Iterates the q range from the first ``min_points`` valid points until it is consistent
    with ``qrg_max``. Returns ``rg``, ``i0``, their errors and ``points``; None when the low-q
    data are not Guinier-like (rising intensity, too few points, Rg not positive).
    """
    q, i, s = (np.asarray(a, np.float64) for a in (q, intensity, sigma))
    ok = np.isfinite(i) & np.isfinite(s) & (s > 0) & (i > 0)
    q, i, s = q[ok], i[ok], s[ok]
    if q.size < min_points:
        return None
    n = min_points
    result = None
    for _ in range(20):
        x, y, w = q[:n] ** 2, np.log(i[:n]), (i[:n] / s[:n]) ** 2
        coef, cov = np.polyfit(x, y, 1, w=np.sqrt(w), cov="unscaled")
        slope, intercept = coef
        if slope >= 0:
            return None
        rg = math.sqrt(-3.0 * slope)
        result = {"rg": rg, "i0": math.exp(intercept), "rg_err": 1.5 * math.sqrt(cov[0, 0]) / rg,
                  "i0_err": math.exp(intercept) * math.sqrt(cov[1, 1]), "points": float(n)}
        n_new = int(np.searchsorted(q, qrg_max / rg, side="right"))
        if n_new == n or n_new < min_points:
            break
        n = n_new
    if result is None or q[n - 1] * result["rg"] > qrg_max * 1.05 or n < min_points:
        return None
    return result


def log_binned_ratio(q: np.ndarray, reference: np.ndarray, test: np.ndarray, sigma: np.ndarray, *,
                     n_bins: int = 30) -> dict[str, float]:
    """The curve ratio ``test / reference`` in ``n_bins`` log-spaced q bins (sums of the
    profile bins in each), as ``max |ln ratio|`` and the same in units of the bin's noise."""
    q = np.asarray(q, np.float64)
    ok = (q > 0) & np.isfinite(reference) & np.isfinite(test) & np.isfinite(sigma) & (sigma > 0)
    if ok.sum() < 2:
        return {"log_ratio_max": math.nan, "log_ratio_sigma_max": math.nan}
    edges = np.geomspace(q[ok].min(), q[ok].max() * (1 + 1e-12), n_bins + 1)
    which = np.digitize(q, edges) - 1
    worst = worst_sigma = 0.0
    for b in range(n_bins):
        sel = ok & (which == b)
        if not sel.any():
            continue
        r, t = float(np.sum(reference[sel])), float(np.sum(test[sel]))
        noise = float(np.sqrt(np.sum(sigma[sel] ** 2)))
        if r <= 0:
            continue
        if t <= 0:  # the codec emptied a bin the raw curve has
            return {"log_ratio_max": math.inf, "log_ratio_sigma_max": math.inf}
        ratio = abs(math.log(t / r))
        worst = max(worst, ratio)
        worst_sigma = max(worst_sigma, abs(t - r) / noise)
    return {"log_ratio_max": worst, "log_ratio_sigma_max": worst_sigma}


def _mean_profile(outcome: Outcome, evaluator: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial axis, mean intensity over frames and its sigma."""
    x = result_array(outcome, "radial", evaluator)
    i = np.atleast_2d(result_array(outcome, "intensity", evaluator))
    s = np.atleast_2d(result_array(outcome, "sigma", evaluator))
    n = i.shape[0]
    return x, np.mean(i, axis=0), np.sqrt(np.sum(s**2, axis=0)) / n


@EVALUATORS.register("profile")
class ProfileDeviation(Evaluator):
    """Compressed vs raw profiles, bin by bin, in units of the raw profile's sigma.

    Parameters
    ----------
    prefix : str
        Metric prefix (default ``'profile'``).

    Output keys: ``<prefix>_chi2_red``, ``<prefix>_max_dev_sigma``, ``<prefix>_bias_sigma``,
    ``<prefix>_rwp`` (see :func:`profile_deviation`) over every frame's bins, and per frame
    (arrays) ``<prefix>_chi2_red_frames`` and ``<prefix>_max_dev_sigma_frames``.
    """

    name = "profile"
    scaling = {"chi2_red": 2, "chi2_red_frames": 2}

    def powers(self) -> dict[str, float]:
        return {f"{self.prefix}_{k}": v for k, v in self.scaling.items()}

    def __init__(self, *, prefix: str = "profile", **extra: Any) -> None:
        reject_unknown(self.name, extra)
        super().__init__(prefix=prefix)
        self.prefix = str(prefix)

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, Any]:
        ref, test, sigma = (np.atleast_2d(result_array(o, k, self.name))
                            for o, k in ((raw, "intensity"), (compressed, "intensity"), (raw, "sigma")))
        dev = profile_deviation(ref, test, sigma)
        out: dict[str, Any] = {f"{self.prefix}_{k}": v for k, v in dev.items() if k != "bins"}
        if ref.shape == test.shape == sigma.shape:
            per = [profile_deviation(ref[i], test[i], sigma[i]) for i in range(ref.shape[0])]
            out[f"{self.prefix}_chi2_red_frames"] = np.array([d["chi2_red"] for d in per])
            out[f"{self.prefix}_max_dev_sigma_frames"] = np.array([d["max_dev_sigma"] for d in per])
        return out


@EVALUATORS.register("powder_peaks")
class PowderPeaks(Evaluator):
    """Position, width and area of the strongest powder peaks, and a cubic lattice parameter.

    The peaks are found and windowed once on the raw mean profile; raw and compressed
    profiles are fitted in the same windows (pseudo-Voigt on a linear background).

    Parameters
    ----------
    unit : str
        Radial unit of the profiles (as the pipeline's ``unit``).
    n_peaks : int
        How many of the most prominent peaks to fit (default 8).
    min_prominence_sigma : float
        A peak must stand this many sigma above its surroundings (default 20).

    Output keys: ``peak_shift_fwhm_max`` (max |shift| / raw FWHM), ``peak_shift_sigma_max``
    (max |shift| / raw fit error), ``peak_fwhm_change_max``, ``peak_area_change_max``
    (relative), ``peak_count`` (peaks fitted in both); with a cubic calibrant in the dataset
    (``calibrant``: CeO2, LaB6, Si) ``lattice_a`` (Angstrom, compressed),
    ``lattice_a_change`` (relative) and ``lattice_a_change_sigma`` (|change| / raw fit error).
    Metrics are NaN where no peak exists (then criteria on them do not apply), and on a SAXS
    dataset without a crystalline calibrant (``sample: saxs``, no ``calibrant``), whose maxima
    are form-factor fringes.
    """

    name = "powder_peaks"

    def __init__(self, *, unit: str = "q_nm^-1", n_peaks: int = 8, min_prominence_sigma: float = 20.0,
                 **extra: Any) -> None:
        reject_unknown(self.name, extra)
        if not isinstance(n_peaks, int) or n_peaks < 1:
            raise ConfigError(f"evaluator 'powder_peaks': n_peaks must be a positive integer, got {n_peaks!r}")
        super().__init__(unit=unit, n_peaks=n_peaks, min_prominence_sigma=min_prominence_sigma)
        self.unit, self.n_peaks, self.min_prominence = str(unit), n_peaks, float(min_prominence_sigma)

    def _fit_all(self, outcome: Outcome, peaks: list[dict[str, Any]]) -> list[dict[str, float] | None]:
        x, y, s = _mean_profile(outcome, self.name)
        return [fit_peak(x[p["window"][0]:p["window"][1]], y[p["window"][0]:p["window"][1]],
                         s[p["window"][0]:p["window"][1]], start=p["start"]) for p in peaks]

    def _lattice(self, outcome: Outcome, fits: list[dict[str, float] | None]) -> tuple[float, float]:
        a0 = cubic_lattice_constant(outcome.data.meta.get("calibrant"))
        good = [f for f in fits if f is not None]
        if a0 is None or not good or self.unit not in ("q_nm^-1", "q_A^-1", "2th_deg", "2th_rad"):
            return math.nan, math.nan
        wavelength = float((outcome.data.geometry or {}).get("wavelength") or math.nan)
        x0 = np.array([f["x0"] for f in good])
        err = np.array([f["x0_err"] for f in good])
        d = d_spacing(x0, self.unit, wavelength)
        d_err = np.abs(d_spacing(x0 + err, self.unit, wavelength) - d)
        a, a_err, _ = refine_cubic_lattice(d, d_err, a0=a0)
        return a, a_err

    def reference(self, raw: Outcome) -> dict[str, Any]:
        if raw.data.meta.get("sample") == "saxs" and not raw.data.meta.get("calibrant"):
            # the maxima of a SAXS curve without a crystalline calibrant are form-factor
            # fringes, not Bragg peaks: peak positions, widths and areas are not its science
            return {"peaks": [], "fits": [], "lattice_a": math.nan, "lattice_a_err": math.nan, "applicable": False}
        x, y, s = _mean_profile(raw, self.name)
        peaks = find_strong_peaks(x, y, s, n_peaks=self.n_peaks, min_prominence_sigma=self.min_prominence)
        for p, f in zip(peaks, self._fit_all(raw, peaks)):  # every fit starts where this one ended
            if f is not None:
                p["start"] = {k: f[k] for k in ("x0", "fwhm", "area", "eta", "b0", "b1")}
        fits = self._fit_all(raw, peaks)  # the same start as every compressed fit: raw vs raw is exact
        a, a_err = self._lattice(raw, fits)
        return {"peaks": peaks, "fits": fits, "lattice_a": a, "lattice_a_err": a_err}

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        if reference.get("applicable") is False:
            return dict.fromkeys(("peak_count", "peak_shift_fwhm_max", "peak_shift_sigma_max", "peak_fwhm_change_max",
                                  "peak_area_change_max", "lattice_a", "lattice_a_change", "lattice_a_change_sigma"),
                                 math.nan)
        fits = self._fit_all(compressed, reference["peaks"])
        shift_fwhm, shift_sigma, fwhm_change, area_change = [], [], [], []
        for r, c in zip(reference["fits"], fits):
            if r is None or c is None:
                continue
            shift = abs(c["x0"] - r["x0"])
            shift_fwhm.append(shift / r["fwhm"])
            shift_sigma.append(shift / r["x0_err"] if r["x0_err"] > 0 else math.nan)
            fwhm_change.append(abs(c["fwhm"] / r["fwhm"] - 1.0))
            area_change.append(abs(c["area"] / r["area"] - 1.0))
        n_raw = sum(f is not None for f in reference["fits"])
        lost = len(shift_fwhm) < n_raw  # a peak the raw fit found but the compressed cannot

        def worst(v: list[float]) -> float:
            finite = [x for x in v if not math.isnan(x)]  # NaN: a fit without an error estimate
            return math.inf if lost else (max(finite) if finite else math.nan)

        out = {"peak_count": float(len(shift_fwhm)), "peak_shift_fwhm_max": worst(shift_fwhm),
               "peak_shift_sigma_max": worst(shift_sigma), "peak_fwhm_change_max": worst(fwhm_change),
               "peak_area_change_max": worst(area_change)}
        a, _ = self._lattice(compressed, fits)
        a_raw, a_err = reference["lattice_a"], reference["lattice_a_err"]
        out["lattice_a"] = a
        out["lattice_a_change"] = abs(a / a_raw - 1.0) if np.isfinite(a_raw) else math.nan
        out["lattice_a_change_sigma"] = abs(a - a_raw) / a_err if np.isfinite(a_raw) and a_err > 0 else math.nan
        return out


@EVALUATORS.register("saxs")
class SaxsCurve(Evaluator):
    """Guinier Rg and I(0) where the low-q data have a Guinier region, and the curve ratio in
    log-spaced q bins always.

    Parameters
    ----------
    n_log_bins : int
        Log-spaced q bins of the curve ratio (default 30).
    qrg_max : float
        Upper end of the Guinier region, q * Rg (default 1.3, the usual limit for globular
        particles).

    Output keys: ``saxs_log_ratio_max`` (max |ln(compressed / raw)| over the bins),
    ``saxs_log_ratio_sigma_max`` (the same difference in units of the bin's noise),
    ``guinier_rg_change`` and ``guinier_i0_change`` (relative; NaN without a Guinier region).
    unit : str
        Radial unit of the profiles (as the pipeline's ``unit``); with a unit other than
        q_nm^-1 or q_A^-1 all metrics are NaN (not applicable). On a dataset whose ``sample`` is
    ``powder`` all metrics are NaN (not applicable: a powder pattern's low-q air scatter is no
    particle's Guinier region).
    """

    name = "saxs"

    def __init__(self, *, unit: str = "q_nm^-1", n_log_bins: int = 30, qrg_max: float = 1.3, **extra: Any) -> None:
        reject_unknown(self.name, extra)
        super().__init__(unit=unit, n_log_bins=n_log_bins, qrg_max=qrg_max)
        self.unit, self.n_log_bins, self.qrg_max = str(unit), int(n_log_bins), float(qrg_max)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        if raw.data.meta.get("sample") == "powder" or self.unit not in ("q_nm^-1", "q_A^-1"):
            return {"applicable": False}
        x, y, s = _mean_profile(raw, self.name)
        return {"applicable": True, "guinier": guinier_fit(x, y, s, qrg_max=self.qrg_max)}

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        if not reference["applicable"]:
            return dict.fromkeys(("saxs_log_ratio_max", "saxs_log_ratio_sigma_max", "guinier_rg_change",
                                  "guinier_i0_change"), math.nan)
        x, yr, s = _mean_profile(raw, self.name)
        _, yc, _ = _mean_profile(compressed, self.name)
        ratio = log_binned_ratio(x, yr, yc, s, n_bins=self.n_log_bins)
        out = {f"saxs_{k}": v for k, v in ratio.items()}
        g_raw = reference.get("guinier")
        out["guinier_rg_change"] = out["guinier_i0_change"] = math.nan
        if g_raw is not None:
            g = guinier_fit(x, yc, s, qrg_max=self.qrg_max)
            if g is None:
                out["guinier_rg_change"] = out["guinier_i0_change"] = math.inf
            else:
                out["guinier_rg_change"] = abs(g["rg"] / g_raw["rg"] - 1.0)
                out["guinier_i0_change"] = abs(g["i0"] / g_raw["i0"] - 1.0)
        return out
