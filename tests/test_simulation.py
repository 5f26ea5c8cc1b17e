"""The built-in tomography simulation: determinism, detector realism, ground truth, file round trip."""

from __future__ import annotations

import numpy as np
import pytest

from lossbound.pipelines.tomo.simulate import (
    MATERIALS,
    read_simulation_attrs,
    simulate_tomo,
    simulation_params,
    write_dataexchange,
)
from lossbound.pipelines.tomo.io import read_dataexchange, read_ground_truth

SMALL = dict(n_angles=90, n_rows=6, n_cols=128, n_flats=12, n_darks=12)
CLEAN = dict(dead_pixels=0, hot_pixels=0, zingers=0)  # the statistics below are of working pixels


@pytest.fixture(scope="module")
def sim() -> dict[str, np.ndarray]:
    return simulate_tomo(**SMALL, **CLEAN)


def test_deterministic_for_a_seed(sim):
    again = simulate_tomo(**SMALL, **CLEAN)
    for key in sim:
        np.testing.assert_array_equal(again[key], sim[key], err_msg=key)


def test_other_seed_is_another_measurement_of_the_same_sample(sim):
    other = simulate_tomo(**SMALL, **CLEAN, seed=1)
    assert not np.array_equal(other["projections"], sim["projections"])
    assert not np.array_equal(other["flats"], sim["flats"])
    np.testing.assert_array_equal(other["phantom"], sim["phantom"])
    relayout = simulate_tomo(**SMALL, **CLEAN, layout_seed=1)
    assert not np.array_equal(relayout["labels"], sim["labels"])


def test_shapes_and_dtypes(sim):
    n_angles, n_rows, n_cols = SMALL["n_angles"], SMALL["n_rows"], SMALL["n_cols"]
    assert sim["projections"].shape == (n_angles, n_rows, n_cols)
    assert sim["flats"].shape == (SMALL["n_flats"], n_rows, n_cols)
    assert sim["darks"].shape == (SMALL["n_darks"], n_rows, n_cols)
    for key in ("projections", "flats", "darks"):
        assert sim[key].dtype == np.uint16, key
    assert sim["theta"].dtype == np.float64
    np.testing.assert_allclose(sim["theta"], np.arange(n_angles) * 180.0 / n_angles)
    assert sim["phantom"].shape == sim["labels"].shape == (n_rows, n_cols, n_cols)
    assert sim["phantom"].dtype == np.float32 and sim["labels"].dtype == np.uint8
    assert float(sim["center"]) == pytest.approx((n_cols - 1) / 2 + 1.7)


def test_counts_have_realistic_ranges(sim):
    darks = sim["darks"].astype(np.float64)
    flats = sim["flats"].astype(np.float64)
    assert darks.mean() == pytest.approx(100.0, abs=2.0)
    # Read noise: frame-to-frame spread of the darks (fixed offsets removed by the per-pixel mean).
    assert darks.std(axis=0, ddof=1).mean() == pytest.approx(2.5, rel=0.15)
    assert (flats.mean() - darks.mean()) == pytest.approx(20000.0, rel=0.02)
    assert flats.max() < 30000
    # Beam profile: smooth fall-off towards the edges, a few percent to ~15 %.
    profile = flats.mean(axis=(0, 1))
    assert 0.8 < profile[:8].mean() / profile[56:72].mean() < 0.99
    transmission = (sim["projections"] - darks.mean(0)) / (flats.mean(0) - darks.mean(0))
    # The most attenuating path transmits ~10 %; air around the sample transmits everything.
    assert 0.04 < np.percentile(transmission, 0.01) < 0.2
    assert transmission[:, :, :4].mean() == pytest.approx(1.0, abs=0.01)


def test_photon_noise_is_poisson(sim):
    flats = sim["flats"].astype(np.float64)
    dark = sim["darks"].astype(np.float64).mean(axis=0)
    ratio = flats.var(axis=0, ddof=1).mean() / (flats.mean(axis=0) - dark).mean()
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_ground_truth_holds_the_materials(sim):
    mu, labels = sim["phantom"], sim["labels"]
    present = set(np.unique(labels))
    assert {0, 1, 2, 3, 4, 5} <= present, present
    scale = 256 / SMALL["n_cols"]  # attenuation per pixel grows as pixels get coarser
    for material in MATERIALS.values():
        median = float(np.median(mu[labels == material.id]))
        assert median == pytest.approx(material.mu * scale, abs=1e-6), material.name
    assert mu.min() >= 0.0
    # Fine features exist: some metal/glass objects are only 1-3 px across.
    assert (labels == 4).sum() < 0.01 * labels.size


def test_transmission_does_not_depend_on_detector_width():
    small = simulate_tomo(n_angles=30, n_rows=2, n_cols=64, n_flats=4, n_darks=4)
    large = simulate_tomo(n_angles=30, n_rows=2, n_cols=128, n_flats=4, n_darks=4)
    # Same sample at two pixel sizes: attenuation per pixel halves, line integrals do not.
    assert large["phantom"].max() == pytest.approx(small["phantom"].max() / 2, rel=1e-6)
    t_small = small["projections"].astype(float).mean() / small["flats"].astype(float).mean()
    t_large = large["projections"].astype(float).mean() / large["flats"].astype(float).mean()
    assert t_small == pytest.approx(t_large, abs=0.02)


def test_simulation_params_normalise_and_reject_unknown_names():
    params = simulation_params(n_cols=128.0, seed=3)
    assert params["n_cols"] == 128 and isinstance(params["n_cols"], int)
    assert params["seed"] == 3 and params["n_angles"] == 360 and "version" in params
    with pytest.raises(TypeError, match="n_colums"):
        simulation_params(n_colums=128)


def test_write_read_round_trip(sim, tmp_path):
    path = tmp_path / "sub" / "scan.h5"
    params = simulation_params(**SMALL, **CLEAN)
    write_dataexchange(path, sim, attrs=params)
    assert sorted(p.name for p in path.parent.iterdir()) == ["scan.h5"]  # no temporary left behind
    back = read_dataexchange(path)
    for key in ("projections", "flats", "darks", "theta"):
        np.testing.assert_array_equal(back[key], sim[key], err_msg=key)
        assert back[key].dtype == sim[key].dtype
    assert read_simulation_attrs(path) == params
    truth = read_ground_truth(path)
    np.testing.assert_array_equal(truth["mu"], sim["phantom"])
    np.testing.assert_array_equal(truth["labels"], sim["labels"])
    assert truth["center"] == float(sim["center"])
    assert truth["materials"][4]["name"] == "metal"


def test_the_default_camera_has_a_dead_pixel_a_hot_pixel_and_zingers(sim):
    """Real detectors have defects: so does the default simulation (and every test using it)."""
    bad = simulate_tomo(**SMALL)
    diff = bad["projections"].astype(np.int64) - sim["projections"].astype(np.int64)
    dead = np.argwhere((bad["flats"] == 0).all(axis=0))
    assert len(dead) == 1
    r, c = dead[0]
    assert (bad["projections"][:, r, c] == 0).all() and (bad["darks"][:, r, c] == 0).all()
    hot = np.argwhere((diff > 7000).all(axis=0))
    assert len(hot) == 1 and (bad["flats"][:, hot[0][0], hot[0][1]] == sim["flats"][:, hot[0][0], hot[0][1]]).all()
    spikes = (diff > 10000) & ~(diff > 7000).all(axis=0)[None]
    assert 1 <= spikes.sum() <= 6 and (spikes.sum(axis=0) <= 1).all()  # single-frame spikes
