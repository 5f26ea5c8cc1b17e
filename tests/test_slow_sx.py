"""Slow: serial-crystallography studies as a user runs them — the default simulation (its
truth recovered) and two measured thaumatin stills — with MLflow and merged thresholds."""
from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from conftest import ROOT
from lossbound.study.thresholds import load_thresholds

pytestmark = pytest.mark.slow


def test_sx_default_study_recovers_the_true_spots_and_runs_on_thaumatin(tmp_path, shared_data):
    """Serial crystallography as a user runs it: the default simulation, then two thaumatin stills."""
    runs = tmp_path / "runs"
    for extra in ([], ["dataset=thaumatin", "+dataset.max_frames=2", "codec=[sz3]"]):
        proc = subprocess.run([sys.executable, "-m", "evaluate", "technique=sx", f"paths.runs_dir={runs}",
                               "sweep.progress=false", *extra], cwd=ROOT, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
    doc = load_thresholds(runs / "thresholds" / "sx.yaml")
    assert set(doc["datasets"]) == {"sim_sx", "thaumatin"}
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    sim = client.get_run(doc["datasets"]["sim_sx"]["mlflow_study_run_id"]).data.metrics
    assert sim["raw.hit_accuracy"] == 1.0 and sim["raw.true_spot_recall"] > 0.9
    thau = client.get_run(doc["datasets"]["thaumatin"]["mlflow_study_run_id"]).data.metrics
    assert thau["raw.hit_rate"] == 1.0 and thau["raw.mean_spots_per_hit"] > 300
    points = [json.loads(line) for line in (runs / "journal" / "sx.jsonl").read_text().splitlines()]
    assert all(p["codec"]["masked_pixels_changed"] == 0 for p in points if p["status"] == "ok")
