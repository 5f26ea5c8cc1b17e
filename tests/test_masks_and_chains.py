"""Masks survive every codec bit for bit; codec chains (pre-transform + HDF5 filter) are read
back by plain h5py + hdf5plugin; sigma-relative bounds are checked as such."""
from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401  (registers the filters for the plain-h5py read)
import numpy as np
import pytest

from lossbound.codecs import CodecSetting, read_payload, roundtrip, write_payload

SETTINGS = [
    CodecSetting("sz3", "absolute", 4), CodecSetting("sz", "absolute", 4),
    CodecSetting("zfp", "absolute", 4, input_dtype="float32"), CodecSetting("sperr", "absolute", 4, input_dtype="float32"),
    CodecSetting("quant_blosc2", "step_sigma", 1.0), CodecSetting("quant_bslz4", "step_sigma", 2.0),
    CodecSetting("bitshuffle_lz4"), CodecSetting("blosc2"),
]


def _pilatus(rng) -> tuple[np.ndarray, np.ndarray]:
    frame = rng.poisson(rng.gamma(2.0, 40.0, (180, 240))).astype(np.int32)
    frame[60:77, :] = -1            # module gap
    frame[:, 120:127] = -1
    frame[5, 7] = frame[90, 200] = -2  # bad pixels
    return frame[None], frame >= 0


def _eiger(rng) -> tuple[np.ndarray, np.ndarray]:
    frames = rng.poisson(0.05, (2, 160, 200)).astype(np.uint32)
    frames[:, 40:50, :] = 0xFFFFFFFF
    frames[:, :, 100:103] = 0xFFFFFFFF
    return frames, frames[0] != 0xFFFFFFFF


def _float_nan(rng) -> tuple[np.ndarray, np.ndarray]:
    frames = rng.gamma(3.0, 50.0, (2, 120, 150)).astype(np.float32)
    frames[:, 10, 20] = np.nan
    frames[:, 70:80, 30:40] = np.nan
    return frames, np.isfinite(frames[0])


CASES = [pytest.param(make, s, id=f"{make.__name__[1:]}-{s.label}") for make in (_pilatus, _eiger, _float_nan)
         for s in SETTINGS if not (s.spec.integer_only and make is _float_nan)]  # quantiser: counts only


@pytest.mark.parametrize(("make", "setting"), CASES)
def test_masked_pixels_come_back_bit_for_bit(make, setting):
    data, valid = make(np.random.default_rng(0))
    rt = roundtrip(data, setting, valid=valid)
    assert rt.masked_pixels == (~np.broadcast_to(valid, data.shape)).sum() > 0
    assert rt.masked_pixels_changed == 0
    masked = ~np.broadcast_to(valid, data.shape)
    back = rt.decompressed[masked]
    assert np.array_equal(back, data[masked], equal_nan=data.dtype.kind == "f")
    if not (setting.codec == "sz" and data.dtype == np.uint32):  # SZ wraps uint32 zeros (a codec bug)
        assert rt.bound_held is True, (setting.label, rt.max_abs_error)


def test_without_the_mask_codecs_do_destroy_sentinels():
    """The protection is needed: SZ3 and ZFP smear sentinels when they see them."""
    rng = np.random.default_rng(1)
    data, valid = _pilatus(rng)
    for s in (CodecSetting("sz3", "absolute", 4), CodecSetting("zfp", "absolute", 4, input_dtype="float32")):
        bare = roundtrip(data, s)
        assert (bare.decompressed[:, ~valid] != data[:, ~valid]).sum() > 0, s.label


def test_chain_file_reads_back_with_plain_h5py_and_the_documented_assignment(tmp_path):
    rng = np.random.default_rng(2)
    data, valid = _eiger(rng)
    setting = CodecSetting("zfp", "absolute", 0.5, input_dtype="float32")
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as f:
        write_payload(f, "data", data, setting, valid=valid)
    with h5py.File(path, "r") as f:  # what a facility reader does (README)
        plain = f["data"][()]
        plain = plain.astype(np.result_type(plain, f["data_masked_values"].dtype))
        plain[np.broadcast_to(f["data_mask"][()] == 1, plain.shape)] = f["data_masked_values"][()]
        ours = read_payload(f, "data")
        chain = f["data"].attrs["lossbound_chain"]
    np.testing.assert_array_equal(plain, ours)
    assert (ours[:, ~valid] == 0xFFFFFFFF).all()
    assert np.abs(ours[:, valid] - data[:, valid]).max() <= 0.5
    assert '"Zfp"' in chain and '"transform": null' in chain


def test_quantiser_bound_is_relative_to_poisson_sigma():
    rng = np.random.default_rng(3)
    data = rng.poisson(rng.gamma(1.0, 300.0, (1, 200, 200))).astype(np.uint32)
    for f in (0.5, 1.0, 3.0):
        rt = roundtrip(data, CodecSetting("quant_zstd", "step_sigma", f))
        assert rt.bound_kind == "poisson_sigma" and rt.bound_held is True
        assert 0 < rt.max_error_sigma <= f / 2
        low = data < 4 / f**2
        assert np.array_equal(rt.decompressed[low], data[low])  # photon-counting levels exact
        assert rt.decompressed.dtype == np.uint32               # detector dtype kept


def test_quantiser_refuses_float_data():
    from lossbound.core.errors import ConfigError

    with pytest.raises(ConfigError, match="integer photon counts"):
        roundtrip(np.ones((4, 4), np.float32), CodecSetting("quant_blosc2", "step_sigma", 1.0))
