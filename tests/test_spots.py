"""Bragg-spot finding (issue 8 groundwork) and the spot-agreement evaluator on known cases."""
from __future__ import annotations

import numpy as np
import pytest

from lossbound.evaluators.spots import SpotAgreement, intensity_agreement, match_spots
from lossbound.core.types import Dataset, Outcome
from lossbound.pipelines.sx.spots import find_spots, hits


def _frame(rng, centres, *, background=2.0, amplitude=80.0, width=0.8):
    shape = (300, 400)
    yy, xx = np.indices(shape)
    lam = np.full(shape, background)
    for y, x in centres:  # centres in pixel-centre coordinates (+0.5)
        lam += amplitude * np.exp(-((yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2) / (2 * width**2))
    return rng.poisson(lam).astype(np.int32), np.full(shape, background)


def test_spots_on_poisson_background_are_found_where_they_are_and_noise_gives_none():
    rng = np.random.default_rng(0)
    grid = np.array([(y, x) for y in range(25, 290, 40) for x in range(25, 390, 45)], float)
    centres = grid + rng.uniform(-0.5, 0.5, size=grid.shape)  # separated spots, sub-pixel positions
    frame, bg = _frame(rng, centres)
    masked = np.zeros(frame.shape, bool)
    masked[100:117, :] = True  # a module gap: never part of a spot
    frame[masked] = -1
    spots = find_spots(frame, bg, np.sqrt(bg), masked, k=5.0)
    visible = centres[(centres[:, 0] < 95) | (centres[:, 0] > 122)]
    m = match_spots(visible, np.column_stack([spots["y"], spots["x"]]), tolerance=1.0)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["rmsd"] < 0.3
    noise, bg = _frame(rng, [])
    assert find_spots(noise, bg, np.sqrt(bg), np.zeros(noise.shape, bool), k=5.0)["y"].size == 0
    assert list(hits(np.array([3, 10, 40]), min_spots=10)) == [False, True, True]


def test_match_spots_is_one_to_one_and_reports_precision():
    ref = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    test = np.array([[10.5, 10.0], [10.6, 10.0], [50.0, 50.0]])
    m = match_spots(ref, test, tolerance=2.0)
    assert m["pairs"].tolist() == [[0, 0]] and m["recall"] == pytest.approx(1 / 3) and m["precision"] == pytest.approx(1 / 3)
    assert m["rmsd"] == pytest.approx(0.5)
    assert match_spots(np.zeros((0, 2)), np.zeros((0, 2)))["f1"] == 1.0


def test_intensity_agreement_of_identical_and_scaled_sets():
    i = np.array([1.0, 5.0, 3.0, 8.0])
    assert intensity_agreement(i, i) == (pytest.approx(1.0), 0.0)
    cc, r = intensity_agreement(i, 1.1 * i)
    assert cc == pytest.approx(1.0) and r == pytest.approx(0.1)


def test_spot_agreement_evaluator_measures_lost_and_moved_spots():
    def outcome(y, x, inten, frame_of, hit):
        data = Dataset("t", {"frames": np.zeros((2, 2, 2))}, "frames", "memory")
        return Outcome(data, {"spot_frame": np.array(frame_of), "spot_y": np.array(y, float),
                              "spot_x": np.array(x, float), "spot_intensity": np.array(inten, float),
                              "spot_sigma": np.sqrt(np.array(inten, float)), "hit": np.array(hit)})
    raw = outcome([10, 20, 30, 40], [10, 20, 30, 40], [4, 100, 100, 400], [0, 0, 1, 1], [True, True])
    comp = outcome([10.3, 20, 40], [10, 20, 40], [4, 100, 400], [0, 0, 1], [True, False])
    m = SpotAgreement().compare(raw, comp, {})
    assert m["spot_recall"] == 0.75 and m["spot_precision"] == 1.0 and m["hit_agreement"] == 0.5
    assert m["spot_centroid_rmsd"] == pytest.approx(np.sqrt(0.3**2 / 3))


def test_thaumatin_stills_have_spots_and_few_at_random(shared_data):
    from pathlib import Path

    from lossbound.pipelines.frames import geometry_from_header, read_frames, sentinel_mask
    from lossbound.pipelines.sx.spots import background_model

    frames, header = read_frames(Path(shared_data / "mx" / "thaumatin_grid" / "thau_3_2_0001.cbf.bz2"))
    masked = sentinel_mask(frames, count_cutoff=header["count_cutoff"])
    ai = geometry_from_header(header["pilatus_geometry"], frames.shape[1:])
    bg, sigma = background_model(ai, frames[0], masked)
    spots = find_spots(frames[0], bg, sigma, masked, k=5.0)
    assert 200 < spots["y"].size < 2000  # a hit: hundreds of Bragg spots
    assert not masked[spots["y"].astype(int), spots["x"].astype(int)].any()
    # a frame of pure Poisson noise on the same background model gives (almost) none
    noise = np.random.default_rng(0).poisson(np.maximum(bg, 0)).astype(np.int32)
    assert find_spots(noise, bg, sigma, masked, k=5.0)["y"].size < spots["y"].size / 20
