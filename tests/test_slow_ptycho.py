"""Slow: the measured Siemens-star ptychography scan end to end, as a user runs it — raw file
read-only, gates recorded, thresholds, report and MLflow runs."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import mlflow
import pytest

from conftest import ROOT
from lossbound.pipelines.ptycho import engine
from lossbound.results.thresholds import load_thresholds

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(engine.available() is not None,
                                 reason="ptycho needs the optional part: pip install 'lossbound[ptycho]'")]


def test_siemens_star_study_end_to_end(shared_data, tmp_path):
    scan = shared_data / "ptycho" / "siemens-star-small.npz.bz2"
    if not scan.is_file():
        pytest.skip(f"{scan} is absent")
    before = hashlib.sha256(scan.read_bytes()).hexdigest()
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "lossbound", "study", "technique=ptycho", "dataset=siemens_star",
                           "codec=[quant_blosc2,zfp]", f"paths.runs_dir={runs}", "sweep.progress=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hashlib.sha256(scan.read_bytes()).hexdigest() == before
    entry = load_thresholds(runs / "thresholds" / "ptycho.yaml")["datasets"]["siemens_star"]
    gates = entry["gates"]
    assert gates["data_fit"]["status"] == "passed" and gates["data_fit"]["value"] < 3
    assert gates["stability"]["value"] > 0          # the floor is measured and recorded
    codecs = entry["codecs"]
    assert {"quant_blosc2", "zfp"} <= set(codecs) and "blosc2" in entry["baselines"]
    for name in ("quant_blosc2", "zfp"):
        c = codecs[name]
        assert c["bound"] is None or c["limiting_criterion"] in {"phase_rms_change", "amplitude_rms_change",
                                                                  "phase_frc_high"}
    html = (runs / "reports" / "ptycho.html").read_text()
    assert "siemens_star" in html and "phase_rms_change" in html
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("ptycho").experiment_id], max_results=200)
    points = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(points) >= 5 and all(r.data.metrics["masked_pixels_changed"] == 0 for r in points)
    assert all(r.data.metrics["phase_rms_floor"] > 0 for r in points if "phase_rms_floor" in r.data.metrics)
