"""The expert report and what the thresholds file carries for it: noise reference, feasibility,
needed ratio, review status. Checked in headless Chromium as a person sees it."""
from __future__ import annotations

import json

import subprocess
import sys

import mlflow
import pytest
import yaml

from browser import inspect_page, png_size, require_browser
from conftest import ROOT, compose, small_sim_overrides
from lossbound.results.report import criterion_use, ratio_at
from lossbound.results.signoff import record_review, review_status, runs_behind
from lossbound.results.thresholds import feasibility


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from lossbound.cli import evaluate

    tmp = tmp_path_factory.mktemp("report")
    cfg = compose(small_sim_overrides(tmp) + ["codec=[sz3,zfp]", "search=grid", "sweep.bounds=[2,32,512]",
                                              "technique.noise_reference.resamples=3",
                                              "acquisition.detector_rate_gbps=2.5"])
    return tmp, evaluate.run(cfg)


def test_thresholds_file_carries_noise_reference_feasibility_and_needed_ratio(study):
    tmp, res = study
    doc = yaml.safe_load(res.thresholds_path.read_text())
    assert doc["needed_ratio"] == 10.0 and doc["acquisition"] == {"peak_gbps": 16.0, "detector_gbps": 2.5}
    entry = doc["datasets"]["sim_tomo"]
    noise = entry["noise_reference"]
    assert noise["resamples"] == 3 and "Poisson" in noise["model"] and noise["seconds"] > 0
    dice = noise["limits"]["seg_dice_min"]
    assert dice["fixed_min"] == 0.99 and 0 < dice["noise_effect"] < 0.5
    assert entry["limits"]["seg_dice_min"]["min"] == pytest.approx(1.0 - 0.5 * dice["noise_effect"])
    assert entry["limits"]["recon_error_to_noise"] == {"min": None, "max": 0.5}   # the half-set criterion stays
    timed = 0
    for name, e in [*entry["codecs"].items(), *entry["baselines"].items()]:
        f = e.get("feasibility")
        if e.get("compress_mbps"):
            assert f["cores_for_peak"] == -(-16000 // f["compress_mbps_single_core"]), name
            assert f["cores_for_detector"] >= 1
            # timed again on a quiet core after the search, both directions, the method beside
            # the numbers, the study's own figures kept and labelled
            assert f["source"] == "quiet core", name
            quiet = e["quiet_core"]
            assert f["compress_mbps_single_core"] == quiet["compress_mbps"] > 0
            assert f["decompress_mbps_single_core"] == quiet["decompress_mbps"] > 0
            assert f["decompress_cores_for_peak"] == -(-16000 // quiet["decompress_mbps"])
            assert quiet["repeats"] == 5 and quiet["threads"] == 1 and quiet["chunks"][0] == 1
            assert "write_payload" in f["method"]["how"] and f["method"]["frames"] == quiet["frames"]
            assert f["in_study"]["compress_mbps"] == e["compress_mbps"] and "other points" in f["in_study"]["note"]
            timed += 1
    assert timed >= 4  # the baselines and at least one threshold
    for name, e in doc["codecs"].items():
        assert e["review"]["status"] == "unreviewed", name
    # the study run logs the noise effect beside the range derived from it
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    metrics = client.get_run(entry["mlflow_study_run_id"]).data.metrics
    assert metrics["noise.seg_dice_min.noise_effect"] == pytest.approx(dice["noise_effect"])
    # computed once per dataset: cached beside the raw results for later studies and workers
    # (beside the quality gates' measurements)
    docs = [json.loads(p.read_text()) for p in (tmp / "runs" / "cache").glob("*.json")]
    assert sum("checks" not in d for d in docs) == 1 and sum("checks" in d for d in docs) == 1


def test_report_renders_in_chromium_with_every_plot_and_shows_a_sign_off(study, tmp_path):
    require_browser()
    tmp, res = study
    report = tmp / "runs" / "reports" / "tomo.html"
    assert report.exists()
    check = inspect_page(report, screenshot=tmp_path / "tomo_report.png")
    assert check.images_total >= 4, check            # two codecs, the front, the gain plot
    assert check.images_loaded == check.images_total and not check.broken_images, check.broken_images
    assert not check.console_errors, check.console_errors
    for section in ("Recommendation", "Thresholds", "counting-noise reference", "Each criterion against the bound",
                    "Ratio versus quality", "Acquisition feasibility", "How much do we gain"):
        assert section in check.text, section
    assert "unreviewed" in check.text and "limiting dataset" in check.text
    assert png_size(check.screenshot)[1] > 2000      # the whole page, kept beside the test's tmp files
    # approve, rebuild with the command: the status shows
    doc = yaml.safe_load(res.thresholds_path.read_text())
    codec = next(c for c, e in doc["codecs"].items() if e["bound"] is not None)
    record_review(res.thresholds_path, codec, decision="approve", reviewer="ada", note="checked against the FRC",
                  authenticated=False, runs=runs_behind(doc, codec))
    proc = subprocess.run([sys.executable, "-m", "lossbound.cli.report", "tomo", "--runs-dir", str(tmp / "runs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check = inspect_page(report, screenshot=tmp_path / "tomo_report_approved.png")
    assert "approved by ada" in check.text and not check.console_errors


def test_a_stray_file_beside_the_thresholds_is_left_out_of_the_gain_table(study, caplog):
    tmp, res = study
    stray = res.thresholds_path.parent / "notes.yaml"
    stray.write_text("- just a list\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "lossbound.cli.report", "tomo", "--runs-dir", str(tmp / "runs")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        stray.unlink()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "gain table leaves out" in proc.stderr and "notes.yaml" in proc.stderr


def test_report_command_names_a_missing_thresholds_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lossbound.cli.report", "nosuch", "--runs-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "nosuch.yaml" in proc.stderr


def test_a_changed_tolerance_makes_an_approval_stale(study):
    tmp, res = study
    from lossbound.cli import evaluate

    doc = yaml.safe_load(res.thresholds_path.read_text())
    codec = next(c for c, e in doc["codecs"].items() if e["bound"] is not None)
    record_review(res.thresholds_path, codec, decision="approve", reviewer="ada", note="", authenticated=False,
                  runs=runs_behind(doc, codec))
    assert review_status(yaml.safe_load(res.thresholds_path.read_text()), codec)["status"] == "approved"
    evaluate.run(compose(small_sim_overrides(tmp) + ["codec=[sz3,zfp]", "search=grid", "sweep.bounds=[2,32,512]",
                                                     "technique.noise_reference.resamples=3",
                                                     "technique.tolerances.frc_resolution_change.max=0.2"]))
    doc = yaml.safe_load(res.thresholds_path.read_text())
    assert doc["codecs"][codec]["review"]["status"] == "stale"
    assert doc["reviews"][codec]["reviewer"] == "ada"      # kept, shown stale


def test_feasibility_and_criterion_use():
    assert feasibility(250.0, {"peak": 16.0, "detector": 1.0}) == {
        "compress_mbps_single_core": 250.0, "cores_for_peak": 64, "cores_for_detector": 4}
    assert feasibility(None, {"peak": 16.0}) is None and feasibility(0.0, {"peak": 16.0}) is None
    assert feasibility(250.0, {"peak": 16.0}, decompress_mbps=1000.0) == {
        "compress_mbps_single_core": 250.0, "cores_for_peak": 64, "decompress_mbps_single_core": 1000.0,
        "decompress_cores_for_peak": 16}
    assert criterion_use(0.995, ideal=1.0, lo=0.99, hi=None) == pytest.approx(0.5)
    assert criterion_use(0.3, ideal=0.0, lo=None, hi=0.2) == pytest.approx(1.5)
    assert criterion_use(1.0, ideal=1.0, lo=1.0, hi=None) == 0.0


def test_ratio_at_a_bound_not_tested_takes_the_next_less_lossy_value():
    from lossbound.core.types import PointResult

    pts = [PointResult(point_id=str(v), label="", setting={"codec": "sz3", "value": v}, lossy=True,
                       codec={"ratio": r}) for v, r in ((2, 3.0), (8, 6.0), (32, 12.0))]
    assert ratio_at(pts, 8) == 6.0 and ratio_at(pts, 20) == 6.0 and ratio_at(pts, 1) is None
    assert ratio_at(pts, 20, grows=False) == 12.0


def test_gain_and_recommendation_use_the_worst_dataset_and_skip_unknowns_and_rejections():
    from lossbound.core.types import PointResult
    from lossbound.results.report import TechniqueRecord, gain_rows, recommended, worst_ratio

    def pts(ds, codec, ratios):
        return [PointResult(point_id=f"{ds}{codec}{v}", label="", dataset=ds, lossy=True, passed=True,
                            setting={"codec": codec, "mode": "absolute", "value": v}, codec={"ratio": r})
                for v, r in ratios.items()]

    doc = {"technique": "t", "needed_ratio": 10.0,
           "codecs": {"sz3": {"codec": "sz3", "mode": "absolute", "bound": 4, "per_dataset": {"a": {}, "b": {}}},
                      "zfp": {"codec": "zfp", "mode": "absolute", "bound": 2, "per_dataset": {"a": {}, "b": {}}},
                      "sz": {"codec": "sz", "mode": "absolute", "bound": 8, "per_dataset": {"a": {}, "b": {}},
                             "review": {"status": "rejected"}}},
           "datasets": {d: {"codecs": {"sz3": {"bound": b, "compression_ratio": r}},
                            "baselines": {"blosc2": {"compression_ratio": lossless}}}
                        for d, b, r, lossless in (("a", 4, 6.0, 2.0), ("b", 8, 9.0, 3.0))}}
    points = {"a": pts("a", "sz3", {2: 4.0, 4: 6.0}) + pts("a", "zfp", {2: 50.0}) + pts("a", "sz", {8: 99.0}),
              "b": pts("b", "sz3", {4: 7.0, 8: 9.0}) + pts("b", "zfp", {4: 60.0}) + pts("b", "sz", {8: 99.0})}
    rec = TechniqueRecord("t", doc, points)
    assert worst_ratio(rec, "sz3") == 6.0          # b at the combined bound 4: 7.0; a: 6.0
    assert worst_ratio(rec, "zfp") is None         # b has nothing measured at or below 2
    assert recommended(rec) == ("sz3", 6.0)        # sz is rejected, zfp unknown on b
    rows = {r["dataset"]: r for r in gain_rows([rec])}
    assert rows["all (conservative)"]["lossy"] == 6.0 and rows["all (conservative)"]["lossless"] == 2.0
    assert rows["b"]["lossy"] == 9.0 and rows["b"]["lossless"] == 3.0 and rows["b"]["needed"] == 10.0


def test_sweep_figure_draws_a_criterion_no_point_has_a_value_for(tmp_path):
    """A criterion without a value at any evaluated point (here: every frame unjudged) draws an
    empty panel on linear axes; a log axis over no data stopped a finished study before."""
    from lossbound.core.png import figure_png
    from lossbound.core.types import PointResult
    from lossbound.criteria.tolerance import Tolerances
    from lossbound.results.plots import sweep_figure

    tol = Tolerances({"f1": {"min": 0.95}, "shift": {"max": 0.5}})
    pts = [PointResult(point_id=str(v), label="", setting={"codec": "sz3", "value": v}, lossy=True,
                       codec={"ratio": 2.0 + v}, metrics={"f1": 0.99}) for v in (1.0, 2.0)]
    png = figure_png(sweep_figure(pts, tol, title="t"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pts.append(PointResult(point_id="f", label="", setting={"codec": "zfp", "value": 4.0}, lossy=True,
                           status="failed", reason="crash"))  # a failed point's marker, on a log axis
    assert figure_png(sweep_figure(pts, tol, title="t"))[:8] == b"\x89PNG\r\n\x1a\n"
