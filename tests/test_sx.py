"""Serial crystallography: the simulation and its truth, the study end to end (spots,
indexing, the Bragg-preserving reduction), measured stills, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import compose
from lossbound.core.errors import ConfigError, InputError
from lossbound.pipelines.sx import indexing
from lossbound.pipelines.sx.technique import SxTechnique

SMALL = ["dataset.simulation.n_frames=3", "dataset.simulation.misses=[1]", "+dataset.simulation.detector=Pilatus300k",
         "+dataset.simulation.beam_px=[240.0,300.0]", "+dataset.simulation.distance_mm=120.0"]


def _overrides(tmp_path, extra=()) -> list[str]:
    return ["technique=sx", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.reference_data={tmp_path}",
            "sweep.progress=false", *SMALL, *extra]


@pytest.fixture(scope="module")
def sx_study(tmp_path_factory):
    from lossbound.cli import evaluate

    tmp = tmp_path_factory.mktemp("sx")
    cfg = compose(_overrides(tmp, ["codec=[sz3,quant_blosc2,sparsify_m2]", "search=grid", "sweep.bounds=[1,8]",
                                   "codec.quant_blosc2.bounds=[0.5,4]", "codec.sparsify_m2.bounds=[3]",
                                   "tracking.figures=all"]))
    return tmp, evaluate.run(cfg)


def test_simulated_stills_carry_truth_and_the_raw_pipeline_recovers_it(tmp_path):
    cfg = compose(_overrides(tmp_path))["dataset"]
    tech = SxTechnique({})
    data = tech.load(cfg)
    frames = data.payload_array
    assert frames.shape[0] == 3 and frames.dtype == np.int32 and (frames == -1).any() and (frames == -2).any()
    prepared = tech.prepare(data)["raw"]
    assert prepared["hit_accuracy"] == 1.0                # the miss is called a miss, the hits hits
    # crowded spots on this small detector pin the orientation to ~0.25 deg (0.013 deg on the default 2M)
    assert prepared["indexed_rate"] == 1.0 and prepared["true_misorientation_max_deg"] < 0.5
    assert prepared["mean_rmsd_px"] < 1.0
    assert prepared["true_spot_recall"] > 0.75  # most true spots >= 100 counts (crowded small detector; 0.9+ on the default)
    assert prepared["hit_rate"] == pytest.approx(2 / 3)


def test_hits_indexed_side_by_side_give_the_result_of_one_at_a_time(tmp_path):
    """The raw pipeline keeps one hit in flight per core (prepare); frames are still finished
    in order, so the result is that of one hit at a time, array for array."""
    cfg = compose(_overrides(tmp_path, ["dataset.simulation.n_frames=4", "dataset.simulation.misses=[1]"]))
    tech = SxTechnique({})
    data = tech.load(cfg["dataset"])
    one, two = tech.find(data, in_flight=1), tech.find(data, in_flight=2)
    assert one["indexed"].sum() == 3 and one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def test_sx_study_runs_end_to_end_with_spot_metrics(sx_study):
    tmp, res = sx_study
    assert all(p.status == "ok" for p in res.points), [p.reason for p in res.points if p.status != "ok"]
    assert all(p.codec["masked_pixels_changed"] == 0 for p in res.points)
    lossless = [p for p in res.points if not p.lossy]
    assert all(p.metrics["spot_f1"] == 1.0 and p.metrics["hit_agreement"] == 1.0 for p in lossless)
    # the same orientation: zero to rounding (the angle of R = B' B^-1, ~1e-14 deg)
    assert all(p.metrics["indexed_agreement"] == 1.0 and p.metrics["misorientation_max_deg"] < 1e-9
               and p.metrics["refl_cc_weak"] == pytest.approx(1.0, abs=1e-12) for p in lossless)
    sparse = next(p for p in res.points if p.setting["codec"] == "sparsify_m2")
    assert sparse.status == "ok" and sparse.codec["ratio"] > max(p.codec["ratio"] for p in lossless)
    assert sparse.metrics["indexed_agreement"] == 1.0 and sparse.metrics["refl_cc_strong"] > 0.95
    worst = next(p for p in res.points if p.setting["codec"] == "sz3" and p.setting["value"] == 8.0)
    assert worst.metrics["spot_f1"] < 0.95 and not worst.passed  # 8 counts on a ~2-count background
    from lossbound.results.thresholds import load_thresholds

    doc = load_thresholds(tmp / "runs" / "thresholds" / "sx.yaml")
    assert doc["datasets"]["sim_sx"]["codecs"]["sz3"]["first_failure"] is not None


def test_measured_thaumatin_stills_are_hits_indexed_with_the_known_cell(shared_data):
    tech = SxTechnique({})
    data = tech.load({"name": "thau", "path": str(shared_data / "mx" / "thaumatin_grid" / "*.cbf.bz2"),
                      "max_frames": 2, "cell": [58, 58, 150, 90, 90, 90]})
    assert data.payload_array.shape == (2, 2527, 2463) and data.meta["files"] == 2
    result = tech.run(data, {})
    assert result["hit"].all() and (result["n_spots"] > 300).all()
    # rstbx DPS + the known cell: both indexed, a ~58.4, c ~152.3 (the header cell is nominal)
    assert result["indexed"].all() and (result["indexed_fraction"] > 0.3).all()
    assert np.allclose(result["cell"][:, 0], 58.4, atol=0.4) and np.allclose(result["cell"][:, 2], 152.3, atol=1.0)
    assert (result["rmsd_px"] < 2.5).all() and result["refl_frame"].size > 1000


@pytest.mark.slow
def test_refining_the_geometry_puts_the_measured_cell_within_half_a_percent(shared_data):
    # With the header's geometry, stills that refine their own cells come out 0.6-1.6 % larger
    # than the known cell. Refined once from all 8 stills together, the detector's distance and
    # beam centre and the cell land within 0.5 % of the known cell (distance and cell scale are
    # nearly degenerate for stills: 3 stills leave 1.1 %); every still then refines its
    # orientation with that cell.
    tech = SxTechnique({})
    tech.processes = 2
    data = tech.load({"name": "thau", "path": str(shared_data / "mx" / "thaumatin_grid" / "*.cbf.bz2"),
                      "cell": [58, 58, 150, 90, 90, 90]})
    prepared = tech.prepare(data)
    g = prepared["geometry_refinement"]
    assert g["stills"] == 8 and g["spots"] > 4000
    assert g["cell_deviation_from_known"] < 0.005
    assert g["rmsd_refined_px"] < g["rmsd_before_px"]
    assert abs(g["distance_shift_mm"]) > 0.5      # the header's distance was off
    assert prepared["geometry"]["dist"] != data.meta["geometry"]["dist"]
    result = tech.run(data, prepared)              # the raw result prepare() computed, with that geometry
    assert result["indexed"].all()
    assert np.allclose(result["cell"], prepared["cell"])   # each still: the dataset's cell
    # The README's claim that the RMSD (~1.8 px) is set by the spots, not the geometry: a free
    # 3x3 reciprocal basis per still (no cell, no symmetry) does not get near 1 px either.
    assert _free_basis_rmsd(result, indexing.detector_plane(tech.integrator(data, prepared["geometry"]))) > 1.3


def _free_basis_rmsd(result, plane) -> float:
    """Positional RMSD of the spots within 3 px after fitting each still's reciprocal basis
    as nine free parameters (Miller indices reassigned twice)."""
    from scipy.optimize import least_squares

    from lossbound.diffraction import lattice

    d2 = []
    for i in np.flatnonzero(result["indexed"]):
        on = result["spot_frame"] == i
        y, x = result["spot_y"][on], result["spot_x"][on]
        recip = np.linalg.inv(result["basis"][i]).T          # rows a*, b*, c*: r = hkl @ recip
        for _ in range(2):
            hkl, d = lattice._residuals(np.linalg.inv(recip.T), y, x, plane.rlp(y, x), plane)
            h, yo, xo = hkl[d < 3.0], y[d < 3.0], x[d < 3.0]

            def resid(p, h=h, yo=yo, xo=xo):
                py, px = plane.project(h @ p.reshape(3, 3))
                return np.nan_to_num(np.concatenate([py - yo, px - xo]), nan=50.0)

            recip = least_squares(resid, recip.ravel(), x_scale="jac").x.reshape(3, 3)
        _, d = lattice._residuals(np.linalg.inv(recip.T), y, x, plane.rlp(y, x), plane)
        near = d < 3.0
        d2.append(d[near] ** 2)
    return float(np.sqrt(np.concatenate(d2).mean()))


@pytest.mark.parametrize(("cfg", "message"), [
    ({"path": "{tmp}/none/*.cbf"}, "no frame files found"),
    ({"path": "{tmp}/frames"}, "broken.cbf: cannot read as a detector image"),
    ({"path": "{tmp}/frames/ok.h5", "poni": "{tmp}/x.poni", "cell": [58, 58]}, "cell must be"),
])
def test_bad_stills_are_one_line_naming_the_file(tmp_path, cfg, message):
    import h5py

    (tmp_path / "frames").mkdir()
    with h5py.File(tmp_path / "frames" / "ok.h5", "w") as f:
        f["/entry/data/data"] = np.ones((1, 8, 10), np.int32)
    (tmp_path / "frames" / "broken.cbf").write_bytes(b"###CBF: not really")
    (tmp_path / "x.poni").write_text("poni_version: 2\nDetector: Detector\nDetector_config: "
                                     '{"pixel1": 1e-4, "pixel2": 1e-4}\nDistance: 0.1\nPoni1: 0\nPoni2: 0\n'
                                     "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n")
    cfg = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in cfg.items()}
    with pytest.raises((InputError, ConfigError), match=message) as info:
        SxTechnique({}).load(cfg)
    assert "\n" not in str(info.value)
