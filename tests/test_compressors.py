"""Codec layer: real HDF5 round trips, refusals before the codec runs, crash isolation."""
from __future__ import annotations

import json
import os
import signal
import time

import h5py
import numpy as np
import pytest

import lossbound.codecs
import lossbound.codecs.hdf5 as hdf5_mod
from lossbound.codecs import (
    CODECS,
    CodecCrash,
    CodecSetting,
    CodecWorker,
    filter_from_config,
    filter_from_options,
    roundtrip,
    settings_from_config,
)
from lossbound.core.errors import ConfigError, InputError

LOSSY = ["sz3", "sz", "zfp", "sperr"]
LOSSLESS = ["bitshuffle_lz4", "zstd", "blosc2"]

# One representative setting per codec, valid on uint16 detector frames.
REPRESENTATIVE = [
    CodecSetting("sz3", "absolute", 2),
    CodecSetting("sz", "absolute", 2),
    CodecSetting("zfp", "absolute", 2, input_dtype="float32"),
    CodecSetting("sperr", "absolute", 2, input_dtype="float32"),
    CodecSetting("bitshuffle_lz4"),
    CodecSetting("zstd"),
    CodecSetting("blosc2"),
]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Poisson counts on a smooth background with a few bright spots, like detector frames."""
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:32, 0:64]
    lam = 3.0 + 2.0 * np.sin(xx / 9.0) ** 2
    for cy, cx in [(8, 12), (20, 40), (27, 55)]:
        lam = lam + 400.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
    return rng.poisson(lam, size=(8, 32, 64)).astype(np.uint16)


@pytest.fixture(scope="module")
def worker():
    with CodecWorker(timeout=60) as w:
        yield w


def _write(data: np.ndarray, filt, chunks, path) -> tuple[int, np.ndarray]:
    """Independent write/re-read of ``data`` with ``filt``: (storage size, data read back)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=data, chunks=chunks, **filt)
    with h5py.File(path, "r") as f:
        return int(f["d"].id.get_storage_size()), f["d"][()]


# -- registry and settings -----------------------------------------------------------------
def test_registry_holds_all_codecs():
    assert set(LOSSY + LOSSLESS) <= set(CODECS.names())
    assert "pointwise_relative" in CODECS.get("sz").int_unsafe_modes
    assert CODECS.get("zfp").modes["absolute"] == "accuracy"
    assert CODECS.get("sz3").modes["psnr"] == "peak_signal_to_noise_ratio"
    assert CODECS.get("zfp").float_only and CODECS.get("sperr").float_only
    assert not CODECS.get("sz3").float_only
    assert all(CODECS.get(n).bounded_modes == {"absolute"} for n in LOSSY)
    assert not any(CODECS.get(n).lossy for n in LOSSLESS)
    with pytest.raises(ConfigError, match="unknown codec 'gzip9'"):
        CODECS.get("gzip9")


def test_setting_label_key_and_dict_roundtrip():
    s = CodecSetting("sz3", "absolute", 4)
    assert s.label == "sz3 absolute=4"
    assert s.key == CodecSetting("sz3", "absolute", 4.0).key
    assert s.key != CodecSetting("sz3", "absolute", 2).key
    t = CodecSetting("zfp", "absolute", 0.5, input_dtype="f4", chunks=[2, 32, 64])
    assert t.input_dtype == "float32" and t.chunks == (2, 32, 64)
    assert t.label == "zfp absolute=0.5 (float32, chunks=2x32x64)"
    d = json.loads(json.dumps(t.as_dict()))
    assert CodecSetting.from_dict(d) == t and CodecSetting.from_dict(d).key == t.key
    assert CodecSetting("bitshuffle_lz4").plugin_kwargs() == {"cname": "lz4"}
    assert CodecSetting("blosc2", "clevel", 9).plugin_kwargs()["clevel"] == 9
    assert isinstance(CodecSetting("blosc2", "clevel", 9).plugin_kwargs()["clevel"], int)


def test_settings_from_config():
    settings = settings_from_config(
        "sz3_abs", {"codec": "sz3", "mode": "absolute", "bounds": [1, 2, 4], "input_dtype": None, "chunks": None}
    )
    assert [s.label for s in settings] == ["sz3 absolute=1", "sz3 absolute=2", "sz3 absolute=4"]
    assert [s.value for s in settings] == [1.0, 2.0, 4.0]
    (lossless,) = settings_from_config("bitshuffle_lz4", {"codec": "bitshuffle_lz4"})
    assert lossless == CodecSetting("bitshuffle_lz4")
    zfp = settings_from_config("zfp", {"mode": "absolute", "bounds": ["1e-3"], "input_dtype": "float32", "chunks": "all"})
    assert zfp == [CodecSetting("zfp", "absolute", 1e-3, input_dtype="float32", chunks="all")]
    with pytest.raises(ConfigError, match="needs a non-empty 'bounds'"):
        settings_from_config("x", {"codec": "sz3", "mode": "absolute"})
    with pytest.raises(ConfigError, match=r"unknown keys \['bound'\]"):
        settings_from_config("x", {"codec": "sz3", "mode": "absolute", "bound": [1]})
    with pytest.raises(ConfigError, match="duplicate bounds"):
        settings_from_config("x", {"codec": "sz3", "mode": "absolute", "bounds": [1, 1.0]})
    with pytest.raises(ConfigError, match="codec config 'x'.*unknown mode 'accuracy'"):
        settings_from_config("x", {"codec": "zfp", "mode": "accuracy", "bounds": [1]})


# -- refusals before the codec runs --------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "dtype", "match"),
    [
        (CodecSetting("zfp", "absolute", 1), "uint16", "set input_dtype: float32"),
        (CodecSetting("sperr", "absolute", 1), "int32", "set input_dtype: float32"),
        (CodecSetting("zfp", "absolute", 1, input_dtype="uint32"), "uint16", "set input_dtype: float32"),
        (CodecSetting("sz", "pointwise_relative", 0.1), "uint16", "must not see integer data"),
        (CodecSetting("sz", "pointwise_relative", 0.1, input_dtype="int32"), "float32", "input_dtype int32 would truncate"),
        (CodecSetting("nope", "absolute", 1), "uint16", "unknown codec 'nope'"),
        (CodecSetting("sz3", "accuracy", 1), "uint16", "unknown mode 'accuracy' for codec 'sz3'"),
        (CodecSetting("sz3", "absolute"), "uint16", "needs a value"),
        (CodecSetting("sz3"), "uint16", "lossy and needs a mode"),
        (CodecSetting("sz3", "absolute", -1), "uint16", "must be > 0"),
        (CodecSetting("zfp", "precision", 8.5, input_dtype="float32"), "uint16", "must be an integer"),
        (CodecSetting("zstd", None, 3), "uint16", "has value 3 but no mode"),
        (CodecSetting("zstd", "clevel", 99), "uint16", "rejected by hdf5plugin.Zstd"),
    ],
)
def test_validate_refuses(setting, dtype, match, frames, monkeypatch):
    with pytest.raises(ConfigError, match=match) as info:
        setting.validate(dtype)
    assert "\n" not in str(info.value)

    # roundtrip must refuse before any HDF5 file (hence any codec) is touched.
    def forbidden(*args, **kwargs):
        raise AssertionError("codec touched before validation")

    monkeypatch.setattr(hdf5_mod.h5py, "File", forbidden)
    with pytest.raises(ConfigError, match=match):
        roundtrip(frames.astype(dtype), setting)


def test_validate_accepts_safe_variants():
    CodecSetting("zfp", "absolute", 1, input_dtype="float32").validate("uint16")
    CodecSetting("sz", "pointwise_relative", 0.1, input_dtype="float32").validate("uint16")
    CodecSetting("sz3", "absolute", 1).validate("uint16")
    CodecSetting("sperr", "absolute", 1).validate("float64")


def test_bad_data_and_narrowing_are_input_errors(frames):
    with pytest.raises(InputError, match="non-empty"):
        roundtrip(np.zeros((0, 4), np.uint16), CodecSetting("zstd"))
    with pytest.raises(InputError, match="cannot hold data range"):
        roundtrip((frames.astype(np.int32) * 1000), CodecSetting("zstd", input_dtype="uint16"))


# -- bounds, ratios, exactness -------------------------------------------------------------
@pytest.mark.parametrize(
    ("codec", "input_dtype"),
    [("sz3", None), ("sz3", "float32"), ("sz", None), ("zfp", "float32"), ("sperr", "float32")],
)
@pytest.mark.parametrize("bound", [0.5, 3.0])
def test_absolute_bound_respected(codec, input_dtype, bound, frames):
    rt = roundtrip(frames, CodecSetting(codec, "absolute", bound, input_dtype=input_dtype))
    err = np.abs(rt.decompressed.astype(np.float64) - frames).max()
    assert rt.max_abs_error == pytest.approx(err, abs=0)
    assert err <= bound * (1 + 1e-6) + np.finfo(np.float32).eps * frames.max()
    assert rt.bound_held is True
    assert 0 < rt.stored_nbytes < rt.raw_nbytes
    assert rt.ratio == pytest.approx(rt.raw_nbytes / rt.stored_nbytes)
    assert rt.raw_nbytes == frames.nbytes and rt.original_dtype == "uint16"
    assert rt.stored_dtype == (input_dtype or "uint16") and rt.dtype_converted == (input_dtype is not None)
    assert rt.ratio_vs_input == pytest.approx(rt.ratio * (2 if input_dtype == "float32" else 1))
    assert rt.skipped_chunks == 0
    if bound == 3.0:
        assert err > 0  # genuinely lossy, not silently stored raw


@pytest.mark.parametrize("setting", REPRESENTATIVE, ids=lambda s: s.codec)
def test_ratio_and_filter_rebuild_match_independent_file(setting, frames, tmp_path):
    rt = roundtrip(frames, setting)
    data = frames.astype(setting.input_dtype) if setting.input_dtype else frames
    original = setting.make_filter()
    for i, filt in enumerate(
        [
            original,
            filter_from_options(rt.filter_id, rt.cd_values),
            filter_from_config(rt.plugin_class, rt.plugin_kwargs),
        ]
    ):
        assert filt.filter_id == rt.filter_id
        nbytes, back = _write(data, filt, rt.chunks, tmp_path / f"{i}.h5")
        assert nbytes == rt.stored_nbytes
        assert rt.ratio == pytest.approx(frames.nbytes / nbytes)
        np.testing.assert_array_equal(back, rt.decompressed)
    m = rt.metrics()
    assert all(isinstance(v, float) for v in m.values())
    assert m["bound_held"] == 1.0 and m["ratio"] == rt.ratio
    json.dumps(rt.summary())


@pytest.mark.parametrize("codec", LOSSLESS)
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_lossless_exact(codec, dtype, frames):
    data = frames.astype(dtype)
    rt = roundtrip(data, CodecSetting(codec))
    np.testing.assert_array_equal(rt.decompressed, data)
    assert rt.decompressed.dtype == data.dtype
    assert rt.max_abs_error == 0.0 and rt.bound_held is True
    assert rt.ratio > 1


def test_unbounded_mode_has_no_bound_verdict(frames):
    rt = roundtrip(frames, CodecSetting("zfp", "rate", 8, input_dtype="float32"))
    assert rt.bound_held is None and "bound_held" not in rt.metrics()
    assert rt.ratio_vs_input == pytest.approx(4.0, rel=0.05)  # 32 bits -> 8 bits per value


def test_nan_at_same_place_is_not_an_error():
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data[0, 1, 2] = np.nan
    rt = roundtrip(data, CodecSetting("zstd"))
    assert rt.max_abs_error == 0.0 and rt.bound_held is True


# -- chunking ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("chunks", "shape", "expected"),
    [
        (None, (8, 32, 64), (1, 32, 64)),
        (None, (32, 64), (32, 64)),
        ("all", (8, 32, 64), (8, 32, 64)),
        ((2, 16, 64), (8, 32, 64), (2, 16, 64)),
        ((4, 64, 64), (8, 32, 64), (4, 32, 64)),  # clipped to the data
    ],
)
def test_chunk_layout(chunks, shape, expected, frames):
    data = frames.reshape(shape) if len(shape) == 3 else frames[0]
    setting = CodecSetting("sz3", "absolute", 1, chunks=chunks)
    assert setting.chunk_shape(shape) == expected
    rt = roundtrip(data, setting)
    assert rt.chunks == expected  # as recorded by HDF5


def test_chunk_errors():
    with pytest.raises(ConfigError, match="has 2 dims but the data shape"):
        CodecSetting("sz3", "absolute", 1, chunks=(1, 2)).chunk_shape((8, 32, 64))
    with pytest.raises(ConfigError, match="expected null, 'all'"):
        CodecSetting("sz3", "absolute", 1, chunks="frames")
    with pytest.raises(ConfigError, match="positive ints"):
        CodecSetting("sz3", "absolute", 1, chunks=[1, 0, 4])


# -- crash isolation -----------------------------------------------------------------------
def test_worker_roundtrip_matches_inline(worker, frames):
    setting = CodecSetting("sz3", "absolute", 2)
    isolated = worker.roundtrip(frames, setting)
    inline = CodecWorker(isolate=False).roundtrip(frames, setting)
    assert isolated.stored_nbytes == inline.stored_nbytes
    np.testing.assert_array_equal(isolated.decompressed, inline.decompressed)


def test_worker_returns_decompressed_data_through_shared_memory_and_cleans_up(frames, monkeypatch):
    """The decompressed array comes back through a file in /dev/shm (not the pipe), equal to
    the inline round trip, each its own array; nothing is left behind; without /dev/shm the
    pipe is used."""
    setting = CodecSetting("sz3", "absolute", 2)
    inline = CodecWorker(isolate=False).roundtrip(frames, setting)
    with CodecWorker(timeout=60) as w:
        first = w.roundtrip(frames, setting)
        second = w.roundtrip(frames, CodecSetting("sz3", "absolute", 8))
        folder = w._return_dir
        if folder is None:
            pytest.skip("no writable /dev/shm on this machine: the pipe carries the data")
        assert os.listdir(folder) == []                       # each file removed once read
    assert not os.path.exists(folder)
    # a folder left by a killed process (no such pid) is removed by the next worker
    orphan = "/dev/shm/lossbound-codec-999999999-test"
    os.makedirs(orphan, exist_ok=True)
    with CodecWorker(timeout=60) as w:
        w.roundtrip(frames, setting)
        assert not os.path.exists(orphan)
    np.testing.assert_array_equal(first.decompressed, inline.decompressed)
    assert not np.shares_memory(first.decompressed, second.decompressed)
    assert np.abs(second.decompressed.astype(float) - frames).max() <= 8
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # no /dev/shm to write to
    with CodecWorker(timeout=60) as w:
        piped = w.roundtrip(frames, setting)
        assert w._return_dir is None
    np.testing.assert_array_equal(piped.decompressed, inline.decompressed)


def test_worker_python_errors_propagate(worker):
    with pytest.raises(ValueError, match="invalid literal"):
        worker.call(int, "not a number")
    with pytest.raises(ConfigError, match="set input_dtype: float32"):
        worker.roundtrip(np.zeros((2, 4, 4), np.uint16), CodecSetting("zfp", "absolute", 1))
    assert worker.call(os.getpid) != os.getpid()


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (os._exit, (0,), "exited with status 0"),
        (signal.raise_signal, (signal.SIGSEGV,), "killed by SIGSEGV"),
    ],
    ids=["exit0", "segfault"],
)
def test_worker_crash_then_recovers(worker, frames, fn, args, match):
    before = worker.restarts
    with pytest.raises(CodecCrash, match=f"^boom: worker process {match}") as info:
        worker.call(fn, *args, label="boom")
    assert "\n" not in str(info.value) and isinstance(info.value, RuntimeError)
    assert worker.restarts == before + 1
    rt = worker.roundtrip(frames, CodecSetting("zstd"))  # a fresh worker serves the next call
    np.testing.assert_array_equal(rt.decompressed, frames)


def _unguarded_write(data: np.ndarray, plugin_class: str, kwargs: dict) -> int:
    """Test-only: compress with no validation at all (runs in the worker)."""
    import io

    with h5py.File(io.BytesIO(), "w") as f:
        f.create_dataset("d", data=data, chunks=data.shape, **filter_from_config(plugin_class, kwargs))
    return 0


def test_worker_survives_real_codec_exit(worker, frames):
    """SZ pointwise_relative calls exit(0) on integers; bypass validate to prove isolation."""
    setting = CodecSetting("sz", "pointwise_relative", 0.1)
    with pytest.raises(CodecCrash, match=r"^sz pointwise_relative=0\.1: worker process exited with status 0"):
        worker.call(_unguarded_write, frames, "SZ", setting.plugin_kwargs(), label=setting.label)
    assert worker.roundtrip(frames, CodecSetting("sz3", "absolute", 1)).bound_held


def test_worker_timeout_kills_and_recovers(worker):
    t0 = time.perf_counter()
    with pytest.raises(CodecCrash, match=r"^sleep: timed out after 0\.5 s"):
        worker.call(time.sleep, 30, timeout=0.5, label="sleep")
    assert time.perf_counter() - t0 < 10
    assert worker.call(abs, -3) == 3


def test_inline_worker_same_api(frames):
    with CodecWorker(isolate=False) as inline:
        assert inline.call(os.getpid) == os.getpid()
        rt = inline.roundtrip(frames, CodecSetting("bitshuffle_lz4"))
    np.testing.assert_array_equal(rt.decompressed, frames)


def test_public_api_exported():
    for name in lossbound.codecs.__all__:
        assert hasattr(lossbound.codecs, name)


def test_worker_close_and_reuse():
    w = CodecWorker()
    assert w.call(abs, -1) == 1
    w.close(kill=True)
    assert w.call(abs, -2) == 2  # a closed worker starts a fresh process on demand
    w.close()
    assert w.restarts == 0
