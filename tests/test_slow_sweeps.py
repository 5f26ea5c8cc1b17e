"""Slow end-to-end studies, run by `python -m pytest -m slow` (and CI): the README's main job on
the built-in data, the measured tooth scan after it, multirun launchers and a tracking server."""
from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time

import h5py
import mlflow
import pytest

from conftest import ROOT, compose, rebuilt_filter_max_error, small_sim_overrides
from lossbound.codecs import roundtrip
from lossbound.results.thresholds import load_thresholds, setting_for
from lossbound.pipelines.tomo.simulate import simulate_tomo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The README's main job, as a user types it (bisection search by default)."""
    runs = tmp_path_factory.mktemp("default") / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "lossbound", "study", "technique=tomo", f"paths.runs_dir={runs}", "sweep.progress=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs, proc.stdout + proc.stderr


def test_default_study_as_in_readme(default_runs):
    runs, out = default_runs
    assert "Thresholds (most lossy value" in out
    assert "workflowType=machine_learning" in out  # the expert lands on the runs
    doc = load_thresholds(runs / "thresholds" / "tomo.yaml")
    entry = doc["datasets"]["sim_tomo"]
    assert set(entry["codecs"]) == {"sz3", "sz", "zfp", "sperr", "quant_blosc2"}
    new = simulate_tomo(seed=11)["projections"][:40]  # another noise realisation: unseen data
    evaluations = 0
    for name, e in entry["codecs"].items():
        assert e["bound"] is not None, name
        assert e["first_failure"]["bound"] / e["bound"] <= 2 ** 0.5 + 1e-6, name  # resolution reached
        assert e["criteria"]["recon_error_to_noise"] <= 0.5
        if e["bound_kind"] == "absolute":
            assert rebuilt_filter_max_error(e, new) <= e["bound"], name
        else:  # the quantiser chain, re-applied to unseen data, keeps its sigma-relative bound
            assert roundtrip(new, setting_for(e)).bound_held, name
        evaluations += e["evaluations"]
    assert evaluations <= 5 * 21 / 3  # bisection: at most a third of a sqrt(2) grid
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tomo")
    children = [r for r in client.search_runs([exp.experiment_id], max_results=500)
                if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3 + evaluations
    assert all(r.info.status == "FINISHED" for r in children)
    # figures (tracking.figures=thresholds): the threshold point and the first failure per codec
    with_figure = {r.info.run_id for r in children
                   if "comparison.png" in {a.path for a in client.list_artifacts(r.info.run_id)}}
    wanted = {e[k] for e in entry["codecs"].values() for k in ("mlflow_run_id",)} | \
        {e["first_failure"]["mlflow_run_id"] for e in entry["codecs"].values()}
    assert with_figure == wanted and len(wanted) == 10


def test_tooth_after_the_default_keeps_both_and_names_the_limiting_dataset(default_runs, shared_data):
    from lossbound.cli import evaluate

    runs, _ = default_runs
    tooth = shared_data / "tomo" / "tooth.h5"
    before = hashlib.sha256(tooth.read_bytes()).hexdigest()
    res = evaluate.run(compose([f"paths.runs_dir={runs}", "dataset=tooth", "sweep.progress=false"]))
    assert all(p.status == "ok" for p in res.points), [p.reason for p in res.points if p.status != "ok"]
    assert set(res.codecs) == {"sz3", "sz", "zfp", "sperr"}
    for ds in ("sim_tomo", "tooth"):  # no false alarm from a quality gate
        gates = res.thresholds["datasets"][ds]["gates"]
        assert {g["status"] for g in gates.values()} == {"passed"}, (ds, gates)
    with h5py.File(tooth, "r") as f:
        frames = f["exchange/data"][:20]
    for name, entry in res.codecs.items():
        assert entry["bound"] is not None and entry["first_failure"] is not None, name
        assert rebuilt_filter_max_error(entry, frames) <= entry["bound"], name
    assert hashlib.sha256(tooth.read_bytes()).hexdigest() == before
    doc = load_thresholds(runs / "thresholds" / "tomo.yaml")
    assert set(doc["datasets"]) == {"sim_tomo", "tooth"}
    assert "quant_blosc2" in doc["datasets"]["tooth"]["codecs_not_applicable"]  # float32 data: no counts
    for name, combined in doc["codecs"].items():
        if name not in doc["datasets"]["tooth"]["codecs"]:
            continue
        per = {ds: doc["datasets"][ds]["codecs"][name]["bound"] for ds in ("sim_tomo", "tooth")}
        assert combined["bound"] == min(per.values()), name
        assert per[combined["limiting_dataset"]] == combined["bound"], name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    """A real MLflow tracking server on 127.0.0.1 with a sqlite backend (the multi-user set-up)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def _multirun(tmp_path, launcher: list[str], extra: list[str] = ()) -> subprocess.CompletedProcess:
    over = small_sim_overrides(tmp_path) + ["search=grid", "sweep.bounds=[2,32,512]", *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "lossbound", "study", "-m", "technique=tomo", "codec=sz3,sz,zfp,sperr", *launcher, *over],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _check_every_point_in_mlflow(tmp_path, uri: str) -> None:
    journal = (tmp_path / "runs" / "journal" / "tomo.jsonl").read_text().splitlines()
    import json

    point_ids = {json.loads(line)["point_id"] for line in journal}
    assert len(point_ids) == 3 + 4 * 3  # baselines measured in one job, the others reused them
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tomo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    logged = {r.data.tags.get("point_id") for r in runs if r.data.tags.get("lossbound.role") == "point"
              and r.info.status == "FINISHED"}
    assert point_ids <= logged
    studies = [r for r in runs if r.data.tags.get("lossbound.role") == "study"]
    multirun = [r for r in runs if r.data.tags.get("lossbound.role") == "multirun"]
    assert len(studies) == 4 and len(multirun) == 1 and multirun[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in studies} == {multirun[0].info.run_id}
    doc = load_thresholds(tmp_path / "runs" / "thresholds" / "tomo.yaml")
    assert set(doc["datasets"]["sim_tomo"]["codecs"]) == {"sz3", "sz", "zfp", "sperr"}


def test_joblib_multirun_against_a_tracking_server_loses_no_run(tmp_path, tracking_server):
    _multirun(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
              [f"tracking.tracking_uri={tracking_server}"])
    _check_every_point_in_mlflow(tmp_path, tracking_server)


def test_submitit_local_multirun_merges_one_thresholds_file(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the submitit launcher is not installed (pip install 'lossbound[slurm]')")
    _multirun(tmp_path, ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"])
    _check_every_point_in_mlflow(tmp_path, f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")


@pytest.mark.parametrize("dataset", ["sim_tomo", "tooth"])
def test_verdicts_do_not_flip_from_fail_back_to_pass_over_the_default_range(dataset, tmp_path, shared_data):
    """Every codec on every shipped dataset, over the default grid: once a bound fails, every
    larger bound fails too (the defective-pixel handling removed the jumps seen on real scans)."""
    from lossbound.cli import evaluate

    res = evaluate.run(compose([f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={ROOT / 'runs' / 'cache'}",
                                f"dataset={dataset}", "search=grid", "sweep.progress=false",
                                "tracking.figures=none", "acquisition.quiet_core.enabled=false"]))  # verdicts, not speed
    for name, entry in res.codecs.items():
        assert "passed_above_first_failure" not in entry, (name, entry["tested_values"], entry["first_failure"])
        assert entry["bound"] is not None, name
