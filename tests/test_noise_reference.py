"""Noise-referenced tolerances: Poisson re-measurement, noise effects, derived ranges."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lossbound.core.errors import ConfigError, NotApplicable
from lossbound.core.noise import is_counts, poisson_resample
from lossbound.core.types import Dataset
from lossbound.study.executor import WorkerPool
from lossbound.criteria.noise_reference import NoiseSettings, noise_effects
from lossbound.criteria.tolerance import Tolerances
from lossbound.pipelines import TECHNIQUES


def test_poisson_resample_has_the_counting_variance_and_keeps_defects():
    rng = np.random.default_rng(1)
    frame = np.full((200, 200), 400, dtype=np.int32)
    frame[0, :] = -1                     # module gap sentinel
    frame[1, 0] = -2                     # bad pixel
    valid = frame >= 0
    draws = np.stack([poisson_resample(frame, rng, valid=valid) for _ in range(4)])
    assert draws.dtype == np.int32
    assert (draws[:, 0, :] == -1).all() and (draws[:, 1, 0] == -2).all()
    v = draws[:, 2:, :].astype(float)
    assert abs(v.mean() - 400) < 1.0
    assert abs(v.var() / 400 - 1) < 0.03          # Var = counts
    assert not np.array_equal(draws[0], draws[1])


def test_poisson_resample_with_gain_and_dark_offset_on_float_data():
    rng = np.random.default_rng(2)
    g, dark = 0.25, 100.0
    x = np.full((100, 100), dark + 1000.0, dtype=np.float32)   # 1000 ADU = 4000 photons
    y = poisson_resample(x, rng, offset=dark, adu_per_photon=g)
    assert y.dtype == np.float32
    assert abs(y.mean() - x.mean()) < 0.5
    assert abs(y.var() / (g * 1000.0) - 1) < 0.05             # Var = g * signal (ADU^2)
    assert np.allclose((y - dark) / g, np.round((y - dark) / g), atol=1e-3)   # whole photons


def test_counts_are_recognised_and_other_data_are_not():
    assert is_counts(np.array([0, 3, 7], dtype=np.uint16))
    assert is_counts(np.array([[-1, 3], [7, 0]], dtype=np.int32), np.array([[False, True], [True, True]]))
    assert not is_counts(np.array([-1, 3], dtype=np.int32))
    assert not is_counts(np.array([0.5, 3.0], dtype=np.float32))
    assert is_counts(np.array([1.0, 3.0], dtype=np.float32))


def test_a_technique_without_a_model_for_non_count_data_says_why():
    azint = TECHNIQUES.get("azint")({})
    data = Dataset(name="f", arrays={"frames": np.full((1, 4, 4), 0.5, np.float32)}, payload="frames", source="x")
    with pytest.raises(NotApplicable, match="not photon counts"):
        azint.noise_model(data)


def test_tomography_models_float_projections_with_the_declared_gain():
    tomo = TECHNIQUES.get("tomo")({})
    rng = np.random.default_rng(0)
    proj = np.full((4, 2, 8), 5100.25, np.float32)
    data = Dataset(name="t", arrays={"projections": proj, "darks": np.full((3, 2, 8), 100.0, np.float32)},
                   payload="projections", source="x", meta={"adu_per_photon": 0.25, "n_darks": 3})
    assert "g = 0.25" in tomo.noise_model(data)
    out = tomo.resample(data, rng).payload_array
    assert out.dtype == np.float32 and out.shape == proj.shape and not np.array_equal(out, proj)
    assert np.allclose((out - 100) * 4, np.round((out - 100) * 4), atol=1e-2)


def test_noise_effect_is_the_mean_distance_from_the_ideal():
    eff = noise_effects({"f1": [0.9, 0.8], "nan": [1.0, math.nan]}, {"f1": 1.0, "nan": 1.0})
    assert eff["f1"]["effect"] == pytest.approx(0.15) and eff["f1"]["resamples"] == 2
    assert eff["f1"]["effect_sd"] == pytest.approx(0.05)   # std(ddof=1) 0.0707 / sqrt(2)
    assert math.isnan(eff["nan"]["effect"])


def test_noise_factor_replaces_the_fixed_range_only_where_a_reference_exists():
    config = {"f1": {"min": 0.95, "noise": 0.5}, "shift": {"max": 0.1, "noise": 0.5},
              "bias": {"min": -0.1, "max": 0.1}, "only_noise": {"noise": 1.0}}
    fixed = Tolerances(config)
    assert {c.metric: (c.min, c.max) for c in fixed} == {"f1": (0.95, None), "shift": (None, 0.1),
                                                          "bias": (-0.1, 0.1)}
    assert fixed.noise_factors == {"f1": 0.5, "shift": 0.5, "only_noise": 1.0}
    noise = {"f1": {"effect": 0.2, "effect_sd": 0.01, "ideal": 1.0, "resamples": 4},
             "shift": {"effect": math.nan, "ideal": 0.0}, "only_noise": {"effect": 0.3, "ideal": 0.0}}
    tol = fixed.with_noise(noise)
    ranges = {c.metric: (c.min, c.max) for c in tol}
    assert ranges["f1"] == (pytest.approx(0.9), None)                      # 1 - 0.5 * 0.2
    assert ranges["shift"] == (None, 0.1)                                  # undefined effect: fixed
    assert ranges["only_noise"] == (pytest.approx(-0.3), pytest.approx(0.3))   # no side given: both
    assert not tol.check({"f1": 0.89, "shift": 0, "bias": 0, "only_noise": 0}).passed
    assert tol.check({"f1": 0.91, "shift": 0, "bias": 0, "only_noise": 0.29}).passed
    limits = tol.noise_limits()
    assert limits["f1"]["noise_effect"] == 0.2 and limits["f1"]["fixed_min"] == 0.95
    assert limits["shift"]["fixed_used"] == "undefined on the re-samplings"
    # what combines datasets is the configuration, not one dataset's derived numbers
    assert tol.as_dict() == fixed.as_dict() and tol.as_dict()["f1"] == {"min": 0.95, "noise": 0.5}
    assert "0.5 x counting-noise effect" in next(c for c in tol if c.metric == "f1").describe()


def test_a_noise_effect_too_uncertain_for_its_k_keeps_the_fixed_range():
    noise = {"cell": {"effect": 0.0085, "effect_sd": 0.0084, "ideal": 0.0, "resamples": 4},
             "f1": {"effect": 0.14, "effect_sd": 0.0015, "ideal": 1.0, "resamples": 4},
             "hit": {"effect": 0.0, "effect_sd": 0.0, "ideal": 1.0, "resamples": 4}}
    tol = Tolerances({"cell": {"max": 0.002, "noise": 0.5}, "f1": {"min": 0.95, "noise": 0.5},
                      "hit": {"min": 1.0, "noise": 0.5}}).with_noise(noise, max_relative_se=0.5)
    ranges = {c.metric: (c.min, c.max) for c in tol}
    assert ranges["cell"] == (None, 0.002) and "too uncertain with K=4" in tol.noise_limits()["cell"]["fixed_used"]
    assert ranges["f1"] == (pytest.approx(0.93), None)
    assert ranges["hit"] == (1.0, None)            # noise never flips a call: no change allowed


def test_tomography_without_a_gain_has_no_model():
    # one flat and no declared gain: no gain at all, so no yardstick (never a guessed g = 1)
    tomo = TECHNIQUES.get("tomo")({})
    data = Dataset(name="t", arrays={"projections": np.full((2, 2, 4), 10, np.uint16),
                                     "darks": np.zeros((1, 2, 4), np.float32)}, payload="projections", source="x",
                   meta={"adu_per_photon": None, "adu_per_photon_declared": None,
                         "adu_per_photon_measured": {"gain": None, "reason": "1 flat(s): the photon transfer needs "
                                                                             "at least two"}})
    with pytest.raises(NotApplicable, match="no gain for the projections .1 flat"):
        tomo.noise_model(data)


@pytest.mark.parametrize("bad", [{"min": 1, "noise": 0}, {"noise": "half"}, {"min": 1, "sigma": 2}])
def test_a_bad_noise_factor_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="tolerance 'x'|tolerance x"):
        Tolerances({"x": bad})


def test_noise_settings_are_checked():
    assert NoiseSettings.from_config({"mode": "auto", "resamples": 3}).resamples == 3
    assert NoiseSettings.from_config({"mode": False}).mode == "off"
    for bad in ({"mode": "sometimes"}, {"resamples": 1}, {"k": 4}, {"resamples": "many"}, {"max_relative_se": 0}):
        with pytest.raises(ConfigError, match="noise_reference"):
            NoiseSettings.from_config(bad)


def test_worker_processes_measure_the_same_noise_reference_as_one_process(tmp_path, monkeypatch, caplog):
    """The re-samplings are drawn in order from one seeded generator in the study's process,
    whichever process evaluates them: with worker processes the values are the sequential
    ones (to the last bits a different BLAS thread count sums in another order)."""
    import time

    from omegaconf import OmegaConf

    from conftest import compose, small_sim_overrides
    from lossbound.study import context

    cfg = compose(small_sim_overrides(tmp_path) + ["technique.noise_reference.resamples=3"])

    def spec(cache: str) -> context.ContextSpec:
        return context.ContextSpec(technique=OmegaConf.to_container(cfg.technique, resolve=True),
                                   dataset=OmegaConf.to_container(cfg.dataset, resolve=True),
                                   cache_dir=str(tmp_path / cache))

    one = context.build_context(spec("one")).noise
    context.forget_contexts()
    # Slow this process down (not the workers, fresh processes) so a worker, seconds to
    # start, gets re-samplings to do: the tiny simulation would otherwise all run here.
    evaluate_payload = context.RawPart.evaluate_payload

    def slow(self, payload):
        time.sleep(6.0)
        return evaluate_payload(self, payload)

    monkeypatch.setattr(context.RawPart, "evaluate_payload", slow)
    with caplog.at_level("INFO", logger="lossbound.study.executor"), \
            WorkerPool(spec("two"), workers=2) as pool:
        two = context.build_context(spec("two"), pool=pool).noise
    context.forget_contexts()
    shared = [r.getMessage() for r in caplog.records if "re-samplings:" in r.getMessage()]
    assert shared and " 0 in 2 worker" not in shared[0], shared   # the pool evaluated some
    assert not one.cached and not two.cached
    assert one.values.keys() == two.values.keys() and len(one.values["recon_psnr"]) == 3
    for metric, values in one.values.items():
        assert two.values[metric] == pytest.approx(values, rel=1e-9, abs=1e-12, nan_ok=True), metric


@pytest.mark.parametrize("workers", [2, 3])
def test_a_short_noise_reference_never_waits_for_a_worker_still_starting(tmp_path, caplog, workers):
    """Tiny data: this process evaluates every re-sampling before a worker could start, and
    does not wait for one (with 3 workers, two payloads are taken back from the pool)."""
    from omegaconf import OmegaConf

    from conftest import compose, small_sim_overrides
    from lossbound.study import context

    cfg = compose(small_sim_overrides(tmp_path) + ["technique.noise_reference.resamples=4"])
    spec = context.ContextSpec(technique=OmegaConf.to_container(cfg.technique, resolve=True),
                               dataset=OmegaConf.to_container(cfg.dataset, resolve=True),
                               cache_dir=str(tmp_path / "cache"))
    context.raw_part(spec)  # the raw result, as a study computes it first
    with caplog.at_level("INFO", logger="lossbound.study.executor"), WorkerPool(spec, workers=workers) as pool:
        noise = context.build_context(spec, pool=pool).noise
    context.forget_contexts()
    assert noise.available, noise.unavailable
    assert len(noise.values["recon_psnr"]) == 4
    # all here: those handed to the pool were taken back, not waited for (Python alone takes
    # longer to start than the four re-samplings of the tiny simulation)
    assert any(f"4 here, 0 in {workers} worker" in r.getMessage() for r in caplog.records), caplog.text


def test_the_flats_photon_transfer_measures_the_cameras_gain():
    from lossbound.pipelines.tomo.gain import photon_transfer
    from lossbound.pipelines.tomo.simulate import simulate_tomo

    scan = simulate_tomo(n_angles=20, n_rows=16, n_cols=96)           # 1 ADU per photon, read noise 2.5 ADU
    got = photon_transfer(scan["flats"], scan["darks"])
    assert got["gain"] == pytest.approx(1.0, abs=0.03) and got["read_noise_adu"] == pytest.approx(2.5, rel=0.1)
    # the same photons read at 4 ADU per photon (and 4x the read noise)
    dark = scan["darks"].astype(float).mean()
    scaled = photon_transfer(dark + 4 * (scan["flats"].astype(float) - dark), dark + 4 * (scan["darks"] - dark))
    assert scaled["gain"] == pytest.approx(4.0, rel=0.03)
    one = photon_transfer(scan["flats"][:1], scan["darks"])
    assert one["gain"] is None and "needs at least two" in one["reason"]


def test_a_declared_gain_is_used_and_checked_against_the_flats(tmp_path, caplog):
    import logging

    from conftest import compose, small_sim_overrides
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose(small_sim_overrides(tmp_path)), resolve=True)
    tomo = TECHNIQUES.get("tomo")(cfg["technique"]["pipeline"])
    data = tomo.load(cfg["dataset"])                                  # declares 1.0, as the simulation counts
    assert data.meta["adu_per_photon"] == 1.0 and "disagree" not in data.meta["gain_note"]
    assert tomo.noise_checks(data)["gain_measured"] == pytest.approx(1.0, abs=0.03)
    with caplog.at_level(logging.WARNING):
        wrong = tomo.load({**cfg["dataset"], "adu_per_photon": 0.25})
    assert wrong.meta["adu_per_photon"] == 0.25 and "disagree by" in wrong.meta["gain_note"]
    assert "disagree" in caplog.text
    measured = tomo.load({**cfg["dataset"], "adu_per_photon": None})
    assert measured.meta["adu_per_photon"] == pytest.approx(1.0, abs=0.03)
    assert "measured by the flats' photon transfer" in tomo.noise_model(measured)
    assert tomo.data_key(measured) != tomo.data_key(data)               # another gain, another raw result


def test_counts_that_do_not_behave_like_photons_are_flagged(tmp_path):
    from conftest import compose
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose(["technique=azint", f"paths.reference_data={tmp_path}",
                                          "dataset.simulation.detector=Pilatus300k",
                                          "dataset.simulation.poni_px=[300,240]",
                                          "dataset.simulation.distance_mm=120"]), resolve=True)
    azint = TECHNIQUES.get("azint")(cfg["technique"]["pipeline"])
    data = azint.load(cfg["dataset"])
    ok = azint.noise_checks(data)
    assert ok["dispersion"] == pytest.approx(1.0, abs=0.1) and "warning" not in ok
    scaled = azint.noise_checks(data.with_payload(data.payload_array * 3))   # e.g. a summed or scaled file
    assert scaled["dispersion"] == pytest.approx(3.0, rel=0.15) and "do not behave like photon counts" in scaled["warning"]
