"""Quality gates: each catches its broken setup (a flipped PONI, a shifted beam centre, a wrong
rotation centre, angles in radians) and passes the correct one; a refusal is one line naming
the fix, a warning lands in the thresholds file, MLflow and the report."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, compose, small_sim_overrides
from lossbound.core.errors import ConfigError, GateRefused
from lossbound.core.gates import gate_settings
from lossbound.study.context import ContextSpec, raw_part
from lossbound.study.gates import check_gates

AZINT_SMALL = ["technique=azint", "dataset.simulation.detector=Pilatus300k", "dataset.simulation.poni_px=[300,240]",
               "dataset.simulation.distance_mm=120"]


def _part(overrides: list[str], cache):
    cfg = OmegaConf.to_container(compose([*overrides, f"paths.cache_dir={cache}"]), resolve=True)
    return raw_part(ContextSpec(technique=cfg["technique"], dataset=cfg["dataset"], cache_dir=str(cache))), cfg


def _shifted_poni(src, dst, *, rows: float = 0.0, cols: float = 0.0):
    import pyFAI

    ai = pyFAI.load(str(src))
    ai.poni1 += rows * ai.pixel1
    ai.poni2 += cols * ai.pixel2
    ai.save(str(dst))
    return dst


def test_gate_settings_are_checked_in_one_line():
    defaults = {"orientation": {"action": "refuse", "max_ratio": 1.5}}
    assert gate_settings(defaults, {"orientation": "warn"}, technique="azint")["orientation"]["action"] == "warn"
    with pytest.raises(ConfigError, match=r"technique.gates.orientaton: unknown gate for azint; expected one of: "
                                          r"orientation"):
        gate_settings(defaults, {"orientaton": "warn"}, technique="azint")
    with pytest.raises(ConfigError, match=r"technique.gates.orientation.action must be one of refuse \| warn \| off"):
        gate_settings(defaults, {"orientation": {"action": "stop"}}, technique="azint")
    with pytest.raises(ConfigError, match=r"technique.gates.orientation: unknown option\(s\) max"):
        gate_settings(defaults, {"orientation": {"max": 2}}, technique="azint")
    with pytest.raises(ConfigError, match=r"technique.gates.orientation.max_ratio must be a non-negative number"):
        gate_settings(defaults, {"orientation": {"max_ratio": "x"}}, technique="azint")


# -- azimuthal integration -----------------------------------------------------------------------

def test_ceo2_with_the_dioptas_flip_passes_and_without_it_the_study_refuses_naming_the_flip(shared_data, tmp_path):
    part, cfg = _part(["technique=azint", "dataset=ceo2_pilatus"], tmp_path / "cache")
    report = check_gates(part, cfg["technique"]["gates"], cache_dir=str(tmp_path / "cache"))
    assert report.statuses == {"orientation": "passed", "beam_centre": "passed"}
    assert report.records["orientation"]["value"] == 1.0
    assert report.records["beam_centre"]["value"] < 0.5  # a PONI fitted on this frame: 0.10 px
    # the whole command, as a user runs it: one line, exit 1, the orientation and the fix named
    proc = subprocess.run([sys.executable, "-m", "lossbound", "study", "technique=azint", "dataset=ceo2_pilatus",
                           "dataset.flipud=false", f"paths.runs_dir={tmp_path / 'runs'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ceo2_pilatus: gate orientation refused")
    assert "after a vertical flip: set dataset.flipud=true" in line and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "thresholds" / "azint.yaml").exists()  # nothing searched


def test_azint_beam_centre_off_by_five_pixels_is_measured_and_warned(tmp_path):
    part, cfg = _part([*AZINT_SMALL, f"paths.reference_data={tmp_path}"], tmp_path / "cache")
    good = check_gates(part, cfg["technique"]["gates"])
    assert good.statuses == {"orientation": "passed", "beam_centre": "passed"}
    assert good.records["beam_centre"]["value"] < 0.2
    data = part.raw.data
    poni = _shifted_poni(tmp_path / "sim_azint.poni", tmp_path / "off.poni", rows=5)
    off, cfg = _part(["technique=azint", "dataset=file", f"dataset.path={data.source}", f"dataset.poni={poni}"],
                     tmp_path / "cache")
    report = check_gates(off, cfg["technique"]["gates"])
    assert report.statuses == {"orientation": "passed", "beam_centre": "warning"}
    assert report.records["beam_centre"]["value"] == pytest.approx(5.0, abs=0.3)
    assert "re-fit the PONI" in report.warnings[0]
    # refuse when asked to
    with pytest.raises(GateRefused, match=r"gate beam_centre refused \(5\.\d+ px, limit 3\)"):
        check_gates(off, {"beam_centre": {"action": "refuse"}})
    # a frame flipped under its PONI: refused, the flip named
    flipped = tmp_path / "flipped.h5"
    with h5py.File(flipped, "w") as f:
        f["/entry/data/data"] = data.payload_array[:, ::-1]
    part, cfg = _part(["technique=azint", "dataset=file", f"dataset.path={flipped}",
                       f"dataset.poni={tmp_path / 'sim_azint.poni'}"], tmp_path / "cache")
    with pytest.raises(GateRefused, match=r"after a vertical flip: set dataset.flipud=true"):
        check_gates(part, cfg["technique"]["gates"])


def test_a_saxs_pattern_that_fits_its_poni_is_not_refused_for_a_chance_sharper_flip(tmp_path):
    """A smooth SAXS fall-off can score sharper under a flip (found on a campaign of small SAXS
    simulations: 2.6x after a horizontal flip); its rings are concentric about the PONI, so
    the orientation gate passes and says why. Flipped for real, it is still refused."""
    saxs = [*AZINT_SMALL[:3], "dataset.simulation.distance_mm=900", "+dataset.simulation.pattern=saxs",
            "dataset.simulation.seed=2", "dataset.sample=saxs", "dataset.calibrant=null"]
    part, cfg = _part([*saxs, f"paths.reference_data={tmp_path}"], tmp_path / "cache")
    report = check_gates(part, cfg["technique"]["gates"])
    orientation = report.records["orientation"]
    assert report.statuses["orientation"] == "passed", orientation
    assert orientation["value"] > 1.5 and "concentric about the PONI's centre" in orientation["detail"]
    flipped = tmp_path / "flipped.h5"
    with h5py.File(flipped, "w") as f:
        f["/entry/data/data"] = part.raw.data.payload_array[:, ::-1]
    part, cfg = _part(["technique=azint", "dataset=file", f"dataset.path={flipped}", "dataset.sample=saxs",
                       f"dataset.poni={tmp_path / 'sim_azint.poni'}"], tmp_path / "cache")
    report = check_gates(part, {"orientation": {"action": "warn"}})
    assert report.statuses["orientation"] == "warning" and report.statuses["beam_centre"] != "passed"


def test_a_warning_is_recorded_in_the_thresholds_file_mlflow_and_the_report(tmp_path):
    from lossbound.cli import evaluate

    part, _ = _part([*AZINT_SMALL, f"paths.reference_data={tmp_path}"], tmp_path / "cache")
    poni = _shifted_poni(tmp_path / "sim_azint.poni", tmp_path / "off.poni", cols=-4)
    cfg = compose(["technique=azint", "dataset=file", f"dataset.path={part.raw.data.source}", f"dataset.poni={poni}",
                   f"paths.runs_dir={tmp_path / 'runs'}", "codec=[quant_blosc2]", "search=grid",
                   "codec.quant_blosc2.bounds=[1]", "technique.noise_reference.mode=off", "sweep.progress=false"])
    res = evaluate.run(cfg)
    entry = res.thresholds["datasets"][part.raw.data.name]["gates"]
    assert entry["beam_centre"]["status"] == "warning" and entry["beam_centre"]["value"] == pytest.approx(4, abs=0.3)
    assert "re-fit the PONI" in entry["beam_centre"]["fix"] and entry["orientation"]["status"] == "passed"
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run = client.get_run(res.run_id)
    assert run.data.params["gate.beam_centre"] == "warning" and "gate beam_centre" in run.data.tags[
        "lossbound.gate_warnings"]
    assert run.data.metrics["gate.beam_centre.value"] == pytest.approx(4, abs=0.3)
    html = (tmp_path / "runs" / "reports" / "azint.html").read_text()
    assert "Quality gates" in html and "warning" in html and "re-fit the PONI" in html


# -- serial crystallography ----------------------------------------------------------------------

SX_SMALL = ["technique=sx", "dataset.simulation.n_frames=4", "dataset.simulation.misses=[]"]


def test_sx_gates_refuse_a_beam_centre_off_and_hits_that_do_not_index(tmp_path):
    part, cfg = _part([*SX_SMALL, f"paths.reference_data={tmp_path}"], tmp_path / "cache")
    good = check_gates(part, cfg["technique"]["gates"])
    assert set(good.statuses.values()) == {"passed"}, good.records
    data = part.raw.data
    user = ["technique=sx", "dataset=file", f"dataset.path={data.source}"]
    for shift in (6, 25):  # the stills still index (half of them at 25 px): the centre is what tells
        poni = _shifted_poni(tmp_path / "sim_sx.poni", tmp_path / f"off{shift}.poni", rows=shift)
        off, cfg = _part([*user, f"dataset.poni={poni}", "dataset.cell=[58.0,58.0,150.0,90.0,90.0,90.0]"],
                         tmp_path / "cache")
        report = check_gates(off, {**cfg["technique"]["gates"], "beam_centre": "warn"})
        centre = report.records["beam_centre"]
        assert centre["status"] == "warning" and centre["value"] == pytest.approx(shift, abs=1.0), centre["detail"]
        with pytest.raises(GateRefused, match=rf"gate beam_centre refused \({shift - 1}\.\d+|{shift}\.\d+ px.*"
                                              rf"correct it in dataset.poni"):
            check_gates(off, cfg["technique"]["gates"])
    # a wrong cell: the hits do not index
    wrong, cfg = _part([*user, f"dataset.poni={tmp_path / 'sim_sx.poni'}", "dataset.cell=[70.0,70.0,120.0,90.0,90.0,90.0]"],
                       tmp_path / "cache")
    with pytest.raises(GateRefused, match=r"gate indexing_rate refused \(0, limit 0.3\): few hits index: check the "
                                          r"beam centre"):
        check_gates(wrong, cfg["technique"]["gates"])


# -- tomography ----------------------------------------------------------------------------------

def test_tomo_gates_refuse_a_wrong_rotation_centre_and_angles_in_radians(tmp_path):
    base = small_sim_overrides(tmp_path)
    part, cfg = _part(base, tmp_path / "cache")
    good = check_gates(part, cfg["technique"]["gates"])
    assert set(good.statuses.values()) == {"passed"}, good.records
    assert good.records["rotation_centre"]["value"] < 0.5
    centre = part.prepared["center"]
    wrong, cfg = _part([*base, f"technique.pipeline.center={centre - 3}"], tmp_path / "cache")
    with pytest.raises(GateRefused, match=r"gate rotation_centre refused \([23]\.\d+ px, limit 1\).*check "
                                          r"technique.pipeline.center"):
        check_gates(wrong, cfg["technique"]["gates"])
    # the same scan with its angles stored in radians and no units attribute
    rad = tmp_path / "radians.h5"
    with h5py.File(part.raw.data.source, "r") as src, h5py.File(rad, "w") as dst:
        for key in ("exchange/data", "exchange/data_white", "exchange/data_dark"):
            dst[key] = src[key][()]
        dst["exchange/theta"] = np.deg2rad(src["exchange/theta"][()])
    broken, cfg = _part(["dataset=file", f"dataset.path={rad}", "dataset.adu_per_photon=1.0",
                         "technique.pipeline.max_rows=4"], tmp_path / "cache")
    with pytest.raises(GateRefused, match=r"gate angle_unit refused \(3\.1\d deg, limit 150–370\).*set "
                                          r"dataset.angle_unit=rad"):
        check_gates(broken, cfg["technique"]["gates"])
    fixed, cfg = _part(["dataset=file", f"dataset.path={rad}", "dataset.adu_per_photon=1.0", "dataset.angle_unit=rad",
                        "technique.pipeline.max_rows=4"], tmp_path / "cache")
    assert check_gates(fixed, cfg["technique"]["gates"]).statuses["angle_unit"] == "passed"
