"""The noise-aware quantiser: error within f/2 sigma, low counts exact, no bias, same dtype."""
from __future__ import annotations

import numpy as np
import pytest

from lossbound.codecs.quantiser import quantise_counts, quantiser_steps, quantiser_table


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0, 2.0])
def test_error_is_at_most_half_a_step_and_f_over_2_sigma(fraction):
    counts = np.arange(0, 200_000, dtype=np.int64)
    q = quantiser_table(counts[-1], fraction)
    err = np.abs(q - counts)
    step = quantiser_steps(counts, fraction)
    assert (err <= step // 2).all()
    assert (err <= fraction / 2 * np.sqrt(np.maximum(counts, 1)) + 1e-9).all()
    # counts whose step would be below 2 stay exact: photon counting keeps 0, 1, 2 apart
    assert (q[counts < 4 / fraction**2] == counts[counts < 4 / fraction**2]).all()


def test_steps_are_powers_of_two_and_quantising_twice_changes_nothing():
    step = quantiser_steps(np.arange(1, 10**6, 997), 1.0)
    assert ((step & (step - 1)) == 0).all()
    rng = np.random.default_rng(0)
    frame = rng.poisson(rng.uniform(0, 5000, (64, 64))).astype(np.uint32)
    once = quantise_counts(frame, 1.0)
    assert once.dtype == np.uint32
    np.testing.assert_array_equal(quantise_counts(once, 1.0), once)


def test_quantised_poisson_data_keep_their_mean():
    """Centred bins: integrated intensities move by far less than their counting noise."""
    rng = np.random.default_rng(1)
    for level in (3, 30, 300, 30_000):
        frame = rng.poisson(level, (400, 500)).astype(np.int32)
        q = quantise_counts(frame, 1.0)
        # column dither: a single representative per bin moved the mean by ~0.5 count per pixel
        assert abs(q.mean() - frame.mean()) <= 0.06, level
        if level >= 30:  # smooth within a bin: the total moves by < 3 sigma of its counting noise
            shift = (q.sum(dtype=np.int64) - frame.sum(dtype=np.int64)) / np.sqrt(frame.sum())
            assert abs(shift) < 3, level
        # (at 3 counts the Poisson distribution falls steeply across the first bins, [4, 5]
        # and [6, 7]: the residual bias, ~0.05 count per pixel, is what the studies measure)


def test_masked_pixels_and_negative_sentinels_are_kept_bit_for_bit():
    frame = np.array([[-1, -2, 100_000], [5000, 7, 4_000_000]], dtype=np.int32)
    valid = np.array([[True, True, False], [True, True, True]])
    q = quantise_counts(frame, 1.0, valid=valid)
    assert q[0, 0] == -1 and q[0, 1] == -2 and q[0, 2] == 100_000
    assert abs(int(q[1, 1]) - 7) <= np.sqrt(7) / 2
    assert q[1, 0] != 5000 and abs(int(q[1, 0]) - 5000) <= np.sqrt(5000) / 2
    assert abs(int(q[1, 2]) - 4_000_000) <= np.sqrt(4_000_000) / 2  # beyond the table: computed directly


def test_refuses_float_data_and_bad_fractions():
    with pytest.raises(ValueError, match="integer counts"):
        quantise_counts(np.ones(4, np.float32), 1.0)
    with pytest.raises(ValueError, match="fraction"):
        quantiser_steps(np.ones(4), 0.0)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", "int32", "int64"])
def test_compiled_quantiser_is_bit_identical_to_the_numpy_definition(dtype):
    """The compiled gather (numba) against the plain-numpy definition: every dtype, stacks and
    single frames, odd widths, no mask, a detector mask and a full-stack mask, negatives
    (sentinels), and counts beyond the largest look-up table (2**24) where the dtype holds them."""
    from lossbound.codecs.quantiser import quantise_counts_reference

    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    for shape, top, fractions in [((3, 7, 9), 1 << 20, (0.3, 1.0, 2.5)), ((5, 10), 1 << 20, (0.3, 1.0, 2.5)),
                                  ((11,), 1 << 20, (1.0,)), ((4, 6, 8), 1 << 26, (1.0,))]:
        top = min(int(info.max), top)
        data = rng.integers(max(int(info.min), -3), top, size=shape, endpoint=True).astype(dtype)
        data.reshape(-1)[::4] = rng.integers(0, 60, size=data.reshape(-1)[::4].shape)  # photon-counting range
        masks = [None, rng.random(shape) > 0.3]
        if len(shape) > 1:
            masks.append(rng.random(shape[-2:]) > 0.2)
        for fraction in fractions:
            for valid in masks:
                fast = quantise_counts(data, fraction, valid=valid)
                slow = quantise_counts_reference(data, fraction, valid=valid)
                assert fast.dtype == slow.dtype == data.dtype
                np.testing.assert_array_equal(fast, slow, err_msg=f"{dtype} {shape} f={fraction}")


def test_compiled_quantiser_keeps_a_uint32_sentinel_under_its_mask():
    """0xFFFFFFFF under the mask is neither quantised nor allowed to ask for a 4-billion table."""
    rng = np.random.default_rng(3)
    frame = rng.poisson(50, (64, 66)).astype(np.uint32)
    frame[:, 30:32] = np.iinfo(np.uint32).max
    valid = frame != np.iinfo(np.uint32).max
    out = quantise_counts(frame, 1.0, valid=valid)
    assert (out[~valid] == np.iinfo(np.uint32).max).all()
    assert (out[valid] != frame[valid]).any() and np.abs(out[valid].astype(np.int64) - frame[valid]).max() <= 4


def test_the_chain_fills_and_quantises_in_one_pass_with_the_same_bits(tmp_path):
    """write_payload's one-pass fill + quantise writes what filling first, then quantising
    everything wrote (the chain's earlier two passes), for a shared and a per-frame mask."""
    import h5py

    from lossbound.codecs import CodecSetting, write_payload
    from lossbound.codecs.transforms import fill_masked

    rng = np.random.default_rng(11)
    frames = rng.poisson(rng.uniform(0, 3000, (3, 40, 51))).astype(np.int32)
    shared = rng.random((40, 51)) > 0.1
    per_frame = rng.random(frames.shape) > 0.1
    for valid in (shared, per_frame):
        data = np.where(valid, frames, -1).astype(np.int32)
        with h5py.File(tmp_path / "q.h5", "w") as f:
            write_payload(f, "d", data, CodecSetting("quant_bslz4", "step_sigma", 1.5), valid=valid)
        with h5py.File(tmp_path / "q.h5", "r") as f:
            stored = f["d"][()]
        expected = quantise_counts(fill_masked(data, valid), 1.5)
        np.testing.assert_array_equal(stored, expected)
