"""Campaigns end to end: through a real SLURM (single node, brought up by tools/slurm_up.sh)
into a real MLflow tracking server with basic auth (no run lost, every dataset in the thresholds
file, the review round trip signed by the logged-in user), and killed with SIGKILL then re-run
(no finished point recomputed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from servers import mlflow_server
from test_campaign import _campaign, _write_scans

pytestmark = pytest.mark.slow

USER = ("campaigner", "campaigner-password-1")


def _slurm_or_skip() -> None:
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        pytest.skip("no SLURM installed (Debian slurmctld slurmd munge slurm-client; .ci/run installs them)")
    proc = subprocess.run([str(ROOT / "tools" / "slurm_up.sh")], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"SLURM could not be brought up: {(proc.stdout + proc.stderr).strip().splitlines()[-1]}")


def test_a_campaign_of_six_datasets_on_slurm_into_a_basic_auth_server(tmp_path):
    _slurm_or_skip()
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app is not installed (pip install 'lossbound[server]')")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the submitit launcher is not installed (pip install 'lossbound[slurm]')")
    from mlflow.tracking import MlflowClient

    scans = tmp_path / "scans"
    names = [("powder", f"p{i}") for i in range(3)] + [("saxs", f"s{i}") for i in range(3)]
    _write_scans(scans, [(g, n, k) for k, (g, n) in enumerate(names)])
    campaign = _campaign(tmp_path / "azint.yaml", scans, names)
    with mlflow_server(tmp_path / "server", auth=True) as server:
        server.create_user(*USER)
        env = {**os.environ, "LOSSBOUND_HOME": str(tmp_path / "runs"), "MLFLOW_TRACKING_URI": server.uri,
               "MLFLOW_TRACKING_USERNAME": USER[0], "MLFLOW_TRACKING_PASSWORD": USER[1]}
        cmd = [sys.executable, "-m", "lossbound", "campaign", "run", str(campaign), "hydra/launcher=slurm",
               "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20",
               "codec=[sz3]", "search=grid", "sweep.bounds=[2,8]", "sweep.progress=false"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert "6 of 6 dataset(s) done" in proc.stdout
        # submitit's accounting warnings are handled: said once, not repeated, sacct's own line gone
        assert "Bypassing sacct error" not in out and "accounting storage is disabled" not in out
        assert out.count("SLURM accounting is off here") <= 1

        doc = yaml.safe_load((tmp_path / "runs" / "thresholds" / "azint.yaml").read_text())
        assert set(doc["datasets"]) == {n for _, n in names}
        assert set(doc["groups"]) == {"powder", "saxs"}
        assert all(d["mlflow_tracking_uri"] == server.uri for d in doc["datasets"].values())

        # 0 lost runs: one FINISHED study run per dataset, each with every point it evaluated
        os.environ.update(MLFLOW_TRACKING_USERNAME=USER[0], MLFLOW_TRACKING_PASSWORD=USER[1])
        try:
            client = MlflowClient(server.uri)
            exp = client.get_experiment_by_name("azint")
            runs = client.search_runs([exp.experiment_id], max_results=1000)
            states = {r.info.status for r in runs}
            assert states == {"FINISHED"}, states
            studies = [r for r in runs if r.data.tags.get("lossbound.role") == "study"]
            assert sorted(r.data.tags["lossbound.dataset"] for r in studies) == sorted(n for _, n in names)
            for study in studies:
                points = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
                assert len(points) == int(study.data.metrics["n_evaluated"]) > 0
            assert {r.data.tags.get("mlflow.user") for r in studies} == {USER[0]}
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)

        # the review round trip: the logged-in user signs the SAXS group's threshold
        group = next(g for g, v in doc["groups"].items() if v["codecs"]["sz3"]["bound"] is not None)
        review = subprocess.run([sys.executable, "-m", "lossbound", "review", "approve", "azint", "sz3", "--group",
                                 group, "--note", "campaign on SLURM"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert review.returncode == 0, review.stderr
        doc = yaml.safe_load((tmp_path / "runs" / "thresholds" / "azint.yaml").read_text())
        status = doc["groups"][group]["codecs"]["sz3"]["review"]
        assert status["status"] == "approved" and status["reviewer"] == USER[0] and status["authenticated"] is True
        os.environ.update(MLFLOW_TRACKING_USERNAME=USER[0], MLFLOW_TRACKING_PASSWORD=USER[1])
        try:
            tagged = [r for r in MlflowClient(server.uri).search_runs([exp.experiment_id], max_results=1000)
                      if r.data.tags.get(f"lossbound.review.group.{group}.reviewer") == USER[0]]
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        assert len(tagged) >= 2  # per dataset of the group: the point at the threshold and the study run


def test_a_campaign_killed_with_sigkill_resumes_without_recomputing_a_finished_point(tmp_path):
    """kill -9 of the whole campaign (the command and its joblib workers) mid-way, then the same
    command again: every dataset ends in the thresholds file, and no point in the journal
    before the kill is evaluated again."""
    import json
    import signal
    import time

    scans = tmp_path / "scans"
    names = [("powder", "p0"), ("saxs", "s0"), ("powder", "p1")]
    _write_scans(scans, [(g, n, k) for k, (g, n) in enumerate(names)])
    campaign = _campaign(tmp_path / "azint.yaml", scans, names)
    env = {**os.environ, "LOSSBOUND_HOME": str(tmp_path / "runs")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "lossbound", "campaign", "run", str(campaign), "hydra.launcher.n_jobs=1",
           "sweep.workers=1", "codec=[sz3]", "search=grid", "sweep.bounds=[1,2,4,8]", "sweep.progress=false"]
    journal = tmp_path / "runs" / "journal" / "azint.jsonl"

    def lines() -> list[dict]:
        return [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while len(lines()) < 9 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the campaign ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p["point_id"] for p in lines()}
    assert 9 <= len(before) < 21  # mid-way: 3 datasets x 7 points
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "3 of 3 dataset(s) done" in rerun.stdout
    ids = [p["point_id"] for p in lines()]
    again = [i for i in ids if i in before and ids.count(i) > 1]
    assert not again, f"{len(set(again))} finished point(s) evaluated again"
    assert len(set(ids)) == 21
    doc = yaml.safe_load((tmp_path / "runs" / "thresholds" / "azint.yaml").read_text())
    assert set(doc["datasets"]) == {n for _, n in names}
