"""Profile evaluators on known cases: a peak shifted by a known amount, Poisson noise alone,
a known lattice, a known Guinier curve."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lossbound.evaluators.profile import (
    PowderPeaks, d_spacing, find_strong_peaks, fit_peak, guinier_fit, log_binned_ratio, profile_deviation,
    pseudo_voigt, refine_cubic_lattice,
)
from lossbound.core.types import Dataset, Outcome


def _outcome(x, intensity, sigma, **meta) -> Outcome:
    data = Dataset("t", {"frames": np.zeros((1, 2, 2)), "geometry": np.zeros(3)}, "frames", "memory", meta=meta)
    return Outcome(data, {"radial": x, "intensity": np.atleast_2d(intensity), "sigma": np.atleast_2d(sigma)})


def test_a_peak_shifted_by_a_known_amount_is_measured_as_shifted_by_that_amount():
    x = np.linspace(10, 20, 2000)
    bg = 50 + 2 * (x - 15)
    raw = bg + pseudo_voigt(x, 14.0, 0.08, 200.0, 0.4) + pseudo_voigt(x, 17.0, 0.1, 150.0, 0.6)
    shift = 0.0031  # 4 % of the FWHM
    moved = bg + pseudo_voigt(x, 14.0 + shift, 0.08, 200.0, 0.4) + pseudo_voigt(x, 17.0 + shift, 0.1, 150.0, 0.6)
    sigma = np.sqrt(raw)
    ev = PowderPeaks(unit="2th_deg", n_peaks=2)
    r = _outcome(x, raw, sigma)
    ref = ev.reference(r)
    assert [round(f["x0"], 4) for f in ref["fits"]] == [14.0, 17.0]
    m = ev.compare(r, _outcome(x, moved, sigma), ref)
    assert m["peak_count"] == 2
    assert m["peak_shift_fwhm_max"] == pytest.approx(shift / 0.08, rel=1e-3)
    assert m["peak_fwhm_change_max"] < 1e-4 and m["peak_area_change_max"] < 1e-4
    assert ev.compare(r, r, ref)["peak_shift_fwhm_max"] == 0.0  # raw against itself: exactly nothing


def test_poisson_noise_alone_gives_reduced_chi2_of_one():
    rng = np.random.default_rng(3)
    expected = 200 + 5000 * np.exp(-np.linspace(-3, 3, 20000) ** 2)
    noisy = rng.poisson(expected).astype(float)
    dev = profile_deviation(noisy, expected, np.sqrt(noisy))
    assert dev["chi2_red"] == pytest.approx(1.0, abs=0.03)
    assert abs(dev["bias_sigma"]) < 0.03
    assert 3.0 < dev["max_dev_sigma"] < 6.0


def test_pipeline_sigma_is_the_counting_noise():
    """Through pyFAI: two Poisson realisations of one expected frame differ by sqrt(2) sigma per
    bin, i.e. reduced chi2 = 2 against one of them (1 per realisation)."""
    from lossbound.pipelines.azint.simulate import simulate_powder
    from lossbound.pipelines.azint.technique import AzintTechnique

    params = dict(bad_pixels=0, zingers=0, seed=5)
    (a,), ai = simulate_powder(**params)
    (b,), _ = simulate_powder(**{**params, "seed": 6})
    tech = AzintTechnique({"npt": 500})
    valid = (a >= 0) & (b >= 0) & (a < 1_000_000) & (b < 1_000_000)  # gaps, bad and hot pixels
    geo = ai.get_config()
    data = Dataset("sim", {"frames": a[None], "geometry": np.zeros(3)}, "frames", "memory",
                   meta={"geometry": geo}, mask=valid)
    ra = tech.run(data, {})
    rb = tech.run(data.with_payload(b[None]), {})
    dev = profile_deviation(ra["intensity"], rb["intensity"], ra["sigma"])
    assert dev["chi2_red"] == pytest.approx(2.0, rel=0.15)


def test_cubic_lattice_refinement_recovers_the_lattice_parameter():
    a = 5.41165
    n = np.array([3, 4, 8, 11, 12, 16, 19])  # fcc reflections
    d = a / np.sqrt(n)
    got, err, used = refine_cubic_lattice(d * (1 + 1e-6), np.full(n.size, 1e-5), a0=5.41)
    assert used == n.size and got == pytest.approx(a * (1 + 1e-6), rel=1e-9) and 0 < err < 1e-4
    # q in nm^-1 and 2-theta agree on d
    q = 20 * np.pi / d
    lam = 0.7e-10
    tth = np.rad2deg(2 * np.arcsin(lam * 1e10 / (2 * d)))
    np.testing.assert_allclose(d_spacing(q, "q_nm^-1", lam), d)
    np.testing.assert_allclose(d_spacing(tth, "2th_deg", lam), d)


def test_guinier_fit_recovers_rg_and_i0_and_refuses_a_rising_curve():
    q = np.linspace(0.01, 0.5, 400)
    i = 1000 * np.exp(-(q * 3.0) ** 2 / 3) + 1.0
    g = guinier_fit(q, i, np.sqrt(i))
    assert g is not None and g["rg"] == pytest.approx(3.0, rel=0.01) and g["i0"] == pytest.approx(1001, rel=0.01)
    assert guinier_fit(q, 1 + q, np.ones_like(q)) is None


def test_log_binned_ratio_reports_a_scale_change():
    q = np.geomspace(0.05, 5, 1000)
    i = 1e4 * q**-2
    out = log_binned_ratio(q, i, 1.01 * i, np.sqrt(i), n_bins=20)
    assert out["log_ratio_max"] == pytest.approx(math.log(1.01), rel=1e-6)
    assert log_binned_ratio(q, i, i, np.sqrt(i))["log_ratio_sigma_max"] == 0.0


def test_find_strong_peaks_ignores_noise_and_fit_peak_reports_errors():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 1000)
    y = rng.poisson(100 + pseudo_voigt(x, 5.0, 0.1, 200.0, 0.5)).astype(float)
    peaks = find_strong_peaks(x, y, np.sqrt(y), n_peaks=5)
    assert len(peaks) == 1 and abs(peaks[0]["start"]["x0"] - 5.0) < 0.02
    lo, hi = peaks[0]["window"]
    fit = fit_peak(x[lo:hi], y[lo:hi], np.sqrt(y[lo:hi]), start=peaks[0]["start"])
    assert abs(fit["x0"] - 5.0) < 4 * fit["x0_err"] and 0 < fit["x0_err"] < 0.01
