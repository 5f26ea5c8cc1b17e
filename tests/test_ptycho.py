"""Ptychography end to end: the simulation and its defects, both file layouts and hostile input,
a deterministic reconstruction that matches the truth, the gates, the evaluator's alignment,
and a study with masks kept bit for bit, thresholds and MLflow runs."""
from __future__ import annotations

import bz2
import hashlib

import h5py
import mlflow
import numpy as np
import pytest

from conftest import compose
from lossbound.core.errors import ConfigError, InputError
from lossbound.evaluators.ptycho import align_object, object_frc, probe_change
from lossbound.pipelines.ptycho import engine, io
from lossbound.pipelines.ptycho.simulate import scan_positions
from lossbound.pipelines.ptycho.technique import PtychoTechnique

needs_engine = pytest.mark.skipif(engine.available() is not None,
                                  reason="ptycho needs the optional part: pip install 'lossbound[ptycho]'")


def _sim_cfg(tmp_path, **sim):
    path = str(tmp_path / "sim.cxi")
    return dict(name="sim", path=path, generate_at=path, simulation=sim)


def test_simulation_is_deterministic_and_carries_detector_defects(tmp_path):
    tech = PtychoTechnique({})
    a = tech.load(_sim_cfg(tmp_path))
    digest = hashlib.sha256((tmp_path / "sim.cxi").read_bytes()).hexdigest()
    (tmp_path / "sim.cxi").unlink()
    b = tech.load(_sim_cfg(tmp_path))
    assert a.checksum == b.checksum and digest == hashlib.sha256((tmp_path / "sim.cxi").read_bytes()).hexdigest()
    p = a.payload_array
    assert p.dtype == np.int32 and p.shape == (100, 64, 64)
    assert (p == -1).sum() == 100 * 2 * 64 and (p == -2).sum() == 300 and p.max() >= 2_000_000
    # beamstop, gap, dead and hot pixels are masked; nothing else is
    assert (~a.mask).sum() == 2 * 64 + 3 + 1 + 9 and not a.mask[p[0] < 0].any()
    # low counts away from the bright field: most valid pixels hold 0-2 photons
    valid = p[:, a.mask]
    assert np.median(valid) <= 2 and valid.max() > 100
    assert {"truth_object", "truth_offset", "probe_init"} <= set(a.arrays)


def test_scan_overlap_is_at_least_sixty_percent():
    from lossbound.pipelines.ptycho.simulate import DEFAULTS, make_probe

    pos = scan_positions(DEFAULTS["n_positions"], DEFAULTS["step"])
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1)) + np.eye(len(pos)) * 1e9
    step = np.median(d.min(axis=1))
    # the probe's diameter: the circle about its centre holding 90 % of its intensity
    size = DEFAULTS["size"]
    p = np.abs(make_probe(size, DEFAULTS["pupil_radius"], DEFAULTS["defocus"])) ** 2
    y, x = np.mgrid[:size, :size] - size / 2
    r = np.hypot(y, x).ravel()
    order = np.argsort(r)
    diameter = 2 * r[order][np.searchsorted(np.cumsum(p.ravel()[order]) / p.sum(), 0.9)]
    assert 1 - step / diameter >= 0.6, (step, diameter)


def test_simulated_file_refused_elsewhere_and_users_file_never_overwritten(tmp_path):
    tech = PtychoTechnique({})
    cfg = _sim_cfg(tmp_path)
    with pytest.raises(InputError, match="simulated at"):
        tech.load({**cfg, "path": str(tmp_path / "other.cxi")})
    (tmp_path / "sim.cxi").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="cannot read as HDF5"):
        tech.load(cfg)


def _npz(tmp_path, data, scan, probe=None, name="scan.npz.bz2"):
    path = tmp_path / name
    arrays = {"data": data, "scan": scan}
    if probe is not None:
        arrays["probe"] = probe
    with bz2.open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_npz_layout_is_read_checked_and_shifted(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.poisson(0.5, (1, 12, 32, 32)).astype(np.float32)
    data[..., 0, 0] = 500  # zero frequency at the corner (tike's layout)
    scan = rng.uniform(-20, 20, (1, 12, 2)).astype(np.float32)
    path = _npz(tmp_path, data, scan)
    s = io.load_scan(path, {})
    assert s["fftshift"] and s["patterns"].dtype == np.int32 and s["patterns"][0, 16, 16] == 500
    assert s["positions"].min() == 0 and s["valid"].all() and s["positions_used"] == 12
    assert io.load_scan(path, {"max_positions": 9})["patterns"].shape == (9, 32, 32)
    bad = _npz(tmp_path, data, scan[:, :10], name="bad.npz.bz2")
    with pytest.raises(InputError, match=r"12 patterns but positions of shape \(10, 2\)"):
        io.load_scan(bad, {})
    probe = _npz(tmp_path, data, scan, probe=np.ones((16, 16), np.complex64), name="probe.npz.bz2")
    with pytest.raises(InputError, match="initial probe has shape"):
        io.load_scan(probe, {})
    nan = scan.copy()
    nan[0, 3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        io.load_scan(_npz(tmp_path, data, nan, name="nan.npz.bz2"), {})
    noscan = tmp_path / "noscan.npz"
    np.savez(noscan, data=data)
    with pytest.raises(InputError, match="no 'scan' array"):
        io.load_scan(noscan, {})


def test_cxi_without_positions_or_geometry_is_one_line(tmp_path):
    path = tmp_path / "user.cxi"
    with h5py.File(path, "w") as fh:
        fh["/entry_1/instrument_1/detector_1/data"] = np.zeros((4, 32, 32), np.int32)
    with pytest.raises(InputError, match="no scan positions at /entry_1/sample_1/geometry_1/translation"):
        io.load_scan(path, {})
    with h5py.File(path, "a") as fh:
        fh["/entry_1/sample_1/geometry_1/translation"] = np.zeros((4, 3))
    with pytest.raises(InputError, match="missing .*energy"):
        io.load_scan(path, {})
    with pytest.raises(ConfigError, match="unknown key"):
        PtychoTechnique({}).load({"path": str(path), "ponii": 1})
    with pytest.raises(InputError, match="missing .*energy"):   # dataset=file's unset keys are ignored
        PtychoTechnique({}).load({"path": str(path), "poni": None, "cell": None})
    with pytest.raises(ConfigError, match="iterations must be a positive integer"):
        PtychoTechnique({"iterations": 0})
    with pytest.raises(ConfigError, match="stages must be a list"):
        PtychoTechnique({"stages": [["thirty", 0.1, 100]]})


def test_alignment_removes_offset_ramp_and_scale():
    rng = np.random.default_rng(1)
    ref = (0.8 + 0.2 * rng.random((40, 40))) * np.exp(1j * rng.random((40, 40)))
    y, x = np.mgrid[:40, :40]
    test = 1.7 * ref * np.exp(1j * (0.9 + 0.03 * y - 0.05 * x))
    field = np.zeros((40, 40), bool)
    field[5:35, 5:35] = True
    out = align_object(ref, test, field)
    assert np.allclose(out[field], ref[field], atol=1e-9)
    assert probe_change(ref, 2.5j * ref) < 1e-12 and probe_change(ref, ref + 0.1 * rng.random((40, 40))) > 0.01
    frc = object_frc(np.angle(ref), np.angle(ref), field)
    assert frc["high_band"] == pytest.approx(1.0) and not frc["crossed"]


@needs_engine
def test_reconstruction_is_exact_on_repeat_matches_truth_and_gates_catch_wrong_positions(tmp_path):
    from lossbound.core.types import Outcome
    from lossbound.evaluators.ptycho import PtychoObject

    tech = PtychoTechnique({})
    data = tech.load(_sim_cfg(tmp_path))
    a, b = tech.run(data, {}), tech.run(data, {})
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ev = PtychoObject()
    ref = ev.reference(Outcome(data, a))
    assert ref["truth_raw"]["phase_rms"] < 0.06        # rad, of a 1 rad object (measured 0.037)
    checks = {g.name: g for g in tech.gates(data, {}, a, tech.gate_defaults, references={})}
    assert checks["data_fit"].passed and checks["data_fit"].value < 2
    swapped = data.__class__(**{**data.__dict__, "arrays": {**data.arrays,
                                                            "positions": data.arrays["positions"][:, ::-1].copy()}})
    wrong = tech.run(swapped, {})
    check = tech.gates(swapped, {}, wrong, tech.gate_defaults, references={})[0]
    assert check.name == "data_fit" and not check.passed and check.value > 3 and "positions" in check.fix


@needs_engine
def test_study_keeps_masks_and_writes_thresholds_and_mlflow_runs(tmp_path):
    from lossbound.cli import evaluate
    from lossbound.results.thresholds import load_thresholds

    cfg = compose(["technique=ptycho", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.reference_data={tmp_path}",
                   "sweep.progress=false", "codec=[quant_blosc2,zfp]", "search=grid",
                   "codec.zfp.bounds=[0.125,2]", "codec.quant_blosc2.bounds=[0.25,4]"])
    evaluate.run(cfg)
    doc = load_thresholds(tmp_path / "runs" / "thresholds" / "ptycho.yaml")
    entry = doc["datasets"]["sim_ptycho"]
    codecs = entry["codecs"]
    assert set(codecs) >= {"quant_blosc2", "zfp"} and "blosc2" in entry["baselines"]
    # a coarse quantiser (4 sigma) moves the phase beyond half a dose of noise; 0.25 sigma does not
    assert codecs["quant_blosc2"]["bound"] == 0.25 and codecs["quant_blosc2"]["limiting_criterion"]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ptycho").experiment_id], max_results=200)
    points = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(points) >= 5 and all(r.data.metrics["masked_pixels_changed"] == 0 for r in points)
    lossy = [r for r in points if r.data.params["codec"] in ("zfp", "quant_blosc2")]
    assert lossy and all({"phase_rms_change", "truth_phase_rms", "truth_phase_rms_raw", "phase_rms_floor"}
                         <= set(r.data.metrics) for r in lossy)
