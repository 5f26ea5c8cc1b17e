"""Verdicts an expert can defend: per-frame criteria, declared scaling, noise effects used only
when known, adaptive K, the bound's range and confirmation, dataset identity and what combines."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lossbound.core.types import Dataset, Outcome, PointResult
from lossbound.criteria.noise_reference import NoiseSettings, measure
from lossbound.search.bisect import BisectSearch
from lossbound.results.thresholds import (curve_threshold, resolve_dataset_name, spec_differences,
                                        update_thresholds)
from lossbound.criteria.tolerance import Tolerances, from_record
from lossbound.pipelines.base import Technique, dataset_name


def _ref(effect, sd, ideal, k=8, lost=0):
    return {"effect": effect, "effect_sd": sd, "ideal": ideal, "resamples": k, "lost": lost}


# -- per-frame criteria ----------------------------------------------------------------------------
def _frames_tol(frames=None, **spec):
    cfg = {"angle_frames": {"max": 0.1, "noise": 0.5, **({"frames": frames} if frames else {}), **spec}}
    tol = Tolerances(cfg).bind(ideal={}, frame_ideal={"angle_frames": [0.0, 0.0, 0.0, math.nan]})
    # frame 0 a quiet one, frame 1 a multi-lattice one that noise moves a lot, frame 2 zero
    # effect (counting noise never moved it), frame 3 not indexed on the raw data (not judged)
    noise = [_ref(0.02, 0.002, 0.0), _ref(0.5, 0.05, 0.0), _ref(0.0, 0.0, 0.0), _ref(math.nan, math.nan, math.nan)]
    return tol.with_noise({}, frame_noise={"angle_frames": noise}, target_se=0.15)


def test_each_frame_is_judged_against_its_own_noise_effect():
    tol = _frames_tol()
    (c,) = tol.criteria
    assert c.kind == "frames" and int(c.judged.sum()) == 3            # the unindexed frame is not judged
    assert c.allow_hi[0] == pytest.approx(0.01) and c.allow_hi[1] == pytest.approx(0.25)
    assert c.source[2] == "fixed" and c.allow_hi[2] == pytest.approx(0.1)   # zero effect: never a zero width
    # the odd frame's large allowance does not loosen the quiet one
    assert tol.check({}, {"angle_frames": [0.009, 0.24, 0.05, 3.0]}).passed
    v = tol.check({}, {"angle_frames": [0.02, 0.0, 0.0, 0.0]})
    assert not v.passed and "1 of 3 frames outside" in v.failures[0] and "worst frame 0" in v.failures[0]
    # a frame the compressed data lose (undefined) is outside
    assert not tol.check({}, {"angle_frames": [0.0, math.nan, 0.0, 0.0]}).passed
    assert "zero: counting noise never changed it" in tol.noise_limits()["angle_frames"]["fixed_used"]


def test_a_fraction_of_frames_may_be_required_instead_of_all():
    tol = _frames_tol(frames=0.6)
    values = {"angle_frames": [0.02, 0.1, 0.05, 0.0]}     # frame 0 out, 2 of 3 in
    assert tol.check({}, values).passed
    assert not _frames_tol(frames=1.0).check({}, values).passed


def test_a_per_frame_criterion_uses_the_order_statistic_its_rule_looks_at():
    (c,) = _frames_tol(frames=0.6).criteria
    # ratios: frame 0 0.02/0.01 = 2, frame 1 0.1/0.25 = 0.4, frame 2 0.05/0.1 = 0.5 -> sorted .4 .5 2
    assert c.use([0.02, 0.1, 0.05, 0.0]) == pytest.approx(0.5)
    (c1,) = _frames_tol(frames=1.0).criteria
    assert c1.use([0.02, 0.1, 0.05, 0.0]) == pytest.approx(2.0)
    # +1 standard error loosens every noise-referenced allowance by its own relative error
    assert c1.use([0.02, 0.1, 0.05, 0.0], edge=1.0) == pytest.approx(0.02 / 0.011)


# -- scaling, uncertainty, zero ----------------------------------------------------------------------
def test_a_quadratic_metric_gets_the_square_of_the_amplitude_factor():
    noise = {"chi2": _ref(1.0, 0.05, 0.0), "shift": _ref(1.0, 0.05, 0.0)}
    tol = Tolerances({"chi2": {"max": 1, "noise": 0.5}, "shift": {"max": 1, "noise": 0.5}}).bind(
        ideal={"chi2": 0.0, "shift": 0.0}, scaling={"chi2": 2}).with_noise(noise, target_se=0.15)
    ranges = {c.metric: c.max for c in tol}
    assert ranges == {"chi2": pytest.approx(0.25), "shift": pytest.approx(0.5)}


def test_an_effect_not_known_to_the_target_or_lost_to_noise_keeps_the_fixed_range():
    noise = {"a": _ref(0.1, 0.02, 0.0), "b": _ref(0.1, 0.01, 0.0), "c": _ref(0.1, 0.01, 0.0, k=10, lost=3)}
    tol = Tolerances({m: {"max": 0.3, "noise": 0.5} for m in "abc"}).bind(
        ideal=dict.fromkeys("abc", 0.0)).with_noise(noise, target_se=0.15)
    ranges = {c.metric: c.max for c in tol}
    assert ranges["a"] == 0.3 and "relative standard error 20% > 15%" in tol.noise_limits()["a"]["fixed_used"]
    assert ranges["b"] == pytest.approx(0.05)
    assert ranges["c"] == 0.3 and "loses the metric in 3 of K=10" in tol.noise_limits()["c"]["fixed_used"]


class _Toy(Technique):
    """A pipeline whose result is the payload's mean: its noise effect is known in closed form."""

    name = "toy"

    def load(self, dataset_config):  # pragma: no cover - not used
        raise NotImplementedError

    def run(self, data, prepared):
        return {"mean": np.asarray(data.payload_array, float).mean(axis=(1, 2))}


def _toy_evaluate(raw):
    def evaluate(comp):
        d = comp.result["mean"] - raw.result["mean"]
        return {"shift": float(abs(d).mean()), "noisy": float(abs(d[0]) * (1 + 3 * (abs(d[0]) > 0.05))),
                "shift_frames": np.abs(d)}
    return evaluate


def test_k_grows_until_every_used_effect_is_known_and_stops_at_the_cap():
    rng = np.random.default_rng(0)
    frames = rng.poisson(50, size=(3, 20, 20)).astype(np.int32)
    data = Dataset(name="toy", arrays={"f": frames}, payload="f", source="x")
    tech = _Toy({})
    raw = Outcome(data, tech.run(data, {}))
    ideal, frame_ideal = {"shift": 0.0, "noisy": 0.0}, {"shift_frames": [0.0, 0.0, 0.0]}
    settings = NoiseSettings(resamples=4, max_resamples=40, target_se=0.15)
    doc = measure(tech, raw, {}, _toy_evaluate(raw), settings, ideal=ideal, frame_ideal=frame_ideal,
                  used={"shift_frames": "frames"})
    # a half-normal |shift| per frame has a coefficient of variation of 0.76: ~26 re-samplings
    assert 20 <= doc["resamples"] <= 40 and doc["steps"][0] == 4 and doc["resamples"] >= doc["resamples_needed"]
    again = measure(tech, raw, {}, _toy_evaluate(raw), settings, ideal=ideal, frame_ideal=frame_ideal,
                    used={"shift_frames": "frames"})
    assert again["values"] == doc["values"]                      # the same draws, the same K
    capped = measure(tech, raw, {}, _toy_evaluate(raw), NoiseSettings(resamples=4, max_resamples=6, target_se=0.15),
                     ideal=ideal, frame_ideal=frame_ideal, used={"shift_frames": "frames"})
    # an effect the cap cannot resolve does not make K grow (it keeps its fixed range anyway)
    assert capped["resamples"] == 4 and capped["resamples_needed"] > 6


# -- the bound's uncertainty and its confirmation ------------------------------------------------------
def _curve(values, *, effect_se=0.1):
    """Points whose `err` grows like the bound; tolerance: 0.5 x noise effect 1 (+- effect_se)."""
    tol = Tolerances({"err": {"max": 1.0, "noise": 0.5}}).bind(ideal={"err": 0.0}).with_noise(
        {"err": _ref(1.0, effect_se, 0.0)}, target_se=0.5)
    pts = []
    for v in values:
        p = PointResult(point_id=str(v), label=str(v), setting={"codec": "sz3", "mode": "absolute", "value": v,
                                                               "input_dtype": None, "chunks": None},
                        lossy=True, metrics={"err": v / 40.0},
                        codec={"plugin_class": "SZ3", "plugin_kwargs": {}, "ratio": 2.0, "bound_held": True})
        v_ = tol.check(p.metrics)
        p.passed, p.failures = v_.passed, list(v_.failures)
        pts.append(p)
    return pts, tol


def test_every_threshold_has_a_range_from_the_tolerance_error_and_says_if_confirmed():
    pts, tol = _curve([2, 4, 8, 16, 22.6, 32])   # crossing at err = 0.5: bound 20
    e = curve_threshold(pts, criteria=["err"], tolerances=tol)
    assert e["bound"] == 16 and e["first_failure"]["bound"] == 22.6
    assert e["limiting_criterion"] == "err"
    lo, hi = e["bound_range"]
    assert lo == pytest.approx(18, rel=0.02) and hi == pytest.approx(22, rel=0.02)   # 20 * (1 -/+ 0.1)
    assert e["confirmed"] and e["confirmed_by"] == [2, 4, 8]
    e2 = curve_threshold(pts[3:], criteria=["err"], tolerances=tol)   # only 16 passed, nothing below it
    assert e2["bound"] == 16 and not e2["confirmed"]


def test_bisection_verifies_a_closed_bracket_and_a_failure_below_reopens_it():
    tol = Tolerances({"err": {"max": 0.5}})
    search = BisectSearch(grows=True, integer=False, tolerances=tol, ideal={"err": 0.0})

    def point(v, passed):
        p = PointResult(point_id=str(v), label=str(v), setting={"value": v}, lossy=True, metrics={})
        p.passed = passed
        return p

    known = {64.0: point(64.0, True), 90.0: point(90.0, False)}
    first = search.propose(known, [])
    assert first and first[0] <= 32 and all(v < 64 for v in first)     # at most half first
    assert not search.confirmed(known)
    known[first[0]] = point(first[0], False)                           # the verification fails
    lo, hi = search.bracket_state(known)
    assert lo is None and hi == pytest.approx(math.log(first[0]))     # the bracket moved below it
    assert search.propose(known, [])                                   # and the search goes on


def test_a_measured_non_integer_power_sets_the_allowance_and_survives_the_record():
    """ptycho's amplitude change scales as the 0.7 power of an error: 0.5**0.7 of the effect
    (an int() once made it 0.5**0, a 1.6x looser allowance)."""
    tol = Tolerances({"amp": {"max": 1.0, "noise": 0.5}}).bind(ideal={"amp": 0.0}, scaling={"amp": 0.7}).with_noise(
        {"amp": _ref(0.02, 0.001, 0.0)}, target_se=0.5)
    allowed = 0.5**0.7 * 0.02
    assert tol.check({"amp": 0.99 * allowed}).passed and not tol.check({"amp": 1.01 * allowed}).passed
    rec = next(r for r in tol.record() if r["metric"] == "amp")
    again = from_record(rec)
    assert again.noise.power == 0.7 and again.noise.allowance == pytest.approx(allowed)


def test_two_passes_below_the_threshold_but_none_half_as_lossy_ask_for_the_half():
    """sim_ptycho's SPERR: 0.25 and 0.32 passed below 0.42 (the bracket's least lossy end
    was 0.25); the half-as-lossy value was never proposed and the threshold stayed unconfirmed."""
    search = BisectSearch(grows=True, integer=False, tolerances=Tolerances({"err": {"max": 0.5}}))

    def point(v, passed):
        return PointResult(point_id=str(v), label=str(v), setting={"value": v}, lossy=True, passed=passed)

    known = {v: point(v, v < 0.5) for v in (0.25, 0.3242, 0.4204, 0.5453, 8.0)}
    assert not search.confirmed(known)
    proposed = search.propose(known, [])
    assert len(proposed) == 1 and proposed[0] <= 0.4204 / 2
    known[proposed[0]] = point(proposed[0], True)
    assert search.confirmed(known) and search.propose(known, []) == []


def test_an_integer_threshold_at_the_codecs_limit_cannot_be_confirmed():
    search = BisectSearch(grows=True, integer=True, tolerances=Tolerances({"err": {"max": 0.5}}))
    p1 = PointResult(point_id="1", label="1", setting={"value": 1.0}, lossy=True, passed=True)
    p2 = PointResult(point_id="2", label="2", setting={"value": 2.0}, lossy=True, passed=False)
    known = {1.0: p1, 2.0: p2}
    assert search.propose(known, []) == [] and not search.confirmed(known)
    assert search.at_limit(1.0) and not search.at_limit(2.0)


# -- dataset identity and what combines --------------------------------------------------------------
def test_a_dataset_is_named_by_its_name_or_its_file_or_folder(tmp_path):
    (tmp_path / "run7").mkdir()
    assert dataset_name({"name": "tooth"}, "/x/y.h5") == ("tooth", True)
    assert dataset_name({}, "/data/scan.h5") == ("scan", False)
    assert dataset_name({}, "/data/frame_001.cbf.bz2") == ("frame_001", False)
    assert dataset_name({}, "/data/run7/*.cbf") == ("run7", False)
    assert dataset_name({}, tmp_path / "run7") == ("run7", False)


def _entry(name, sha, source, bound, spec):
    return {"dataset": {"name": name, "source": source, "sha256": sha}, "tolerances": spec["tolerances"],
            "verdict_spec": spec, "codecs": {"sz3": {"codec": "sz3", "mode": "absolute", "bound": bound,
                                                     "larger_means_more_loss": True, "confirmed": True}}}


def test_two_users_files_with_one_stem_never_overwrite_each_other(tmp_path):
    path = tmp_path / "tomo.yaml"
    spec = {"tolerances": {"a": {"max": 1.0}}, "noise": {"K": 4}, "pipeline": {"p": 1}}
    name = resolve_dataset_name(path, name="scan", given=False, sha256="a" * 64, source="/u1/scan.h5")
    update_thresholds(path, technique="tomo", dataset_name=name, entry=_entry(name, "a" * 64, "/u1/scan.h5", 60, spec))
    second = resolve_dataset_name(path, name="scan", given=False, sha256="b" * 64, source="/u2/scan.h5")
    assert (name, second) == ("scan", "scan-2")
    doc = update_thresholds(path, technique="tomo", dataset_name=second,
                            entry=_entry(second, "b" * 64, "/u2/scan.h5", 70, spec))
    assert set(doc["datasets"]) == {"scan", "scan-2"}
    assert doc["codecs"]["sz3"]["bound"] == 60 and doc["codecs"]["sz3"]["limiting_dataset"] == "scan"
    # the same file again (content changed) replaces its own entry; a given name is kept as given
    assert resolve_dataset_name(path, name="scan", given=False, sha256="c" * 64, source="/u2/scan.h5") == "scan-2"
    assert resolve_dataset_name(path, name="scan", given=True, sha256="d" * 64, source="/u3/scan.h5") == "scan"


def test_only_datasets_under_the_same_verdict_spec_combine_and_the_others_say_why(tmp_path):
    path = tmp_path / "tomo.yaml"
    spec = {"tolerances": {"a": {"max": 1.0}}, "noise": {"resamples": 4, "used": True}, "pipeline": {"p": 1}}
    other = {**spec, "noise": {"resamples": 8, "used": True}}
    update_thresholds(path, technique="tomo", dataset_name="one", entry=_entry("one", "a" * 64, "/1", 60, other))
    doc = update_thresholds(path, technique="tomo", dataset_name="two", entry=_entry("two", "b" * 64, "/2", 70, spec))
    combined = doc["codecs"]["sz3"]
    assert combined["bound"] == 70 and set(combined["per_dataset"]) == {"two"}
    assert "noise reference" in combined["excluded_datasets"]["one"] and "resamples" in combined["excluded_datasets"]["one"]
    assert spec_differences(spec, spec) == []
    # the powers count where both specs record them (ptycho's amplitude: 1 before, 0.7 measured)
    assert spec_differences({**spec, "scaling": {"a": 1}}, {**spec, "scaling": {"a": 0.7}}) == [
        "scaling powers of the noise-referenced criteria differ: a"]
    assert spec_differences(spec, {**spec, "scaling": {"a": 0.7}}) == []
