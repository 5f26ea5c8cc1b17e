"""Threshold search strategies on synthetic responses (our own glue: no codec runs here)."""
from __future__ import annotations

import math

import pytest

from lossbound.core.errors import ConfigError
from lossbound.core.types import PointResult
from lossbound.search import make_search, non_monotonic
from lossbound.search.bisect import BisectSearch
from lossbound.search.grid import GridSearch
from lossbound.criteria.tolerance import Tolerances

TOL = Tolerances({"err": {"max": 0.5}, "dice": {"min": 0.99}})
IDEAL = {"err": 0.0, "dice": 1.0}
GRID = [2 * math.sqrt(2) ** k for k in range(21)]  # sqrt(2) steps over [2, 2048]


def _point(v: float, crossing: float, *, grows: bool = True, noise: float = 0.0) -> PointResult:
    """A codec whose error grows like its bound (or like 1/value when less is lossier)."""
    x = v / crossing if grows else crossing / v
    jitter = 1 + noise * math.sin(7.3 * v)  # deterministic "noise"
    metrics = {"err": 0.5 * x * jitter, "dice": 1 - 0.01 * (x / 1.3) ** 1.5}
    p = PointResult(point_id=str(v), label=str(v), setting={"value": v}, lossy=True, metrics=metrics)
    p.passed = TOL.check(metrics).passed
    return p


def _run(search, crossing, *, workers=1, grows=True, noise=0.0):
    known = {}
    while proposals := search.propose(known, []):
        for v in proposals[:workers]:
            known[v] = _point(v, crossing, grows=grows, noise=noise)
    lo, _ = search.bracket_state(known)
    return (search.value(lo) if lo is not None else None), known


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("crossing", [3.0, 17.0, 64.0, 100.0, 300.0, 700.0, 1500.0])
def test_bisect_finds_the_grid_threshold_with_a_third_of_the_evaluations(crossing, noise):
    grid_threshold = max(g for g in GRID if _point(g, crossing, noise=noise).passed)
    for workers in (1, 2):
        search = BisectSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL)
        threshold, known = _run(search, crossing, workers=workers, noise=noise)
        assert abs(math.log(threshold / grid_threshold)) <= math.log(math.sqrt(2)) + 1e-9
        assert len(known) <= len(GRID) / 3, sorted(known)
        lo, hi = search.bracket_state(known)
        assert hi - lo <= math.log(math.sqrt(2)) + 1e-9


def test_bisect_without_interpolation_still_converges():
    search = BisectSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL, interpolate=0)
    threshold, known = _run(search, 100.0)
    assert 100 / math.sqrt(2) <= threshold <= 100 and len(known) <= 10


def test_bisect_expands_beyond_the_bracket_and_honours_the_direction():
    # the whole bracket passes: it expands upwards
    search = BisectSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL, bracket=[2, 64])
    threshold, _ = _run(search, 700.0)
    assert 700 / math.sqrt(2) <= threshold <= 700
    # PSNR-like mode: larger values are less lossy; the threshold is the smallest passing one
    search = BisectSearch(grows=False, integer=False, tolerances=TOL, ideal=IDEAL, bracket=[20, 120])
    threshold, known = _run(search, 45.0, grows=False)
    assert 45 <= threshold <= 45 * math.sqrt(2) and len(known) <= 8
    # nothing passes down to the limit: no threshold
    search = BisectSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL, limits=[1, 1e4])
    assert _run(search, 0.5)[0] is None


def test_integer_search_proposes_integers_and_resumes_from_known_points():
    search = BisectSearch(grows=True, integer=True, tolerances=TOL, ideal=IDEAL)
    threshold, known = _run(search, 37.0)
    assert all(float(v).is_integer() for v in known) and 26 <= threshold <= 37
    # a search handed its own finished evaluations proposes nothing more: resume is free
    assert search.propose(known, []) == []
    # handed half of them, it proposes only what is missing
    part = dict(list(sorted(known.items()))[:2])
    assert set(search.propose(part, [])) <= set(known) | set(range(1, 5000))


def test_grid_proposes_every_value_not_known_least_lossy_first():
    g = GridSearch(values=[64, 2, 8], grows=True, integer=False, tolerances=TOL)
    assert g.propose({2.0: None}, [8.0]) == [64.0]
    g = GridSearch(values=[40, 80, 60], grows=False, integer=False, tolerances=TOL)
    assert g.propose({}, []) == [80.0, 60.0, 40.0]


def test_non_monotonic_passes_are_reported():
    pts = [_point(v, 10.0) for v in (2, 4, 16)] + [_point(64, 100.0)]  # 64 "passes" above a failure
    assert non_monotonic(pts, grows=True) == [64]


@pytest.mark.parametrize("bad, match", [
    ({"strategy": "bisect", "bracket": [8, 2]}, "bracket"),
    ({"strategy": "bisect", "resolution": 1.0}, "resolution"),
    ({"strategy": "bisect", "typo": 1}, "unknown option"),
    ({"strategy": "annealing"}, "unknown search strategy"),
])
def test_search_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        make_search(bad, grows=True, integer=False, tolerances=TOL, grid_values=[1, 2])


def test_expansion_stops_at_the_codecs_limit_after_trying_the_limit_itself():
    # everything fails (crossing far below): from the bracket [2, 8] the search tries the limit 1
    # once instead of halving towards 0 (sparsify at k_sigma = 3e-5 was the bug)
    search = make_search({"strategy": "bisect"}, grows=True, integer=False, tolerances=TOL, grid_values=None,
                         bracket=[2, 8], limits=[1, 16], ideal=IDEAL)
    threshold, known = _run(search, 0.01)
    assert threshold is None and sorted(known) == [1, 2]
    # and everything passes: it tries the upper limit and stops there
    search = make_search({"strategy": "bisect"}, grows=True, integer=False, tolerances=TOL, grid_values=None,
                         bracket=[2, 8], limits=[1, 16], ideal=IDEAL)
    threshold, known = _run(search, 1e6)
    assert threshold == 16 and max(known) == 16


def test_steps_left_shrinks_as_the_bracket_closes_and_is_zero_when_done():
    """The scheduling estimate: a wide bracket needs more steps than a narrow one, a finished
    search none; a grid has one round while values remain."""
    search = BisectSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL, bracket=[2, 2048])
    narrow = BisectSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL, bracket=[2, 8])
    assert search.steps_left({}, []) > narrow.steps_left({}, []) > 0
    known: dict = {}
    steps = [search.steps_left(known, [])]
    while proposals := search.propose(known, []):
        known[proposals[0]] = _point(proposals[0], 100.0)
        steps.append(search.steps_left(known, []))
    assert steps[-1] == 0 and max(steps[1:]) < steps[0]
    grid = GridSearch(grows=True, integer=False, tolerances=TOL, ideal=IDEAL, values=[2, 4])
    assert grid.steps_left({}, []) == 1
    assert grid.steps_left({2.0: _point(2.0, 100.0), 4.0: _point(4.0, 100.0)}, []) == 0
