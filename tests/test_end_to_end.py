"""End to end: a small sweep writes MLflow runs and a thresholds file that rebuilds into a
working hdf5plugin filter; bad input and crashing points are handled."""
from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pytest

from conftest import ROOT, compose, rebuilt_filter_max_error, small_sim_overrides
from lossbound.results.thresholds import load_thresholds


@pytest.fixture(scope="module")
def sweep_result(tmp_path_factory):
    from lossbound.cli import evaluate

    tmp = tmp_path_factory.mktemp("e2e")
    cfg = compose(small_sim_overrides(tmp) + ["codec=[sz3,zfp]", "search=grid", "sweep.bounds=[1,8,4096]",
                                              "tracking.figures=all"])
    return tmp, evaluate.run(cfg)


def test_sweep_logs_one_mlflow_run_per_point(sweep_result):
    tmp, res = sweep_result
    # 3 baselines + 2 codecs x 3 bounds
    assert len(res.points) == 9
    assert all(p.status == "ok" for p in res.points), [p.reason for p in res.points]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tomo")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 9
    sz3_1 = next(r for r in children if r.data.params["codec"] == "sz3" and float(r.data.params["bound"]) == 1.0)
    for key in ("ratio", "compress_mbps", "decompress_mbps", "max_abs_error", "recon_ssim", "frc_resolution_change",
                "seg_dice_min", "proj_rms_error_sigma", "passed"):
        assert key in sz3_1.data.metrics, key
    assert sz3_1.data.tags["point_id"] in {p.point_id for p in res.points}
    assert sz3_1.info.run_name == "tomo · sim_tomo · sz3 absolute=1"
    assert {a.path for a in client.list_artifacts(sz3_1.info.run_id)} == {"comparison.png"}
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert len(parent.data.params["dataset_sha256"]) == 64
    assert {"sweep.png", "summary.txt", "tomo.yaml", "config.yaml"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    (dataset_input,) = parent.inputs.dataset_inputs
    assert dataset_input.dataset.name == "sim_tomo" and len(dataset_input.dataset.digest) >= 32


def test_thresholds_file_rebuilds_a_filter_that_keeps_its_bound(sweep_result):
    tmp, res = sweep_result
    doc = load_thresholds(tmp / "runs" / "thresholds" / "tomo.yaml")
    assert set(doc["codecs"]) == {"sz3", "zfp"}
    entry = doc["datasets"]["sim_tomo"]
    assert set(entry["baselines"]) == {"bitshuffle_lz4", "zstd", "blosc2"}
    assert entry["dataset"]["sha256"] and entry["versions"]["hdf5plugin"] and entry["date"]
    sz3 = entry["codecs"]["sz3"]
    assert sz3["search"]["strategy"] == "grid" and sz3["evaluations"] == 3 and sz3["mlflow_run_id"]
    assert doc["codecs"]["sz3"]["bound"] == sz3["bound"] and doc["codecs"]["sz3"]["limiting_dataset"] == "sim_tomo"
    # bound 1 count is far below the photon noise: it must pass; 4096 counts must not
    assert sz3["bound"] in (1, 8)
    assert sz3["first_failure"]["bound"] in (8, 4096)
    assert sz3["filter_id"] == 32024 and sz3["cd_values"]
    rng = np.random.default_rng(7)
    new = rng.poisson(5000, size=(6, 40, 50)).astype(np.uint16)
    assert rebuilt_filter_max_error(sz3, new) <= sz3["bound"]


def test_raw_result_is_cached_between_sweeps(tmp_path):
    from lossbound.cli import evaluate

    overrides = small_sim_overrides(tmp_path) + ["codec=[sz3]", "search=grid", "sweep.bounds=[2]",
                                                 "sweep.baselines=[]", "paths.journal_dir=null"]
    from lossbound.study import context

    first = evaluate.run(compose(overrides))
    context.forget_contexts()  # a new process: only the disk cache is left
    second = evaluate.run(compose(overrides))
    assert not first.raw_cached and second.raw_cached
    assert first.points[0].metrics == pytest.approx(second.points[0].metrics)


def test_a_crashing_point_is_recorded_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    from lossbound.cli import evaluate
    from lossbound.pipelines.tomo.technique import TomoTechnique

    real_run = TomoTechnique.run

    def flaky(self, data, prepared):
        # the pipeline blows up on one compressed payload only (sz3 at 4 counts: max error 4)
        payload = data.payload_array
        raw = self._raw_for_test if hasattr(self, "_raw_for_test") else None
        if raw is not None and abs(payload.astype(float) - raw).max() == 4:
            raise MemoryError("simulated")
        return real_run(self, data, prepared)

    real_prepare = TomoTechnique.prepare

    def remember(self, raw):
        self._raw_for_test = raw.payload_array.astype(float)
        return real_prepare(self, raw)

    monkeypatch.setattr(TomoTechnique, "run", flaky)
    monkeypatch.setattr(TomoTechnique, "prepare", remember)
    res = evaluate.run(compose(small_sim_overrides(tmp_path) + [
        "codec=[sz3]", "search=grid", "sweep.bounds=[2,4,8]", "sweep.baselines=[]", "sweep.workers=1",
        "technique.pipeline.max_rows=3"]))  # another pipeline than other tests: no cached raw result
    status = {p.value: p.status for p in res.points}
    assert status == {2: "ok", 4: "failed", 8: "ok"}
    failed = next(p for p in res.points if p.status == "failed")
    assert "MemoryError: simulated" in failed.reason
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run = client.get_run(failed.run_id)
    assert run.info.status == "FAILED" and "simulated" in run.data.tags["failure_reason"]
    # the threshold cannot step over a failed point
    assert res.codecs["sz3"]["bound"] in (2, None)


def test_missing_input_file_is_one_line_and_nonzero_exit(tmp_path):
    missing = tmp_path / "nope.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "lossbound", "study", "dataset=file", f"dataset.path={missing}",
         f"paths.runs_dir={tmp_path / 'runs'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(missing) in last


def test_unknown_tolerance_metric_is_a_config_error(tmp_path):
    from lossbound.cli import evaluate
    from lossbound.core.errors import ConfigError

    cfg = compose(small_sim_overrides(tmp_path) + ["codec=[sz3]", "sweep.bounds=[2]",
                                                   "+technique.tolerances.not_a_metric={min: 1}"])
    with pytest.raises(ConfigError, match="not_a_metric"):
        evaluate.run(cfg)


def test_two_users_scans_with_one_name_both_stay_in_the_thresholds_file(tmp_path):
    """Two users' own scans, both `scan.h5` and both run as dataset=file, keep two entries
    (`scan`, `scan-2`); the combined bound names the one that limits it."""
    from lossbound.cli import evaluate
    from lossbound.study import context
    from lossbound.pipelines.tomo.simulate import simulate_tomo, write_dataexchange

    paths = []
    for user, seed in (("u1", 1), ("u2", 2)):
        scan = simulate_tomo(n_angles=90, n_rows=4, n_cols=64, seed=seed)
        path = tmp_path / user / "scan.h5"
        path.parent.mkdir()
        write_dataexchange(path, {k: scan[k] for k in ("projections", "flats", "darks", "theta")})
        paths.append(path)
    for path in paths:
        context.forget_contexts()
        evaluate.run(compose([f"paths.runs_dir={tmp_path / 'runs'}", "dataset=file", f"dataset.path={path}",
                              "codec=[sz3]", "search=grid", "sweep.bounds=[8,64]", "sweep.baselines=[]",
                              "sweep.progress=false", "tracking.figures=none", "technique.pipeline.max_rows=2"]))
    doc = load_thresholds(tmp_path / "runs" / "thresholds" / "tomo.yaml")
    assert set(doc["datasets"]) == {"scan", "scan-2"}
    assert {doc["datasets"][n]["dataset"]["source"] for n in ("scan", "scan-2")} == {str(p) for p in paths}
    assert set(doc["codecs"]["sz3"]["per_dataset"]) == {"scan", "scan-2"}
    # the gain was measured from each scan's flats (nothing declared; 4 x 64 pixels: +-2 %)
    checks = doc["datasets"]["scan"]["noise_reference"]["checks"]
    assert checks["gain_declared"] is None
    assert abs(checks["gain_measured"] - 1.0) < 4 * checks["gain_measured_se"]
    for e in doc["datasets"]["scan"]["codecs"].values():
        assert "bound_range" in e and "confirmed" in e
