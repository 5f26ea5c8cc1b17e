"""The noise yardstick against simulations whose truth is known (lossbound.cli.calibrate).

On small versions of the built-in simulations: the true effect of one dose of counting noise
(the true result against independent measurements) and what the study's estimator (Poisson
re-sampling of one measurement) makes of it must agree within [0.8, 1.25] for every
noise-referenced criterion; a fixed criterion says why it is fixed. The measurements are
seeded: the ratios are the same on every run.
"""
from __future__ import annotations

import math

import pytest

from conftest import small_sim_overrides
from lossbound.cli.calibrate import compose  # resolved, as the command composes it
from lossbound.study.calibrate import RATIO_RANGE, CriterionCalibration, calibrate, format_line
from lossbound.study.context import ContextSpec, forget_contexts


def _calibrate(overrides: list[str], *, truths: int, estimates: int, workers: int = 1):
    cfg = compose(overrides)
    forget_contexts()
    spec = ContextSpec(technique=cfg["technique"], dataset=cfg["dataset"], cache_dir=cfg["paths"]["cache_dir"])
    return calibrate(spec, truths=truths, estimates=estimates, workers=workers, progress=False), cfg


def _check(rows, cfg):
    tolerances = cfg["technique"]["tolerances"]
    calibrated = [r for r in rows if r.fixed is None]
    assert calibrated, "no criterion was calibrated"
    for r in calibrated:
        assert tolerances[r.criterion].get("noise"), r.criterion
        assert r.true > 0 and r.estimated > 0 and math.isfinite(r.ratio)
        assert RATIO_RANGE[0] <= r.ratio <= RATIO_RANGE[1], format_line(r)
    for r in rows:
        if r.fixed is not None and not tolerances[r.criterion].get("noise"):
            assert tolerances[r.criterion].get("why") and r.fixed == tolerances[r.criterion]["why"], r.criterion
    return {r.criterion: r for r in calibrated}


def test_tomography_yardstick_matches_the_truth(tmp_path):
    rows, cfg = _calibrate(small_sim_overrides(tmp_path), truths=40, estimates=8)
    got = _check(rows, cfg)
    assert set(got) == {"seg_dice_min"}
    line = format_line(got["seg_dice_min"])
    assert line.startswith("yardstick tomo seg_dice_min true=") and " estimated=" in line and " ratio=" in line


def test_powder_yardstick_matches_the_truth(tmp_path):
    overrides = ["technique=azint", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.reference_data={tmp_path}",
                 "dataset.simulation.detector=Pilatus300k", "dataset.simulation.poni_px=[300,240]",
                 "dataset.simulation.distance_mm=120"]
    rows, cfg = _calibrate(overrides, truths=80, estimates=6, workers=2)
    got = _check(rows, cfg)
    assert {"profile_chi2_red_frames", "profile_max_dev_sigma_frames", "peak_shift_fwhm_max",
            "peak_fwhm_change_max", "peak_area_change_max"} <= set(got)
    assert got["profile_chi2_red_frames"].true == pytest.approx(1.0, abs=0.05)   # chi2 of one dose: 1
    fixed = {r.criterion: r.fixed for r in rows if r.fixed is not None}
    assert "not applicable" in fixed["guinier_rg_change"]        # a powder frame has no Guinier region


def test_saxs_yardstick_matches_the_truth(tmp_path):
    overrides = ["technique=azint", "dataset=sim_saxs", f"paths.runs_dir={tmp_path / 'runs'}",
                 f"paths.reference_data={tmp_path}"]
    rows, cfg = _calibrate(overrides, truths=60, estimates=6, workers=2)
    got = _check(rows, cfg)
    assert {"saxs_log_ratio_sigma_max", "guinier_rg_change", "guinier_i0_change"} <= set(got)


@pytest.mark.slow
def test_serial_crystallography_yardstick_matches_the_truth(tmp_path):
    overrides = ["technique=sx", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.reference_data={tmp_path}",
                 "dataset.simulation.n_frames=3", "dataset.simulation.misses=[1]"]
    rows, cfg = _calibrate(overrides, truths=12, estimates=3, workers=2)
    got = _check(rows, cfg)
    assert {"spot_centroid_shift_frames", "refl_cc_strong_frames", "refl_r_strong_frames"} <= set(got)
    fixed = {r.criterion: r.fixed for r in rows if r.fixed is not None}
    assert "1.99" in fixed["spot_f1_frames"]      # the measured reason it is fixed


def test_lines_say_what_they_measured_and_flag_a_ratio_outside_the_range():
    inside = CriterionCalibration("sx", "refl_r_strong_frames", kind="frames", true=0.08, true_se=0.001,
                                  estimated=0.0792, estimated_se=0.002, frames=4, spread=0.05)
    assert format_line(inside) == ("yardstick sx refl_r_strong_frames true=0.08±0.001 estimated=0.0792±0.002 "
                                   "ratio=0.99 spread=5% (per frame, 4 frames pooled)")
    outside = CriterionCalibration("sx", "spot_f1_frames", true=0.06, true_se=0.001, estimated=0.12, estimated_se=0.002)
    assert not outside.inside and "OUTSIDE [0.8, 1.25]" in format_line(outside)
    fixed = CriterionCalibration("sx", "hit_agreement", fixed="triage must not change")
    assert format_line(fixed) == "yardstick sx hit_agreement fixed (triage must not change)"
