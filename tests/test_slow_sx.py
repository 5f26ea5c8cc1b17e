"""Slow: serial-crystallography studies as a user runs them — the default simulation (its
truth recovered) and two measured thaumatin stills — with MLflow and merged thresholds."""
from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from browser import inspect_page, require_browser
from conftest import ROOT
from lossbound.results.thresholds import load_thresholds

pytestmark = pytest.mark.slow


def test_sx_default_study_recovers_the_truth_and_runs_on_thaumatin_and_a_users_files(tmp_path, shared_data):
    """Serial crystallography as a user runs it: the default simulation (two codecs), two thaumatin stills,
    and two other stills of that grid as a user's own files (dataset=file, cell given)."""
    runs = tmp_path / "runs"
    stills = shared_data / "mx" / "thaumatin_grid"
    user = tmp_path / "user"
    user.mkdir()
    for f in sorted(stills.glob("*.cbf.bz2"))[-2:]:
        (user / f.name).symlink_to(f)
    # the simulation with two codecs (every codec on it: tests/test_slow_monotonic.py)
    for extra in (["codec=[sz3,quant_blosc2]"], ["dataset=thaumatin", "+dataset.max_frames=2", "codec=[sz3]"],
                  ["dataset=file", f"dataset.path={user}", "dataset.cell=[58,58,150,90,90,90]",
                   "dataset.space_group=P41212", "codec=[sparsify_m2]", "search=grid", "codec.sparsify_m2.bounds=[3,6]",
                   "technique.noise_reference.mode=off"]):  # (saves CI a minute; the others have it)
        proc = subprocess.run([sys.executable, "-m", "lossbound", "study", "technique=sx", f"paths.runs_dir={runs}",
                               "sweep.progress=false", *extra], cwd=ROOT, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
    doc = load_thresholds(runs / "thresholds" / "sx.yaml")
    assert set(doc["datasets"]) == {"sim_sx", "thaumatin", "user"}     # a user's folder is named by the folder
    for ds, entry in doc["datasets"].items():  # no false alarm from a quality gate
        assert set(g["status"] for g in entry["gates"].values()) <= {"passed", "not measured"}, (ds, entry["gates"])
        assert entry["gates"]["indexing_rate"]["status"] == "passed", ds
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    sim = client.get_run(doc["datasets"]["sim_sx"]["mlflow_study_run_id"]).data.metrics
    assert sim["raw_hit_accuracy"] == 1.0 and sim["raw_true_spot_recall"] > 0.9
    assert sim["raw_indexed_rate"] == 1.0 and sim["raw_true_orientation_recovered"] == 1.0
    thau = client.get_run(doc["datasets"]["thaumatin"]["mlflow_study_run_id"]).data.metrics
    assert thau["raw_hit_rate"] == 1.0 and thau["raw_mean_spots_per_hit"] > 300
    assert thau["raw_indexed_rate"] == 1.0 and 1.0 < thau["raw_mean_rmsd_px"] < 2.5  # both stills indexed
    mine = client.get_run(doc["datasets"]["user"]["mlflow_study_run_id"]).data.metrics
    assert mine["raw_indexed_rate"] == 1.0 and mine["reduction_triage_ratio"] == 1.0
    points = [json.loads(line) for line in (runs / "journal" / "sx.jsonl").read_text().splitlines()]
    sparse = [p for p in points if p["setting"]["codec"] == "sparsify_m2" and p["dataset"] == "user"]
    assert len(sparse) == 2 and all(p["status"] == "ok" for p in sparse)
    assert all(p["codec"]["transform"] == "bragg_sparsify" and p["codec"]["transform_params"]["margin"] == 2
               for p in sparse)
    assert all(p["codec"]["masked_pixels_changed"] == 0 for p in points if p["status"] == "ok")
    # counts: the Poisson reference is on, and its ranges are recorded beside the fixed ones
    for ds in ("sim_sx", "thaumatin"):
        noise = doc["datasets"][ds]["noise_reference"]
        assert noise["model"].startswith("Poisson(counts)") and noise["resamples"] >= 4, ds
        assert noise["limits"]["refl_cc_strong_frames"]["factor"] == 0.5, ds   # per frame, or fixed and why
        assert noise["checks"]["dispersion"] == pytest.approx(1.0, abs=0.1), ds  # photon counts
        assert doc["datasets"][ds]["codecs"]["sz3"].get("confirmed") is not None, ds
    assert doc["datasets"]["user"]["noise_reference"]["unavailable"] == "technique.noise_reference.mode=off"
    assert doc["datasets"]["user"]["limits"]["spot_f1_frames"] == {"min": None, "max": 1.0, "kind": "frames"}
    # the geometry was refined once from the raw stills, and the study run says how well it fits
    assert "geometry_refinement_rmsd_before_px" in thau
    require_browser()
    check = inspect_page(runs / "reports" / "sx.html", screenshot=tmp_path / "sx_report.png")
    assert check.images_total >= 4 and check.images_loaded == check.images_total, check.broken_images
    assert not check.console_errors, check.console_errors
    assert "How much do we gain" in check.text and "thaumatin" in check.text
