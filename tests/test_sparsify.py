"""The compiled Bragg-preserving sparsification against its numpy definition and its promises:
kept pixels exact, masked pixels untouched, the per-frame level refresh, reproducible noise."""
from __future__ import annotations

import numpy as np
import pytest

from lossbound.codecs.sparsify import sparsify_reference
from lossbound.codecs.transforms import bragg_sparsify
from lossbound.pipelines.sx.simulate import simulate_stills, simulation_model

MODEL = {"npt": 500, "clip_sigma": 3.0, "clip_iterations": 5}
SMALL = {"n_frames": 3, "misses": [1], "detector": "Pilatus300k", "beam_px": [240.0, 300.0], "distance_mm": 120.0}


@pytest.fixture(scope="module")
def stills():
    """Three Pilatus 300k stills (gaps -1, bad pixels -2, a hot pixel), one a miss."""
    frames, ai, _ = simulate_stills(**SMALL)
    valid = (frames >= 0) & (frames < 1_000_000)
    return frames, valid, ai.get_config()


@pytest.mark.parametrize("margin", [0, 2])
def test_one_model_per_frame_reproduces_the_numpy_definition(stills, margin):
    frames, valid, geometry = stills
    fast = bragg_sparsify(frames, k_sigma=2.0, margin=margin, model_every=1, valid=valid, geometry=geometry, **MODEL)
    slow = sparsify_reference(frames, k_sigma=2.0, margin=margin, noise=False, masked=~valid, geometry=geometry,
                              **MODEL)
    changed = int((fast != slow).sum())
    # float32 box sums against float64 ones may flip a pixel sitting on the cut, no more
    assert changed <= 1e-5 * frames.size, changed


def test_kept_pixels_are_exact_masked_untouched_and_the_rest_is_the_model(stills):
    frames, valid, geometry = stills
    out = bragg_sparsify(frames, k_sigma=3.0, margin=1, model_every=16, valid=valid, geometry=geometry, **MODEL)
    assert out.dtype == frames.dtype and out.shape == frames.shape
    np.testing.assert_array_equal(out[~valid], frames[~valid])
    kept = (out == frames) & valid
    assert 0.001 < kept.mean() < 0.9  # spots kept, most background replaced
    # every bright true spot pixel survives (the hit frames carry spots above 100 counts)
    bright = valid & (frames > 100)
    assert bright.any() and (out[bright] == frames[bright]).all()


@pytest.mark.parametrize("flux", [0.6, 1.6, 3.0])
def test_each_frame_keeps_its_own_background_level_under_a_shared_model(stills, flux):
    """The model comes from frame 0; frame 1 is the same background at another flux. Its
    replaced pixels must sit where its own sigma-clipped model (``model_every=1``) puts them,
    not at frame 0's level (which is ``1/flux`` off)."""
    frames, valid, geometry = stills
    expected = simulation_model(**SMALL).expected[1]  # the miss: smooth background only
    ok = valid[1]
    rng = np.random.default_rng(5)
    pair = np.stack([rng.poisson(np.where(ok, f * expected, 0)) for f in (1.0, flux)])
    pair = np.where(ok, pair, frames[1]).astype(frames.dtype)
    kw = dict(k_sigma=3.0, margin=1, valid=ok, geometry=geometry, **MODEL)
    shared = bragg_sparsify(pair, model_every=2, **kw)[1]
    own = bragg_sparsify(pair[1:], model_every=1, **kw)[0]
    both = ok & (shared != pair[1]) & (own != pair[1])
    level = shared[both].sum() / own[both].sum()
    assert abs(level - 1.0) < 0.04, level
    assert abs(shared[both].mean() - flux * expected[both].mean()) < 0.1 * flux * expected[both].mean()


def test_noise_variant_is_reproducible_and_poisson_around_the_model(stills):
    frames, valid, geometry = stills
    kw = dict(k_sigma=3.0, margin=2, noise=True, model_every=16, valid=valid, geometry=geometry, **MODEL)
    a = bragg_sparsify(frames, **kw)
    np.testing.assert_array_equal(a, bragg_sparsify(frames, **kw))
    smooth = bragg_sparsify(frames, **{**kw, "noise": False})
    replaced = valid & (smooth != frames)
    diff = a[replaced].astype(np.float64) - smooth[replaced]
    assert abs(diff.mean()) < 0.05 * smooth[replaced].mean()
    assert diff.var() == pytest.approx(smooth[replaced].mean(), rel=0.15)


def test_bad_model_every_is_refused(stills):
    frames, valid, geometry = stills
    with pytest.raises(ValueError, match="model_every"):
        bragg_sparsify(frames, k_sigma=3.0, model_every=0, valid=valid, geometry=geometry, **MODEL)
