"""The study engine on real (small) studies: search vs grid, resume after kill -9, thresholds
across datasets, evaluator walls. Real codecs, real reconstructions, a real MLflow store."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from conftest import ROOT, compose, small_sim_overrides
from lossbound.core.errors import ConfigError
from lossbound.results.thresholds import load_thresholds

# sqrt(2) steps over [2, 2048], rounded to integers: the default data are integer counts, where a
# fractional absolute bound is no tighter (and SZ exceeds it by rounding it up)
GRID = [round(2 * math.sqrt(2) ** k) for k in range(21)]


def _run(overrides):
    from lossbound.cli import evaluate
    from lossbound.study import context

    context.forget_contexts()  # as a new process would
    return evaluate.run(compose(overrides))


def test_bisect_reaches_the_grid_threshold_with_a_third_of_the_evaluations(tmp_path):
    """On real codecs and reconstructions: search=bisect vs a sqrt(2) grid over [2, 2048]."""
    common = small_sim_overrides(tmp_path) + ["codec=[sz3,sperr]", "sweep.baselines=[]", "tracking.enabled=false"]
    grid = _run(common + ["search=grid", f"sweep.bounds=[{','.join(map(str, GRID))}]",
                          f"paths.journal_dir={tmp_path / 'journal_grid'}"])
    bisect = _run(common + ["search=bisect", f"paths.journal_dir={tmp_path / 'journal_bisect'}"])
    for codec in ("sz3", "sperr"):
        g, b = grid.codecs[codec], bisect.codecs[codec]
        assert g["evaluations"] == 21
        assert b["evaluations"] <= 7, b["tested_values"]
        assert g["bound"] is not None and b["bound"] is not None
        assert abs(math.log(b["bound"] / g["bound"])) <= math.log(math.sqrt(2)) + 1e-6, (g["bound"], b["bound"])
        assert b["search"]["strategy"] == "bisect"


def test_kill_9_then_rerun_recomputes_nothing_finished(tmp_path):
    over = small_sim_overrides(tmp_path) + [
        "codec=[sz3,sz]", "search=grid", f"sweep.bounds=[{','.join(map(str, GRID))}]", "sweep.workers=1"]
    journal = tmp_path / "runs" / "journal" / "tomo.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "evaluate", *over], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) >= 6:
                break
            assert proc.poll() is None, "the study ended before it could be killed"
            time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    finished = {json.loads(line)["point_id"] for line in journal.read_text().splitlines() if line.endswith("}")}
    assert 6 <= len(finished) < 3 + 2 * len(GRID)

    res = _run(over)
    assert res.reused == len(finished)
    recomputed = {p.point_id for p in res.points if not p.reused}
    assert not recomputed & finished
    assert len(res.points) == 3 + 2 * len(GRID)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tomo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    statuses = [r.info.status for r in runs]
    assert "RUNNING" not in statuses
    assert statuses.count("KILLED") >= 1  # the study run of the killed process (and its point)
    # every finished point still has its run: the re-run logged only the recomputed ones
    point_runs = [r for r in runs if r.data.tags.get("lossbound.role") == "point" and r.info.status == "FINISHED"]
    assert {r.data.tags["point_id"] for r in point_runs} >= finished | recomputed


def test_a_second_dataset_adds_and_the_limiting_one_is_named(tmp_path):
    base = small_sim_overrides(tmp_path) + ["codec=[sz3]", "search=grid", "sweep.bounds=[2,32,128,512]",
                                            "sweep.baselines=[]", "tracking.enabled=false"]
    a = _run(base)
    # another sample (other seed, brighter beam would be another dataset too): its own name and file
    b = _run(base + [f"paths.reference_data={tmp_path / 'other'}", "dataset.name=sim_other",
                     "dataset.simulation.seed=5", "dataset.simulation.n_cols=64"])
    doc = load_thresholds(tmp_path / "runs" / "thresholds" / "tomo.yaml")
    assert set(doc["datasets"]) == {"sim_tomo", "sim_other"}
    bounds = {"sim_tomo": a.codecs["sz3"]["bound"], "sim_other": b.codecs["sz3"]["bound"]}
    combined = doc["codecs"]["sz3"]
    assert combined["bound"] == min(bounds.values())
    assert bounds[combined["limiting_dataset"]] == combined["bound"]
    assert {k: v["bound"] for k, v in combined["per_dataset"].items()} == bounds
    # running the first dataset again never erases the second
    _run(base)
    assert set(load_thresholds(tmp_path / "runs" / "thresholds" / "tomo.yaml")["datasets"]) == {"sim_tomo", "sim_other"}


def test_two_evaluators_writing_one_metric_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="both produce metric 'recon_psnr'"):
        _run(small_sim_overrides(tmp_path) + ["codec=[sz3]", "tracking.enabled=false",
                                              "+technique.evaluators.second={evaluator: image_quality}"])
    # with its own prefix the second evaluator is welcome
    res = _run(small_sim_overrides(tmp_path) + [
        "codec=[sz3]", "search=grid", "sweep.bounds=[4]", "sweep.baselines=[]", "tracking.enabled=false",
        "+technique.evaluators.full={evaluator: image_quality, prefix: full, mask: null}"])
    m = res.points[0].metrics
    assert {"recon_psnr", "full_psnr"} <= set(m) and m["recon_psnr"] != m["full_psnr"]


def test_a_dataset_logged_by_two_jobs_at_once_is_linked_not_an_error(tmp_path, monkeypatch):
    """Two multirun jobs logging one dataset race on the store's unique key (seen in CI against
    a tracking server); the loser's retry must find the row and link it to its run."""
    from mlflow.exceptions import RestException

    from lossbound.tracking.tracker import Tracker

    tracker = Tracker({"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "race"})
    first, second = tracker.start_run("a"), tracker.start_run("b")
    source = str(tmp_path / "data.h5")
    tracker.log_dataset(first, name="d", digest="0" * 40, source=source, context="raw")
    real = tracker.client.log_inputs
    calls = []

    def lose_the_race_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RestException({"error_code": "BAD_REQUEST", "message":
                                 "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                 "datasets.name, datasets.digest"})
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_inputs", lose_the_race_once)
    tracker.log_dataset(second, name="d", digest="0" * 40, source=source, context="raw")
    assert len(calls) == 2
    inputs = tracker.client.get_run(second).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["d"]


def test_a_decompressed_output_seen_before_shares_that_points_result(tmp_path, monkeypatch):
    """ZFP's accuracy acts in powers of two: 2, 2.5 and 3.5 write the same data. The pipeline
    runs once for them, and the shared metrics are those a full evaluation gives."""
    from lossbound.codecs import CodecSetting
    from lossbound.study import context
    from lossbound.study.executor import PointRunner, WorkerPool
    from lossbound.study.point import evaluate_point
    from lossbound.pipelines.tomo.technique import TomoTechnique

    runs = []
    real_run = TomoTechnique.run

    def counted(self, data, prepared):
        runs.append(1)
        return real_run(self, data, prepared)

    monkeypatch.setattr(TomoTechnique, "run", counted)
    over = small_sim_overrides(tmp_path) + ["codec=[zfp]", "search=grid", "sweep.bounds=[2,2.5,3.5,64]",
                                            "sweep.baselines=[]", "sweep.workers=1", "tracking.enabled=false"]
    res = _run(over)
    by_value = {p.value: p for p in res.points}
    assert len(by_value) == 4
    first = by_value[2.0]
    assert first.same_output_as is None and first.metrics
    for v in (2.5, 3.5):
        p = by_value[v]
        assert p.status == "ok" and p.same_output_as == first.point_id
        assert p.output_sha256 == first.output_sha256 and p.metrics == first.metrics
        assert p.passed == first.passed and p.codec["max_abs_error"] == first.codec["max_abs_error"]
    assert by_value[64.0].output_sha256 != first.output_sha256 and by_value[64.0].same_output_as is None
    pipeline_runs = len(runs)
    ctx = context.context_for(next(iter(context._CONTEXTS.values())).spec)
    # the raw result (1) + the noise reference's re-samplings + 2 and 64: never 2.5 or 3.5
    assert pipeline_runs == 1 + ctx.noise.resamples + 2, pipeline_runs
    # computed in full, 3.5 gives exactly the metrics it was given
    full = evaluate_point(ctx, CodecSetting.from_dict(by_value[3.5].setting))
    assert full.same_output_as is None and full.metrics == by_value[3.5].metrics
    # through a pool of processes: the known outputs travel with the point
    with WorkerPool(ctx.spec, workers=2) as pool, PointRunner(ctx, pool=pool) as runner:
        there = runner.submit(CodecSetting.from_dict(first.setting)).result()
        shared = runner.submit(CodecSetting.from_dict(by_value[3.5].setting),
                               known_outputs={there.output_sha256: there.point_id}).result()
    assert there.output_sha256 == first.output_sha256  # the codecs are deterministic
    # (the pipeline too, to the last bits another BLAS thread count sums in another order)
    assert there.metrics == pytest.approx(first.metrics, rel=1e-9, abs=1e-12, nan_ok=True)
    assert shared.same_output_as == there.point_id and not shared.metrics
    # the journal keeps the link, and a second run recomputes nothing
    lines = [json.loads(x) for x in (tmp_path / "runs" / "journal" / "tomo.jsonl").read_text().splitlines()]
    assert sorted(x["same_output_as"] == first.point_id for x in lines) == [False, False, True, True]
    again = _run(over)
    assert all(p.reused for p in again.points)
