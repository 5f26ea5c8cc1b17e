"""Slow: azimuthal-integration studies as a user runs them — the default simulation and every
measured powder/SAXS dataset — with search, MLflow and merged thresholds."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import mlflow
import pytest

from browser import inspect_page, require_browser
from conftest import ROOT
from lossbound.results.thresholds import load_thresholds

pytestmark = pytest.mark.slow

MEASURED = {"ceo2_pilatus": "CeO2_Pilatus1M.tif", "agbh_saxs": "AgBehenate_228.hdf5",
            "eiger_vacuum": "eiger9m_vacuum.h5"}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def azint_runs(tmp_path_factory, request):
    shared = ROOT.parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip(f"measured data folder {shared} is absent")
    runs = tmp_path_factory.mktemp("azint") / "runs"
    before = {ds: _sha(shared / "powder" / f) for ds, f in MEASURED.items()}
    outputs = {}
    for ds in ["sim_azint", *MEASURED]:
        args = [sys.executable, "-m", "lossbound", "study", "technique=azint", f"paths.runs_dir={runs}", "sweep.progress=false"]
        if ds != "sim_azint":
            args.append(f"dataset={ds}")
        if ds == "eiger_vacuum":  # 10 Mpx: every codec on it is the e2e benchmark's (benchmarks/run.py --e2e)
            args.append("codec=[quant_blosc2,zfp,sz3]")
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (ds, proc.stderr[-3000:])
        outputs[ds] = proc.stdout + proc.stderr
    after = {ds: _sha(shared / "powder" / f) for ds, f in MEASURED.items()}
    return runs, outputs, before, after


def test_every_dataset_adds_thresholds_and_the_quantiser_has_one(azint_runs):
    runs, outputs, before, after = azint_runs
    assert before == after  # raw files opened read-only
    doc = load_thresholds(runs / "thresholds" / "azint.yaml")
    assert set(doc["datasets"]) == {"sim_azint", *MEASURED}
    for ds, entry in doc["datasets"].items():
        assert "Thresholds (most lossy value" in outputs[ds]
        # no false alarm: every quality gate passes (or cannot be measured, e.g. no ring)
        assert set(g["status"] for g in entry["gates"].values()) <= {"passed", "not measured"}, (ds, entry["gates"])
        assert entry["gates"]["orientation"]["status"] == "passed", ds
        assert entry["reduction"]["profile_ratio"] > 10, ds
        quant = entry["codecs"]["quant_blosc2"]
        assert quant["bound"] is not None and quant["transform"] == "noise_quantiser", ds
        assert 0 <= quant["max_error_sigma"] <= quant["bound"] / 2, ds
        # never much worse than the same lossless filter alone (on the sparse Eiger frame the
        # column dither costs a little: 145.5x vs 145.7x)
        assert quant["compression_ratio"] >= entry["baselines"]["blosc2"]["compression_ratio"] * 0.99, ds
    assert doc["codecs"]["quant_blosc2"]["limiting_dataset"] in doc["datasets"]


def test_masked_pixels_never_change_at_any_point(azint_runs):
    runs, *_ = azint_runs
    points = [json.loads(line) for line in (runs / "journal" / "azint.jsonl").read_text().splitlines()]
    assert len(points) > 40
    ok = [p for p in points if p["status"] == "ok"]
    assert {p["dataset"] for p in ok} == {"sim_azint", *MEASURED}
    assert all(p["codec"]["masked_pixels"] > 0 for p in ok if p["dataset"] != "agbh_saxs")
    assert all(p["codec"]["masked_pixels_changed"] == 0 for p in ok)


def test_profiles_with_sigma_residuals_are_mlflow_artifacts(azint_runs):
    runs, *_ = azint_runs
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("azint")
    doc = load_thresholds(runs / "thresholds" / "azint.yaml")
    for ds, entry in doc["datasets"].items():
        run_id = entry["codecs"]["quant_blosc2"]["mlflow_run_id"]
        assert "comparison.png" in {a.path for a in client.list_artifacts(run_id)}, ds
        study = client.get_run(entry["mlflow_study_run_id"])
        assert study.info.experiment_id == exp.experiment_id
        assert "reduction_centre_half_pixel_max_dev_sigma" in study.data.metrics



def test_noise_reference_on_count_frames_and_the_report_in_chromium(azint_runs, tmp_path):
    """Every measured frame is counts: the Poisson reference is on by default; chi2 of one
    re-measurement against the raw profile is about 1 where sigma is the counting noise."""
    runs, _, _, _ = azint_runs
    doc = load_thresholds(runs / "thresholds" / "azint.yaml")
    for ds, entry in doc["datasets"].items():
        noise = entry["noise_reference"]
        assert noise["model"].startswith("Poisson(counts)") and noise["resamples"] >= 6, ds   # K grows from 6
        # per frame, a quadratic metric: each frame's allowance is 0.5**2 of its own noise effect
        crit = next(c for c in entry["criteria_record"] if c["metric"] == "profile_chi2_red_frames")
        assert crit["power"] == 2 and crit["factor"] == 0.5, ds
        for allow, effect, source in zip(crit["allow_hi"], crit["effects"], crit["source"]):
            if source == "noise":
                assert allow == pytest.approx(0.25 * effect), ds
    assert 0.7 < doc["datasets"]["sim_azint"]["noise_reference"]["limits"]["profile_chi2_red_frames"]["noise_effect"] < 1.3
    require_browser()
    check = inspect_page(runs / "reports" / "azint.html", screenshot=tmp_path / "azint_report.png")
    assert check.images_total >= 6 and check.images_loaded == check.images_total, check.broken_images
    assert not check.console_errors, check.console_errors
    for ds in doc["datasets"]:
        assert ds in check.text
