"""Our own glue: tolerance checks and threshold derivation on fabricated points."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lossbound.core.errors import ConfigError
from lossbound.core.types import PointResult
from lossbound.results.journal import Journal
from lossbound.results.thresholds import derive_thresholds, load_thresholds, update_thresholds
from lossbound.criteria.tolerance import Tolerances
from lossbound.tracking.tracker import split_finite


def test_tolerances_check_min_max_and_nan():
    tol = Tolerances({"ssim": {"min": 0.9}, "change": {"max": 0.05}, "off": None})
    assert tol.check({"ssim": 0.95, "change": 0.01}).passed
    v = tol.check({"ssim": 0.85, "change": 0.1})
    assert not v.passed and len(v.failures) == 2 and "ssim=0.85 < 0.9" in v.failures[0]
    assert not tol.check({"ssim": math.nan, "change": 0.0}).passed
    assert tol.missing({"ssim": 1.0}) == ["change"]
    assert tol.as_dict() == {"ssim": {"min": 0.9}, "change": {"max": 0.05}}


@pytest.mark.parametrize("bad", [{"ssim": 0.9}, {"ssim": {"minimum": 1}}, {"ssim": {"min": "high"}}])
def test_tolerances_reject_malformed_config(bad):
    with pytest.raises(ConfigError, match="ssim"):
        Tolerances(bad)


def _point(value, passed, *, codec="sz3", status="ok", lossy=True, ratio=None, mode="absolute"):
    return PointResult(
        point_id=f"{codec}{value}", label=f"{codec} {mode}={value}",
        setting={"codec": codec, "mode": mode if lossy else None, "value": value,
                 "input_dtype": None, "chunks": None},
        lossy=lossy, status=status, reason=None if status == "ok" else "CodecCrash: died",
        codec={"plugin_class": "SZ3", "plugin_kwargs": {"absolute": value}, "filter_id": 32024,
               "cd_values": [0, 1], "ratio": ratio or (value or 1) * 2.0, "bound_held": True},
        metrics={"ssim": 0.99}, passed=passed, failures=[] if passed else ["ssim=0.5 < 0.9"],
    )


def test_threshold_is_largest_bound_below_first_failure():
    pts = [_point(4, True), _point(1, True), _point(2, True), _point(8, False), _point(16, True),
           _point(0, True, codec="zstd", lossy=False, ratio=1.7)]
    codecs, baselines = derive_thresholds(pts, criteria=["ssim"])
    e = codecs["sz3"]
    assert e["bound"] == 4
    assert e["tested_values"] == [1, 2, 4, 8, 16] and e["evaluations"] == 5
    assert e["first_failure"]["bound"] == 8
    assert e["passed_above_first_failure"] == [16]
    assert e["hdf5plugin"] == {"class": "SZ3", "kwargs": {"absolute": 4}}
    assert e["criteria"] == {"ssim": 0.99}
    assert baselines["zstd"]["compression_ratio"] == 1.7


def test_threshold_none_when_smallest_bound_fails_or_crashes():
    codecs, _ = derive_thresholds([_point(1, False, status="failed"), _point(2, True)])
    assert codecs["sz3"]["bound"] is None
    assert "CodecCrash" in codecs["sz3"]["first_failure"]["why"]


def test_threshold_honours_modes_where_larger_means_less_loss():
    """SZ3 psnr: 80 dB is less lossy than 40 dB; the threshold is the lowest passing PSNR."""
    pts = [_point(v, v >= 50, mode="psnr") for v in (40, 50, 60, 80)]
    e = derive_thresholds(pts)[0]["sz3"]
    assert e["bound"] == 50 and e["larger_means_more_loss"] is False
    assert e["first_failure"]["bound"] == 40


def test_journal_lets_multirun_jobs_combine_and_skips_a_cut_line(tmp_path):
    """Two jobs split by bound, appending to one journal, give the threshold one study would."""
    journal = Journal(tmp_path / "tomo.jsonl")
    for p in (_point(1, True), _point(2, True)):
        journal.append(p)
    assert derive_thresholds(journal.read().values())[0]["sz3"]["bound"] == 2
    for p in (_point(4, True), _point(8, False)):
        Journal(tmp_path / "tomo.jsonl").append(p)
    with open(tmp_path / "tomo.jsonl", "a") as fh:
        fh.write('{"point_id": "sz316", "label"')  # a line cut short by kill -9
    codecs, _ = derive_thresholds(journal.read().values())
    assert codecs["sz3"]["bound"] == 4 and codecs["sz3"]["tested_values"] == [1, 2, 4, 8]
    # a re-run of a point replaces it (newest wins)
    journal.append(_point(8, True))
    assert len(journal.read()) == 4 and journal.read()["sz38"].passed


def _entry(name, sha, bound, tolerances):
    codecs, _ = derive_thresholds([_point(b, b <= bound) for b in (2, 4, 8, 16, 32)])
    return {"dataset": {"name": name, "source": f"/d/{name}.h5", "sha256": sha}, "pipeline": {"rows": (0, 4)},
            "tolerances": tolerances, "codecs": codecs, "baselines": {}}


def test_second_dataset_adds_and_the_conservative_threshold_names_the_limiting_one(tmp_path):
    path = tmp_path / "tomo.yaml"
    tol = {"ssim": {"min": 0.9}}
    update_thresholds(path, technique="tomo", dataset_name="sim", entry=_entry("sim", "a" * 64, 16, tol))
    update_thresholds(path, technique="tomo", dataset_name="tooth", entry=_entry("tooth", "b" * 64, 4, tol))
    doc = load_thresholds(path)
    assert set(doc["datasets"]) == {"sim", "tooth"}
    assert doc["datasets"]["sim"]["codecs"]["sz3"]["bound"] == 16
    assert doc["codecs"]["sz3"]["bound"] == 4 and doc["codecs"]["sz3"]["limiting_dataset"] == "tooth"
    assert doc["codecs"]["sz3"]["per_dataset"]["sim"]["bound"] == 16
    assert doc["datasets"]["sim"]["pipeline"]["rows"] == [0, 4]  # plain YAML
    # a dataset measured under other tolerances is kept but not combined
    update_thresholds(path, technique="tomo", dataset_name="sim", entry=_entry("sim", "a" * 64, 32, {"ssim": {"min": 0.5}}))
    doc = load_thresholds(path)
    assert doc["codecs"]["sz3"]["bound"] == 32 and "tooth" in doc["codecs"]["sz3"]["excluded_datasets"]
    assert doc["rule"].startswith("most lossy tested value")


def test_split_finite_keeps_inf_out_of_metrics():
    finite, other = split_finite({"a": 1.0, "b": math.inf, "c": True, "d": None})
    assert finite == {"a": 1.0, "c": 1.0} and other == {"b": math.inf}
