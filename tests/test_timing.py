"""Quiet-core timing of a codec chain (lossbound.codecs.timing): both directions, the frames
it timed, one thread, and a budget that keeps slow codecs to seconds."""
from __future__ import annotations

import os

import numpy as np

from lossbound.codecs import CodecSetting
from lossbound.codecs.timing import leading_frames, single_thread, time_setting


def _stack(n=6, shape=(64, 80)):
    rng = np.random.default_rng(0)
    frames = rng.poisson(5.0, (n, *shape)).astype(np.int32)
    valid = np.ones(shape, bool)
    valid[:, 40] = False
    frames[:, ~valid] = -1
    return frames, valid


def test_time_setting_measures_both_directions_on_the_leading_frames():
    frames, valid = _stack()
    rec = time_setting(frames, CodecSetting("quant_bslz4", "step_sigma", 1.0), valid=valid, repeats=5,
                       max_mb=2 * frames[0].nbytes / 1e6)
    assert rec["frames"] == "2 x 64 x 80 int32" and rec["chunks"] == [1, 64, 80]
    assert rec["compress_mbps"] > 0 and rec["decompress_mbps"] > 0 and rec["ratio"] > 1
    assert rec["repeats"] == 5 and rec["threads"] == 1


def test_a_slow_write_is_timed_on_fewer_frames_but_never_below_min_frames():
    frames, valid = _stack(n=6)
    setting = CodecSetting("zstd")
    rec = time_setting(frames, setting, valid=valid, budget_s=1e-9, max_mb=1e3)
    assert rec["frames"].startswith("1 x ")
    rec = time_setting(frames, setting, valid=valid, budget_s=1e-9, max_mb=1e3, min_frames=3)
    assert rec["frames"].startswith("3 x ")


def test_leading_frames_and_single_thread():
    frames, valid = _stack(n=5)
    stack, ok = leading_frames(frames, np.broadcast_to(valid, frames.shape), max_mb=0, min_frames=2)
    assert stack.shape[0] == 2 and ok.shape[0] == 2
    saved = os.environ.get("BLOSC_NTHREADS")
    with single_thread():
        assert os.environ["BLOSC_NTHREADS"] == "1"
    assert os.environ.get("BLOSC_NTHREADS") == saved


def test_quiet_core_options_refuse_what_cannot_be_a_median_or_is_misspelt():
    import pytest

    from lossbound.core.errors import ConfigError
    from lossbound.study.quiet import QuietCoreOptions

    assert QuietCoreOptions(None).repeats == 5 and QuietCoreOptions({}).frames == 4
    with pytest.raises(ConfigError, match="repeats must be >= 5"):
        QuietCoreOptions({"repeats": 3})
    with pytest.raises(ConfigError, match="unknown key"):
        QuietCoreOptions({"repeat": 5})
    with pytest.raises(ConfigError, match="frames must be >= 1"):
        QuietCoreOptions({"frames": 0})
