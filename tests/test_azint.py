"""Azimuthal integration end to end: loaders (simulation, measured frames, hostile input), the
study with masks kept bit for bit, the quantiser as a searched codec, thresholds that apply."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import h5py
import mlflow
import numpy as np
import pytest

from lossbound.codecs import read_payload, write_payload
from conftest import ROOT, compose
from lossbound.core.errors import ConfigError, InputError
from lossbound.results.thresholds import load_thresholds, setting_for
from lossbound.pipelines.azint.technique import AzintTechnique

SMALL_SIM = ["dataset.simulation.detector=Pilatus300k", "dataset.simulation.poni_px=[300,240]",
             "dataset.simulation.distance_mm=120"]


def _small(tmp_path, extra=()) -> list[str]:
    return ["technique=azint", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.reference_data={tmp_path}",
            "sweep.progress=false", *SMALL_SIM, *extra]


@pytest.fixture(scope="module")
def azint_study(tmp_path_factory):
    from lossbound.cli import evaluate

    tmp = tmp_path_factory.mktemp("azint")
    cfg = compose(_small(tmp, ["codec=[sz3,zfp,quant_blosc2]", "search=grid", "sweep.bounds=[1,4,64]",
                               "codec.quant_blosc2.bounds=[0.25,0.5,8]", "tracking.figures=all"]))
    return tmp, evaluate.run(cfg)


def test_simulated_frame_is_deterministic_and_carries_detector_defects(tmp_path):
    cfg = dict(name="sim", path=str(tmp_path / "s.h5"), poni=str(tmp_path / "s.poni"),
               generate_at=str(tmp_path / "s.h5"), simulation={"detector": "Pilatus300k", "poni_px": [300, 240]})
    tech = AzintTechnique({})
    a = tech.load(cfg)
    digest = hashlib.sha256((tmp_path / "s.h5").read_bytes()).hexdigest()
    (tmp_path / "s.h5").unlink()
    b = tech.load(cfg)
    assert a.checksum == b.checksum and digest
    frames = a.payload_array
    assert frames.dtype == np.int32 and (frames == -1).sum() > 1000 and (frames == -2).sum() == 60
    assert frames.max() > 1_048_500 and a.meta["count_cutoff"] == 1_048_500  # hot pixel, masked by the cut-off
    assert a.mask.sum() < frames[0].size and not a.mask[frames[0] < 0].any()


def test_study_keeps_masks_and_writes_chains_to_the_thresholds_file(azint_study):
    tmp, res = azint_study
    assert all(p.status == "ok" for p in res.points), [p.reason for p in res.points if p.status != "ok"]
    assert all(p.codec["masked_pixels"] > 0 and p.codec["masked_pixels_changed"] == 0 for p in res.points)
    doc = load_thresholds(tmp / "runs" / "thresholds" / "azint.yaml")
    entry = doc["datasets"]["sim_azint"]
    assert set(entry["baselines"]) == {"bitshuffle_lz4", "zstd", "blosc2"}
    assert {"saxs_log_ratio_sigma_max", "guinier_rg_change"} <= set(entry["criteria_not_applicable"])
    quant = entry["codecs"]["quant_blosc2"]
    assert quant["transform"] == "noise_quantiser" and quant["bound_kind"] == "poisson_sigma"
    assert quant["bound"] is not None and quant["first_failure"]["bound"] == 8.0  # f = 8 destroys the profile
    assert entry["reduction"]["profile_ratio"] > 50 and entry["reduction"]["centre_half_pixel_max_dev_sigma"] > 1


def test_applying_a_threshold_reproduces_its_bound_and_mask(azint_study, tmp_path):
    tmp, res = azint_study
    doc = load_thresholds(tmp / "runs" / "thresholds" / "azint.yaml")
    ds = AzintTechnique({}).load(compose(_small(tmp))["dataset"])
    for name, entry in doc["codecs"].items():
        if entry["bound"] is None:
            continue
        setting = setting_for(entry)
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            write_payload(f, "data", ds.payload_array, setting, valid=ds.mask)
        with h5py.File(path, "r") as f:
            back = read_payload(f, "data")
        masked = ~np.broadcast_to(ds.mask, back.shape)
        assert np.array_equal(back[masked], ds.payload_array[masked]), name
        err = np.abs(back[~masked].astype(float) - ds.payload_array[~masked])
        if entry["bound_kind"] == "absolute":
            assert err.max() <= entry["bound"] + 1e-9, name
        else:
            assert (err <= entry["bound"] / 2 * np.sqrt(ds.payload_array[~masked]) + 1e-9).all(), name


def test_points_and_figures_reach_mlflow(azint_study):
    tmp, res = azint_study
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("azint")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    points = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(points) == len(res.points) == 3 + 9
    assert all(r.data.metrics["masked_pixels_changed"] == 0 for r in points)
    lossy = next(r for r in points if r.data.params["codec"] == "sz3" and float(r.data.params["bound"]) == 4)
    assert {"profile_chi2_red", "peak_shift_fwhm_max", "ratio"} <= set(lossy.data.metrics)
    assert "comparison.png" in {a.path for a in client.list_artifacts(lossy.info.run_id)}
    study = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert study.data.metrics["reduction_profile_ratio"] > 50


def test_quantiser_threshold_improves_on_the_lossless_baseline_at_the_bound(azint_study):
    _, res = azint_study
    quant = res.codecs["quant_blosc2"]
    assert quant["compression_ratio"] >= res.baselines["blosc2"]["compression_ratio"] * 0.999
    assert quant["max_error_sigma"] <= quant["bound"] / 2


def test_measured_frames_load_with_their_masks_and_geometry(shared_data):
    tech = AzintTechnique({})
    powder = shared_data / "powder"
    ceo2 = tech.load(dict(name="ceo2", path=powder / "CeO2_Pilatus1M.tif", poni=powder / "CeO2_Pilatus1M.poni",
                          flipud=True, calibrant="CeO2"))
    assert ceo2.payload_array.shape == (1, 1043, 981) and ceo2.meta["masked_pixels"] > 70_000
    # with the flip, the refined CeO2 lattice parameter is the calibrant's to 0.1 %
    from lossbound.evaluators.profile import PowderPeaks
    from lossbound.core.types import Outcome

    raw = Outcome(ceo2, tech.run(ceo2, {}))
    ref = PowderPeaks(unit="q_nm^-1").reference(raw)
    assert ref["lattice_a"] == pytest.approx(5.41165, rel=1e-3)
    eiger = tech.load(dict(name="eiger", path=powder / "eiger9m_vacuum.h5",
                           poni=powder / "eiger9m_vacuum_settings.cfg", max_frames=1))
    assert eiger.payload_array.dtype == np.uint32 and eiger.meta["masked_pixels"] == 664_805
    ai = tech.integrator(eiger)
    assert ai.dist == pytest.approx(3.66869, rel=1e-5) and ai.wavelength == pytest.approx(1.0332e-10, rel=1e-4)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"path": "nowhere.tif", "poni": "x.poni"}, "nowhere.tif: no such file"),
    ({"path": "{tmp}/frame.npy", "poni": "x.poni"}, "cannot read as a detector image"),
    ({"path": "{tmp}/f.h5", "poni": "x.poni", "key": "/missing"}, "no dataset '/missing'"),
    ({"path": "{tmp}/f.h5", "poni": "{tmp}/bad.poni"}, "not a readable PONI file"),
    ({"path": "{tmp}/f.h5", "poni": "{tmp}/f.h5.cfg"}, "not a BioXTAS RAW settings file"),
    ({"path": "{tmp}/f.h5", "poni": "{tmp}/ok.poni", "mask_file": "{tmp}/mask.npy"}, "mask shape (3, 3)"),
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, cfg, message):
    (tmp_path / "frame.npy").write_bytes(b"not an image")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["/entry/data/data"] = np.ones((2, 8, 10), np.int32)
    (tmp_path / "bad.poni").write_text("Distance: banana\n")
    (tmp_path / "f.h5.cfg").write_text("{}")
    (tmp_path / "ok.poni").write_text("poni_version: 2\nDetector: Detector\nDetector_config: "
                                      '{"pixel1": 1e-4, "pixel2": 1e-4}\nDistance: 0.1\nPoni1: 0\nPoni2: 0\n'
                                      "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n")
    np.save(tmp_path / "mask.npy", np.zeros((3, 3)))
    cfg = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in cfg.items()}
    with pytest.raises((InputError, ConfigError), match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        AzintTechnique({}).load(cfg)
    assert "\n" not in str(info.value)


def test_command_line_refuses_a_tomography_file_for_azint_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lossbound", "study", "technique=azint", "dataset=file",
                           f"dataset.path={tmp_path / 'scan.h5'}", f"paths.runs_dir={tmp_path / 'runs'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: azint dataset {tmp_path / 'scan.h5'}: 'poni' is required (dataset.poni=<file.poni or RAW .cfg>)")
    assert "Traceback" not in proc.stderr


def test_unknown_pipeline_option_is_refused():
    with pytest.raises(ConfigError, match="unknown option"):
        AzintTechnique({"npts": 100})


def test_cake_and_user_mask_and_two_theta(tmp_path):
    cfg = dict(name="sim", path=str(tmp_path / "s.h5"), poni=str(tmp_path / "s.poni"),
               generate_at=str(tmp_path / "s.h5"), simulation={"detector": "Pilatus300k", "poni_px": [300, 240]})
    plain = AzintTechnique({}).load(cfg)
    user = np.zeros(plain.payload_array.shape[1:], np.uint8)
    user[:50, :] = 1
    np.save(tmp_path / "mask.npy", user)
    masked = AzintTechnique({}).load({**cfg, "mask_file": str(tmp_path / "mask.npy")})
    assert not masked.mask[:50].any() and masked.meta["masked_pixels"] > plain.meta["masked_pixels"]
    tech = AzintTechnique({"npt": 120, "unit": "2th_deg", "cake": {"enabled": True, "npt_azim": 36}})
    out = tech.run(masked, {})
    assert out["cake"].shape == (1, 36, 120) and out["intensity"].shape == (1, 120)
    assert 0 < out["radial"][0] < out["radial"][-1] < 90  # degrees 2-theta
    assert np.isfinite(out["sigma"]).all() and (out["sigma"] >= 0).all()


def test_pilatus_cbf_header_gives_geometry_and_count_cutoff(shared_data):
    frame = shared_data / "mx" / "thaumatin_grid" / "thau_3_2_0001.cbf.bz2"
    ds = AzintTechnique({}).load({"name": "thau", "path": str(frame)})
    assert ds.meta["poni"] == "from the file header" and ds.meta["count_cutoff"] == 115897
    ai = AzintTechnique({}).integrator(ds)
    assert ai.dist == pytest.approx(0.351) and ai.wavelength == pytest.approx(0.96859e-10)
    fit2d = ai.getFit2D()
    assert fit2d["centerX"] == pytest.approx(1261.61) and fit2d["centerY"] == pytest.approx(1306.96)
    frames = ds.payload_array
    assert not ds.mask[(frames[0] < 0) | (frames[0] > 115897)].any()  # gaps, bad and hot pixels masked


def test_compressed_hdf5_frames_read_without_anything_else_imported(shared_data):
    """read_frames registers the HDF5 filter plugins itself (the Eiger file is Bitshuffle-LZ4)."""
    code = ("import sys; from lossbound.pipelines.frames import read_frames; "
            f"f, _ = read_frames(__import__('pathlib').Path(r'{shared_data / 'powder' / 'eiger9m_vacuum.h5'}'), "
            "max_frames=1); print(f.shape, f.dtype)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(1, 3262, 3108) uint32"
