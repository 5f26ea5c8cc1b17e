"""Slow end-to-end sweeps, run by `python -m pytest -m slow` (and CI): the README's main job on
the built-in data, and the measured tooth scan."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import h5py
import mlflow
import pytest

from conftest import ROOT, compose, rebuilt_filter_max_error
from pipelines.tomo.simulate import simulate_tomo
from lossbound.study.thresholds import load_thresholds

pytestmark = pytest.mark.slow


def test_default_sweep_as_in_readme(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "evaluate", "technique=tomo", f"paths.runs_dir={runs}", "sweep.progress=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Thresholds (largest bound" in proc.stdout + proc.stderr
    doc = load_thresholds(runs / "thresholds" / "tomo.yaml")
    assert set(doc["codecs"]) == {"sz3", "sz", "zfp", "sperr"}
    new = simulate_tomo(seed=11)["projections"][:40]  # another noise realisation: unseen data
    for name, entry in doc["codecs"].items():
        # the default bounds span well below to well above the noise: a threshold must exist
        # and the largest bounds must fail
        assert entry["bound"] is not None, name
        assert entry["bound"] < max(entry["tested_bounds"]), name
        assert entry["criteria"]["recon_error_to_noise"] <= 0.5
        assert rebuilt_filter_max_error(entry, new) <= entry["bound"], name
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tomo")
    children = [r for r in client.search_runs([exp.experiment_id], max_results=500)
                if "mlflow.parentRunId" in r.data.tags]
    n_bounds = 11
    assert len(children) == 2 + 4 * n_bounds
    assert all(r.info.status == "FINISHED" for r in children)


def test_tooth_sweep(tmp_path, shared_data):
    import evaluate

    tooth = shared_data / "tomo" / "tooth.h5"
    before = hashlib.sha256(tooth.read_bytes()).hexdigest()
    res = evaluate.run(compose([f"paths.runs_dir={tmp_path / 'runs'}", "dataset=tooth", "sweep.progress=false",
                                "tracking.log_figures=false"]))
    assert all(p.status == "ok" for p in res.points), [p.reason for p in res.points if p.status != "ok"]
    assert set(res.codecs) == {"sz3", "sz", "zfp", "sperr"}
    with h5py.File(tooth, "r") as f:
        frames = f["exchange/data"][:20]
    for name, entry in res.codecs.items():
        assert entry["bound"] is not None and entry["bound"] < max(entry["tested_bounds"]), name
        assert rebuilt_filter_max_error(entry, frames) <= entry["bound"], name
    assert hashlib.sha256(tooth.read_bytes()).hexdigest() == before
