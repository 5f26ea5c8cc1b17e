"""Our own glue: tolerance checks and threshold derivation on fabricated points."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lossbound.errors import ConfigError
from lossbound.points import PointResult
from lossbound.thresholds import accumulate_points, derive_thresholds, load_thresholds, write_thresholds
from lossbound.tolerance import Tolerances
from lossbound.tracking import split_finite


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


def _point(value, passed, *, codec="sz3", status="ok", lossy=True, ratio=None):
    return PointResult(
        point_id=f"{codec}{value}", label=f"{codec} absolute={value}",
        setting={"codec": codec, "mode": "absolute" if lossy else None, "value": value,
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
    assert e["tested_bounds"] == [1, 2, 4, 8, 16]
    assert e["first_failure"]["bound"] == 8
    assert e["passed_above_first_failure"] == [16]
    assert e["hdf5plugin"] == {"class": "SZ3", "kwargs": {"absolute": 4}}
    assert e["criteria"] == {"ssim": 0.99}
    assert baselines["zstd"]["compression_ratio"] == 1.7


def test_threshold_none_when_smallest_bound_fails_or_crashes():
    codecs, _ = derive_thresholds([_point(1, False, status="failed"), _point(2, True)])
    assert codecs["sz3"]["bound"] is None
    assert "CodecCrash" in codecs["sz3"]["first_failure"]["why"]


def test_points_accumulate_per_context_so_multirun_jobs_combine(tmp_path):
    """Two multirun jobs, split by bound, give the threshold one sweep over both would."""
    side = tmp_path / "tomo.points.json"
    ctx = {"dataset": "a", "tolerances": {"ssim": {"min": 0.9}}}
    job1 = accumulate_points(side, ctx, [_point(1, True), _point(2, True)])
    assert derive_thresholds(job1)[0]["sz3"]["bound"] == 2
    job2 = accumulate_points(side, ctx, [_point(4, True), _point(8, False)])
    codecs, _ = derive_thresholds(job2)
    assert codecs["sz3"]["bound"] == 4 and codecs["sz3"]["tested_bounds"] == [1, 2, 4, 8]
    # a re-run of a point replaces it (newest wins) ...
    assert len(accumulate_points(side, ctx, [_point(8, True)])) == 4
    # ... and another context (e.g. other tolerances) starts afresh
    other = accumulate_points(side, {**ctx, "tolerances": {}}, [_point(16, True)])
    assert [p.value for p in other] == [16]


def test_write_thresholds_round_trips_plain_yaml(tmp_path):
    path = tmp_path / "t.yaml"
    write_thresholds(path, technique="tomo", dataset={"sha256": "a"}, pipeline={"rows": (0, 4)},
                     tolerances={"ssim": {"min": 0.9}}, codecs={"zfp": {"bound": np.float64(2.0)}}, baselines={})
    doc = load_thresholds(path)
    assert doc["codecs"]["zfp"]["bound"] == 2.0 and doc["pipeline"]["rows"] == [0, 4]
    assert doc["rule"].startswith("largest tested bound")


def test_split_finite_keeps_inf_out_of_metrics():
    finite, other = split_finite({"a": 1.0, "b": math.inf, "c": True, "d": None})
    assert finite == {"a": 1.0, "c": 1.0} and other == {"b": math.inf}
