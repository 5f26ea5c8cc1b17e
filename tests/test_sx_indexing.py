"""Serial crystallography: lattice geometry, indexing through the cctbx worker, the indexing
evaluator, integration at predicted positions, and the Bragg-preserving reduction codec."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg  # noqa: F401  (loaded first on purpose: the indexer must not care)

from lossbound.diffraction import lattice
from lossbound.core.errors import ConfigError

CELL = [58.0, 58.0, 150.0, 90.0, 90.0, 90.0]
PLANE = lattice.DetectorPlane(origin=(-126.85, -144.39, 200.0), slow=(0.0, 0.172, 0.0), fast=(0.172, 0.0, 0.0),
                              wavelength=1.0)
SHAPE = (1679, 1475)  # Pilatus 2M


def _rotation(axis, degrees):
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()


def _true_basis(seed=3):
    from scipy.spatial.transform import Rotation

    u = Rotation.random(random_state=seed).as_matrix()
    return np.diag(CELL[:3]) @ u.T  # rows: a, b, c of an orthogonal cell in the lab frame


def _spots(basis, max_excitation=0.002):
    pred = lattice.predict_reflections(basis, PLANE, SHAPE, max_excitation=max_excitation, d_min=2.5)
    return pred


def test_detector_plane_projects_back_what_it_maps_to_reciprocal_space():
    y, x = np.array([10.2, 800.0, 1600.7]), np.array([5.5, 700.0, 1400.1])
    py, px = PLANE.project(PLANE.rlp(y, x))
    assert np.allclose(py, y) and np.allclose(px, x)
    assert 1.3 < PLANE.d_min(SHAPE) < 2.5


@pytest.mark.parametrize("cell, n_ops, system", [
    (CELL, 8, "tetragonal"), ([40, 40, 40, 90, 90, 90], 24, "cubic"), ([40, 50, 60, 90, 90, 90], 4, "orthorhombic"),
    ([58, 61, 151, 90, 90, 90], 4, "orthorhombic"),  # not pseudo-tetragonal at 5 % (c² must not set the scale)
    ([40, 50, 60, 90, 100, 90], 2, "monoclinic"), ([40, 40, 60, 90, 90, 120], 12, "hexagonal")])
def test_lattice_symmetry_is_the_holohedry_of_the_cell(cell, n_ops, system):
    assert len(lattice.symmetry_ops(cell)) == n_ops
    assert lattice.lattice_system(cell) == system


def test_misorientation_sees_through_lattice_symmetry_and_measures_the_rest():
    basis = _true_basis()
    swapped = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]]) @ basis  # a <-> b: the same crystal
    ops = lattice.symmetry_ops(CELL)
    assert lattice.misorientation_deg(swapped, basis, ops)[0] == pytest.approx(0, abs=1e-6)
    turned = basis @ _rotation([1, 2, 3], 0.2).T
    assert lattice.misorientation_deg(turned, basis, ops)[0] == pytest.approx(0.2, abs=1e-6)


def test_indexer_recovers_a_known_orientation_and_rejects_random_spots():
    from lossbound.pipelines.sx.indexing import cctbx_available, indexer

    if not cctbx_available():
        pytest.skip("cctbx-base is not installed")
    basis = _true_basis()
    pred = _spots(basis)
    rng = np.random.default_rng(0)
    y, x = pred["y"] + rng.normal(0, 0.3, pred["y"].size), pred["x"] + rng.normal(0, 0.3, pred["x"].size)
    r = indexer().index(y, x, cell=CELL, plane=PLANE)
    assert r["indexed"], r["reason"]
    assert r["fraction"] > 0.95 and r["rmsd_px"] < 0.6
    assert lattice.misorientation_deg(r["basis"], basis, lattice.symmetry_ops(CELL))[0] < 0.05
    # the refinement's covariance describes its own error: the truth lies within a few sigma
    cov = r["orientation_covariance"]
    assert np.isfinite(cov).all() and 0 < np.degrees(np.sqrt(np.linalg.eigvalsh(cov).max())) < 0.1
    assert lattice.misorientation_sigma(r["basis"], basis, cov, lattice.symmetry_ops(CELL)) < 4
    assert np.allclose(r["cell"][:3], CELL[:3], rtol=0.005)
    # random positions, and the true spots with a wrong cell, are not a crystal
    noise = indexer().index(rng.uniform(0, SHAPE[0], 300), rng.uniform(0, SHAPE[1], 300), cell=CELL, plane=PLANE)
    wrong = indexer().index(y, x, cell=[45.0, 45.0, 110.0, 90, 90, 90], plane=PLANE)
    assert not noise["indexed"] and not wrong["indexed"]
    few = indexer().index(y[:5], x[:5], cell=CELL, plane=PLANE)
    assert not few["indexed"] and "spots" in few["reason"]


def test_integration_at_predicted_positions_sums_the_spot_above_its_background():
    from lossbound.pipelines.sx.spots import integrate_boxes

    rng = np.random.default_rng(1)
    frame = rng.poisson(3.0, (64, 64)).astype(np.int32)
    frame[30:33, 40:43] += 100  # 900 counts
    masked = np.zeros_like(frame, bool)
    masked[10, 10] = True
    bg = np.full(frame.shape, 3.0)
    i, s, ok = integrate_boxes(frame, bg, masked, np.array([31.5, 10.5, 1.0]), np.array([41.5, 10.5, 30.0]))
    assert ok.tolist() == [True, False, False]  # a masked pixel or the border spoil a box
    assert i[0] == pytest.approx(900, abs=3 * s[0]) and s[0] == pytest.approx(math.sqrt(900 + 75), rel=0.15)


def _outcome(result, cell=CELL):
    from lossbound.core.types import Dataset, Outcome

    data = Dataset(name="t", arrays={"frames": np.zeros((2, 4, 4))}, payload="frames", source="t", meta={"cell": cell})
    return Outcome(data, result)


def _result(bases, hkl, intensity, sigma):
    n = len(bases)
    return {"indexed": np.array([not np.isnan(b[0, 0]) for b in bases]), "basis": np.array(bases),
            "cell": np.array([lattice.cell_of(b) if not np.isnan(b[0, 0]) else np.full(6, np.nan) for b in bases]),
            "orientation_covariance": np.tile(np.eye(3) * np.radians(0.05) ** 2, (n, 1, 1)),  # sigma 0.05 deg
            "refl_frame": np.repeat(np.arange(n), len(hkl)).astype(np.int32),
            "refl_hkl": np.tile(hkl, (n, 1)).astype(np.int32),
            "refl_intensity": np.tile(intensity, n), "refl_sigma": np.tile(sigma, n)}


def test_indexing_evaluator_aligns_settings_and_sees_lost_frames_and_changed_intensities():
    from lossbound.evaluators.indexing import IndexingAgreement

    rng = np.random.default_rng(2)
    basis = _true_basis()
    hkl = np.unique(rng.integers(-10, 11, (260, 3)), axis=0)[:200]  # a reflection is predicted once per frame
    rng.shuffle(hkl)
    intensity = np.concatenate([rng.exponential(500, 100), rng.normal(0, 10, 100)])
    sigma = np.concatenate([np.full(100, 20.0), np.full(100, 10.0)])  # 100 strong, ~100 weak
    raw = _result([basis, basis], hkl, intensity, sigma)
    op = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    swapped = _result([op @ basis, op @ basis], hkl @ op.T, intensity, sigma)  # same crystal, other setting
    ev = IndexingAgreement()
    same = ev.compare(_outcome(raw), _outcome(swapped), {})
    assert same["indexed_agreement"] == 1.0 and same["misorientation_max_deg"] < 1e-6
    assert same["refl_common_fraction"] == 1.0 and same["refl_cc_weak"] == pytest.approx(1.0)
    assert same["refl_r_strong"] == pytest.approx(0.0)
    noisy_i = intensity + rng.normal(0, 10, intensity.size)
    lost = _result([basis @ _rotation([0, 0, 1], 0.1).T, np.full((3, 3), np.nan)], hkl, noisy_i, sigma)
    worse = ev.compare(_outcome(raw), _outcome(lost), {})
    assert worse["indexed_agreement"] == 0.5 and worse["indexed_rate_change"] == -0.5
    assert worse["misorientation_max_deg"] == pytest.approx(0.1, abs=1e-6)
    assert worse["misorientation_max_sigma"] == pytest.approx(2.0, rel=1e-4)  # 0.1 deg at sigma 0.05 deg
    assert worse["refl_cc_weak"] < 0.9 < worse["refl_cc_strong"]
    # survivor bias: the lost frame loses its reflections, and per frame it is outside everything
    assert worse["refl_common_fraction"] == pytest.approx(0.5)
    assert worse["misorientation_deg_frames"][1] == np.inf and worse["refl_cc_weak_frames"][1] == -np.inf
    assert worse["refl_common_fraction_frames"].tolist() == [1.0, 0.0]
    assert worse["misorientation_deg_frames"][0] == pytest.approx(0.1, abs=1e-6)
    # a frame indexed only on compressed data is a false indexing
    half = _result([basis, np.full((3, 3), np.nan)], hkl, intensity, sigma)
    false = ev.compare(_outcome(half), _outcome(raw), {})
    assert false["false_indexed"] == 1.0 and false["indexed_agreement"] == 0.5
    assert np.isnan(false["misorientation_deg_frames"][1])          # not indexed on raw: not judged


@pytest.fixture(scope="module")
def small_stills(tmp_path_factory):
    from lossbound.pipelines.sx.technique import SxTechnique

    tmp = tmp_path_factory.mktemp("stills")
    cfg = {"name": "sim", "path": str(tmp / "sim.h5"), "generate_at": str(tmp / "sim.h5"), "cell": CELL,
           "simulation": {"n_frames": 2, "misses": [], "detector": "Pilatus300k", "beam_px": [240.0, 300.0],
                          "distance_mm": 120.0}}
    return SxTechnique({}).load(cfg)


def test_sparsify_keeps_spots_exactly_replaces_background_and_restores_the_mask(small_stills):
    from lossbound.codecs.hdf5 import roundtrip
    from lossbound.codecs.specs import settings_from_config

    data = small_stills
    frames = data.payload_array
    (lossless,) = settings_from_config("blosc2", {"codec": "blosc2"})
    base = roundtrip(frames, lossless, valid=data.mask, geometry=data.meta["geometry"])
    (setting,) = settings_from_config("sparsify_m2", {"codec": "sparsify_m2", "mode": "k_sigma", "bounds": [4]})
    rt = roundtrip(frames, setting, valid=data.mask, geometry=data.meta["geometry"])
    assert rt.masked_pixels_changed == 0 and rt.masked_pixels > 0
    assert rt.ratio > 1.5 * base.ratio  # photon noise was the incompressible part (crowded small detector)
    out = rt.decompressed
    assert np.array_equal(out[:, ~data.mask], frames[:, ~data.mask])  # sentinels back bit for bit
    bright = frames > 60  # Bragg peaks on a ~3-count background: kept exactly
    assert bright.sum() > 20 and np.array_equal(out[bright], frames[bright])
    changed = (out != frames)[:, data.mask].mean()
    assert 0.2 < changed < 0.95  # the background became its (rounded) model
    (noisy,) = settings_from_config("sparsify_m2_noise", {"codec": "sparsify_m2_noise", "mode": "k_sigma",
                                                           "bounds": [4]})
    a = roundtrip(frames, noisy, valid=data.mask, geometry=data.meta["geometry"]).decompressed
    b = roundtrip(frames, noisy, valid=data.mask, geometry=data.meta["geometry"]).decompressed
    assert np.array_equal(a, b) and not np.array_equal(a, out)  # re-drawn noise, the same every time


def test_sparsify_needs_a_geometry_and_integer_counts():
    from lossbound.codecs.specs import settings_from_config

    (setting,) = settings_from_config("sparsify_m2", {"codec": "sparsify_m2", "mode": "k_sigma", "bounds": [4]})
    with pytest.raises(ConfigError, match="geometry"):
        setting.validate(np.dtype("int32"), has_geometry=False)
    with pytest.raises(ConfigError, match="integer"):
        setting.validate(np.dtype("float32"), has_geometry=True)
    setting.validate(np.dtype("int32"), has_geometry=True)


def test_a_dead_index_worker_is_restarted_and_one_that_cannot_start_is_an_error(tmp_path, monkeypatch):
    from lossbound.pipelines.sx import indexing

    if not indexing.cctbx_available():
        pytest.skip("cctbx-base is not installed")
    pred = _spots(_true_basis())
    idx = indexing.Indexer()
    try:
        assert idx.index(pred["y"], pred["x"], cell=CELL, plane=PLANE)["indexed"]
        idx._proc.kill()  # e.g. the OOM killer between two frames
        idx._proc.wait()
        assert idx.index(pred["y"], pred["x"], cell=CELL, plane=PLANE)["indexed"]
    finally:
        idx.close()
    # a worker that cannot start (here: a broken script) is an install problem, not a frame's:
    # one line with the reason, never a raw result of "nothing indexed" (which would be cached)
    broken = tmp_path / "index_worker.py"
    broken.write_text("import sys\nsys.stderr.write('ImportError: libstdc++ clash\\n')\nsys.exit(3)\n")
    monkeypatch.setattr(indexing, "_WORKER", broken)
    idx = indexing.Indexer()
    with pytest.raises(ConfigError, match="cannot start.*libstdc\\+\\+ clash"):
        idx.index(pred["y"], pred["x"], cell=CELL, plane=PLANE)
    idx.close()
    missing = tmp_path / "no_cctbx.py"
    missing.write_text("import rstbx_not_installed\n")
    monkeypatch.setattr(indexing, "_WORKER", missing)
    idx = indexing.Indexer()
    with pytest.raises(ConfigError, match=r"pip install 'lossbound\[sx\]'"):
        idx.index(pred["y"], pred["x"], cell=CELL, plane=PLANE)
    idx.close()


@pytest.mark.parametrize("max_excitation", [0.0005, 0.004, 0.05])
def test_predictions_near_the_ewald_sphere_equal_the_whole_hkl_box(max_excitation):
    """The fast path enumerates l near the sphere only; it must give exactly what testing every
    (h, k, l) of the box gives, in the same order."""
    from scipy.spatial.transform import Rotation

    basis = Rotation.from_euler("xyz", [17, -31, 52], degrees=True).as_matrix() @ np.diag([58.4, 58.4, 152.3])
    shape = (1679, 1475)
    got = lattice.predict_reflections(basis, PLANE, shape, max_excitation=max_excitation)
    d_min = PLANE.d_min(shape)
    recip = np.linalg.inv(basis)
    limits = [int(np.ceil(np.linalg.norm(basis[i]) / d_min)) for i in range(3)]
    h, k, l = np.meshgrid(*(np.arange(-m, m + 1) for m in limits), indexing="ij")
    hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1).astype(float)
    r = hkl @ recip.T
    s1 = r + PLANE.s0
    eps = np.linalg.norm(s1, axis=1) - 1.0 / PLANE.wavelength
    r_len = np.linalg.norm(r, axis=1)
    sel = (r_len > 0) & (r_len <= 1.0 / d_min) & (np.abs(eps) <= max_excitation) & (s1[:, 2] > 0)
    y, x = PLANE.project(r[sel])
    on = np.isfinite(y) & (y >= 3) & (y <= shape[0] - 3) & (x >= 3) & (x <= shape[1] - 3)
    assert got["hkl"].shape[0] == on.sum() > 0
    assert np.array_equal(got["hkl"], hkl[sel][on].astype(np.int32))
    assert np.array_equal(got["y"], y[on]) and np.array_equal(got["excitation"], eps[sel][on])
