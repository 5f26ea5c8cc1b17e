"""Applying an approved threshold to a user's HDF5 file (``lossbound apply``) and
exporting it: real codecs through real HDF5 files, thresholds files built from real round trips."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import yaml

from lossbound.codecs import CodecSetting, read_payload, roundtrip, write_payload
from lossbound.cli.apply import VerificationError, apply_threshold, detector_valid, main, verify_payload
from lossbound.core.types import PointResult
from lossbound.results import signoff
from lossbound.results.export import codec_config, create_dataset_kwargs
from lossbound.results.thresholds import derive_thresholds, update_thresholds

ROOT = Path(__file__).resolve().parents[1]
TOL = {"score": {"min": 0.9}}
PAYLOAD = "/entry/data/data"


# -- thresholds files built from real round trips ---------------------------------------------------
def _dataset_entry(name: str, data: np.ndarray, settings, *, tolerances=TOL, geometry=None) -> dict:
    """One dataset's thresholds entry from round trips of ``data`` (every point passes its
    made-up science criterion; codec figures, filter and bound check are the round trip's)."""
    valid = detector_valid(data)
    points = []
    for s in settings:
        rt = roundtrip(data, s, valid=valid, geometry=geometry)
        assert rt.bound_held is not False, s.label
        points.append(PointResult(point_id=f"{name}-{s.key}", label=s.label, setting=s.as_dict(), lossy=s.spec.lossy,
                                  codec=rt.summary(), metrics={"score": 1.0}, passed=True, dataset=name))
    codecs, baselines = derive_thresholds(points, criteria=["score"])
    return {"dataset": {"name": name, "source": f"test:{name}", "sha256": hashlib.sha256(data.tobytes()).hexdigest()},
            "pipeline": {"test": True}, "tolerances": tolerances, "codecs": codecs, "baselines": baselines}


def _thresholds(path: Path, name: str, data: np.ndarray, settings, *, approve=(), reject=(), **kw) -> Path:
    update_thresholds(path, technique="test", dataset_name=name, entry=_dataset_entry(name, data, settings, **kw))
    for codec in approve:
        signoff.record_review(path, codec, decision="approve", reviewer="tester", note="checked",
                              authenticated=False, runs=[])
    for codec in reject:
        signoff.record_review(path, codec, decision="reject", reviewer="tester", note="ring artefacts",
                              authenticated=False, runs=[])
    return path


def _counts(shape=(4, 48, 64), *, dtype=np.int32, mean=200.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    ring = mean * (1 + 0.5 * np.cos(np.hypot(yy - 20, xx - 30) / 3.0))
    return rng.poisson(np.broadcast_to(ring, shape)).astype(dtype)


def _int32_frames() -> np.ndarray:
    data = _counts()
    data[:, 5, 7] = -1  # module gap
    data[:, 30, 40:43] = -2  # bad pixels
    data[2, 10, 10] = -2  # bad in one frame only: masked in every frame (the detector mask)
    return data


# -- an input file with everything an HDF5 file can hold --------------------------------------------
def _rich_input(path: Path, data: np.ndarray) -> None:
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["title"] = "vlen string"
        f.attrs.create("fixed", np.bytes_(b"NXroot"))
        f.attrs["numbers"] = np.arange(3, dtype=np.int16)
        f.attrs["empty"] = h5py.Empty("f4")
        f.attrs.create("big_endian", np.array([1.5, 2.5], dtype=">f8"))
        entry = f.create_group("entry", track_order=True)
        entry.attrs["NX_class"] = np.bytes_(b"NXentry")
        grp = entry.create_group("data")
        grp.attrs["NX_class"] = np.bytes_(b"NXdata")
        grp.attrs["signal"] = "data"
        ds = grp.create_dataset("data", data=data, chunks=(1, *data.shape[1:]), compression="gzip")
        ds.attrs["units"] = "counts"
        ds.attrs["image_nr_low"] = np.uint64(1)
        x = grp.create_dataset("x_pixel", data=np.arange(data.shape[-1], dtype=np.float64))
        x.make_scale("x")
        ds.dims[2].attach_scale(x)
        det = entry.create_group("instrument/detector")
        det.attrs["NX_class"] = np.bytes_(b"NXdetector")
        det["data"] = ds  # NeXus: a hard link to the frames
        flat = det.create_dataset("flat", data=np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64),
                                  chunks=(16, 64), compression="gzip", compression_opts=4, shuffle=True)
        flat.attrs["description"] = "open beam"
        det["flat_again"] = flat
        det["flat_soft"] = h5py.SoftLink("/entry/instrument/detector/flat")
        det["dangling"] = h5py.SoftLink("/nowhere")
        entry["external"] = h5py.ExternalLink("elsewhere.h5", "/x")
        entry["sample/name"] = "tooth"
        entry["sample"].attrs["NX_class"] = np.bytes_(b"NXsample")
        entry.attrs["default_ref"] = grp.ref
        refs = entry.create_dataset("refs", (2,), dtype=h5py.ref_dtype)
        refs[0], refs[1] = flat.ref, entry["sample"].ref
        entry.create_dataset("region", data=flat.regionref[2:4, 5:9], dtype=h5py.regionref_dtype)
        f["types/float4"] = np.dtype("<f4")
        f["types/root"] = f["/"]  # a hard link back to the root
        f.create_dataset("scalar", data=3.25)


def _attr_items(obj) -> list:
    out = []
    for name in obj.attrs:
        aid = obj.attrs.get_id(name)
        value = obj.attrs[name]
        out.append((name, aid.dtype, aid.shape, aid.get_type().get_class(), _plainly(value, obj.file)))
    return out


def _plainly(value, fh):
    """Values comparable across files: references as the paths they point to."""
    if isinstance(value, h5py.Empty):
        return ("empty", value.dtype)
    if isinstance(value, h5py.RegionReference):
        return ("region", fh[value].name, tuple(fh[value][value].ravel()))
    if isinstance(value, h5py.Reference):
        return ("ref", fh[value].name if value else None)
    arr = np.asarray(value)
    if arr.dtype.kind == "O" or arr.dtype.names:
        return repr([_plainly(v, fh) for v in arr.ravel()]) if arr.dtype.kind == "O" else repr(
            [tuple(_plainly(v, fh) for v in row) for row in arr.ravel()])
    return (arr.dtype.str, arr.shape, arr.tobytes())


def _assert_copied(fin: h5py.File, fout: h5py.File, payload_addr: int) -> None:
    """Every link, object and attribute of ``fin`` is in ``fout`` (the payload's values aside)."""
    assert _attr_items(fin) == _attr_items(fout)
    assert list(fin) == list(fout)  # creation order kept
    links: list = []
    fin.visititems_links(lambda name, link: links.append((name, link)))
    addr_in, addr_out = {}, {}
    for name, link in links:
        other = fout.get(name, getlink=True)
        assert type(other) is type(link), name
        if isinstance(link, h5py.SoftLink):
            assert other.path == link.path
            continue
        if isinstance(link, h5py.ExternalLink):
            assert (other.filename, other.path) == (link.filename, link.path)
            continue
        a, b = fin[name], fout[name]
        addr_in[name] = h5py.h5o.get_info(a.id).addr
        addr_out[name] = h5py.h5o.get_info(b.id).addr
        assert type(a) is type(b), name
        if isinstance(a, h5py.Group):
            extra = {"data_mask", "data_masked_values"}  # beside the payload (named data in these files)
            assert list(a) == [n for n in b if not (n in extra and n not in a)], name
        if addr_in[name] == payload_addr:
            assert [i for i in _attr_items(a) if i[0] != "DIMENSION_LIST"] == \
                   [i for i in _attr_items(b) if i[0] not in ("lossbound_chain", "DIMENSION_LIST")], name
            continue
        assert _attr_items(a) == _attr_items(b), name
        if isinstance(a, h5py.Dataset):
            assert (a.dtype, a.shape, a.chunks, a.compression, a.compression_opts, a.shuffle) == \
                   (b.dtype, b.shape, b.chunks, b.compression, b.compression_opts, b.shuffle), name
            if a.dtype.kind == "O":
                assert _plainly(a[()], fin) == _plainly(b[()], fout), name
            else:
                assert np.array_equal(a[()], b[()]), name
    # objects shared by several hard links stay shared
    for n1 in addr_in:
        for n2 in addr_in:
            assert (addr_in[n1] == addr_in[n2]) == (addr_out[n1] == addr_out[n2]), (n1, n2)


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def approved(tmp_path):
    """int32 frames with -1/-2 sentinels in a rich file, and an approved sz3 absolute=2 threshold."""
    data = _int32_frames()
    src = tmp_path / "scan.h5"
    _rich_input(src, data)
    th = _thresholds(tmp_path / "thresholds.yaml", "frames", data, [CodecSetting("sz3", "absolute", 1),
                                                                   CodecSetting("sz3", "absolute", 2)],
                     approve=["sz3"])
    return th, src, data


# -- tests --------------------------------------------------------------------------------------------
def test_apply_approved_copies_everything_and_keeps_the_bound(approved, tmp_path, capsys):
    th, src, data = approved
    before = _fingerprint(src)
    out = tmp_path / "out.h5"
    assert main([str(th), "--codec", "sz3", str(src), str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "ratio" in line and "<= bound 2" in line and "[approved]" in line
    assert _fingerprint(src) == before  # the input: not a byte, not its mtime

    with h5py.File(src, "r") as fin, h5py.File(out, "r") as fout:
        _assert_copied(fin, fout, h5py.h5o.get_info(fin[PAYLOAD].id).addr)
        back = read_payload(fout["entry/data"], "data")
        raw = fout[PAYLOAD]
        assert raw.compression_opts is None and raw.id.get_create_plist().get_filter(0)[0] == 32024  # SZ3
        assert raw.chunks == (1, *data.shape[1:])
        assert fout["entry/instrument/detector/data"].id == raw.id  # the NeXus hard link follows the payload
        assert fout["entry/data/x_pixel"] == fout[fout[PAYLOAD].attrs["DIMENSION_LIST"][2][0]]
        assert fout.attrs["big_endian"].dtype == np.dtype(">f8")
    masked = ~detector_valid(data)
    assert masked.sum() == 5
    full = np.broadcast_to(masked, data.shape)
    assert np.array_equal(back[full], data[full])  # sentinels exact
    err = np.abs(back.astype(np.int64) - data)[~full]
    assert 0 < err.max() <= 2


def test_apply_float_zfp_keeps_nan_and_bound(tmp_path):
    data = _counts(dtype=np.float32) * np.float32(0.25)
    data[1, 3, 4] = np.nan
    data[:, 0, 0] = np.inf
    th = _thresholds(tmp_path / "t.yaml", "float", data, [CodecSetting("zfp", "absolute", 0.5)], approve=["zfp"])
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f["exchange/data"] = data
    report = apply_threshold(th, "zfp", src, out)
    assert report.payload == "/exchange/data"
    assert report.masked_pixels == 2 and report.masked_values == 2 * data.shape[0]
    with h5py.File(out, "r") as f:
        back = read_payload(f["exchange"], "data")
    assert np.isnan(back[1, 3, 4]) and np.isinf(back[:, 0, 0]).all()
    ok = np.isfinite(data).all(axis=0)
    assert 0 < np.abs(back[:, ok] - data[:, ok]).max() <= 0.5 == report.bound


def test_apply_noise_quantiser_keeps_its_sigma_bound(tmp_path, capsys):
    data = _counts(dtype=np.uint16, mean=400.0)
    data[:, 8, 9] = np.iinfo(np.uint16).max  # dead pixel sentinel
    th = _thresholds(tmp_path / "t.yaml", "u16", data, [CodecSetting("quant_blosc2", "step_sigma", 1.0)],
                     approve=["quant_blosc2"])
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f[PAYLOAD] = data
    assert main([str(th), "--codec", "quant_blosc2", str(src), str(out)]) == 0
    assert "sigma <= 0.5 sigma (poisson_sigma)" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        back = read_payload(f["entry/data"], "data")
    assert (back[:, 8, 9] == 65535).all()
    valid = np.broadcast_to(detector_valid(data), data.shape)
    err = np.abs(back.astype(np.float64) - data)[valid]
    assert 0 < err.max() and (err <= 0.5 * np.sqrt(data[valid].astype(np.float64)) + 1e-9).all()


def test_rejected_threshold_refused_unless_overridden(tmp_path, capsys):
    data = _int32_frames()
    th = _thresholds(tmp_path / "t.yaml", "frames", data, [CodecSetting("sz3", "absolute", 2)], reject=["sz3"])
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f[PAYLOAD] = data
    assert main([str(th), "--codec", "sz3", str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "rejected by tester" in err
    assert not out.exists()
    assert main([str(th), "--codec", "sz3", str(src), str(out), "--allow-unreviewed"]) == 0
    assert out.exists() and "[rejected]" in capsys.readouterr().out


def test_unreviewed_and_stale_thresholds_refused(tmp_path, capsys, caplog):
    data = _int32_frames()
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    with h5py.File(src, "w") as f:
        f[PAYLOAD] = data
    th = _thresholds(tmp_path / "t.yaml", "frames", data, [CodecSetting("sz3", "absolute", 2)])
    assert main([str(th), "--codec", "sz3", str(src), str(out)]) == 2
    assert "is unreviewed" in capsys.readouterr().err and not out.exists()

    signoff.record_review(th, "sz3", decision="approve", reviewer="tester", note="", authenticated=False, runs=[])
    assert main([str(th), "--codec", "sz3", "--export"]) == 0
    capsys.readouterr()
    # the approval was given under other tolerances: the same file edited afterwards is stale
    doc = yaml.safe_load(th.read_text())
    doc["datasets"]["frames"]["tolerances"] = {"score": {"min": 0.5}}
    th.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert signoff.review_status(doc, "sz3")["status"] == "stale"
    assert main([str(th), "--codec", "sz3", str(src), str(out)]) == 2
    assert "is stale" in capsys.readouterr().err and not out.exists()
    # the study re-run with another tolerance for the same dataset: no longer approved either
    update_thresholds(th, technique="test", dataset_name="frames",
                      entry=_dataset_entry("frames", data, [CodecSetting("sz3", "absolute", 2)],
                                           tolerances={"score": {"min": 0.95}}))
    assert signoff.review_status(signoff.load_document(th), "sz3")["status"] == "stale"
    assert main([str(th), "--codec", "sz3", str(src), str(out)]) == 2
    assert "is stale by tester" in capsys.readouterr().err and not out.exists()
    with caplog.at_level("WARNING"):
        assert main([str(th), "--codec", "sz3", str(src), str(out), "--allow-unreviewed"]) == 0
    assert any("not approved" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", ["missing_dataset", "unknown_codec", "out_is_in", "out_exists", "missing_in",
                                  "not_hdf5", "no_threshold", "mask_exists", "bad_dtype_for_codec", "no_poni",
                                  "dtype_not_measured"])
def test_bad_input_is_one_line(approved, tmp_path, capsys, case):
    th, src, data = approved
    out = tmp_path / "out.h5"
    args = [str(th), "--codec", "sz3", str(src), str(out)]
    expect = {"missing_dataset": "/entry/nothing", "unknown_codec": "expected one of: sz3",
              "out_is_in": "is the input file", "out_exists": "--overwrite", "missing_in": "no such file",
              "not_hdf5": "not an HDF5 file", "no_threshold": "has no threshold", "mask_exists": "data_mask exists",
              "bad_dtype_for_codec": "integer photon counts", "no_poni": "--poni",
              "dtype_not_measured": "measured on int32 data"}[case]
    if case == "missing_dataset":
        args += ["--dataset", "/entry/nothing"]
    elif case == "unknown_codec":
        args[2] = "sz9"
    elif case == "dtype_not_measured":  # an absolute bound in counts is meaningless on other data
        args += ["--dataset", "/entry/instrument/detector/flat"]
    elif case == "out_is_in":
        args[4] = str(tmp_path / "." / "scan.h5")
    elif case == "out_exists":
        out.write_bytes(b"keep me")
    elif case == "missing_in":
        args[3] = str(tmp_path / "absent.h5")
    elif case == "not_hdf5":
        (tmp_path / "text.h5").write_text("not hdf5")
        args[3] = str(tmp_path / "text.h5")
    elif case == "no_threshold":
        doc = yaml.safe_load(th.read_text())
        doc["codecs"]["sz3"]["bound"] = None
        th.write_text(yaml.safe_dump(doc))
        args.append("--allow-unreviewed")
    elif case == "mask_exists":
        with h5py.File(src, "a") as f:
            f["entry/data/data_mask"] = np.zeros(data.shape[1:], np.uint8)
    elif case in ("bad_dtype_for_codec", "no_poni"):
        codec = {"bad_dtype_for_codec": "quant_blosc2", "no_poni": "sparsify_m1"}[case]
        doc = yaml.safe_load(th.read_text())
        # a float payload for the quantiser; a frame-modelling codec without geometry
        entry = dict(doc["codecs"]["sz3"], codec=codec, mode={"quant_blosc2": "step_sigma"}.get(codec, "k_sigma"),
                     bound=1.0, hdf5plugin=None, transform_params=None)
        if case == "bad_dtype_for_codec":  # as if measured on float data: the chain itself refuses it
            entry.update(detector_dtype="float32", input_dtype="float32")
        doc["codecs"][codec] = entry
        th.write_text(yaml.safe_dump(doc))
        args[2] = codec
        args.append("--allow-unreviewed")
        if case == "bad_dtype_for_codec":
            src2 = tmp_path / "float.h5"
            with h5py.File(src2, "w") as f:
                f[PAYLOAD] = data.astype(np.float32)
            args[3] = str(src2)
    before = out.read_bytes() if out.exists() else None
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith("error: ") and expect in last, err
    assert [ln for ln in err.splitlines() if ln.startswith("error")] == [last]
    assert (out.read_bytes() if out.exists() else None) == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_verification_catches_a_broken_bound_and_changed_masked_pixels(tmp_path):
    """The check after writing: a file written with a looser bound, or with the sentinels sent
    through the lossy codec, is refused."""
    data = _int32_frames()
    valid = detector_valid(data)
    loose, tight = CodecSetting("sz3", "absolute", 8), CodecSetting("sz3", "absolute", 1)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        write_payload(f, "kept", data, loose, valid=valid)
        write_payload(f, "through_codec", data, loose)  # no mask: -1/-2 go through SZ3
    report = verify_payload(path, "/kept", data, loose, valid=valid)
    assert 1 < report.max_error <= 8 and report.masked_pixels == 5 and report.masked_values == 20
    with pytest.raises(VerificationError, match=r"max error .* > allowed 1\b"):
        verify_payload(path, "/kept", data, tight, valid=valid)
    with pytest.raises(VerificationError, match="masked value"):
        verify_payload(path, "/through_codec", data, loose, valid=valid)


def test_missing_dataset_lists_the_available_ones(approved, tmp_path, capsys):
    th, src, _ = approved
    assert main([str(th), "--codec", "sz3", str(src), str(tmp_path / "o.h5"), "--dataset", "/entry/data"]) == 2
    err = capsys.readouterr().err
    assert "is a group" in err and "/entry/data/data 4x48x64 int32" in err and "/entry/instrument/detector/flat" in err


def test_command_line_exit_code_without_traceback(approved, tmp_path):
    th, src, _ = approved
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lossbound.cli.apply", str(th), "--codec", "nope", str(src),
                           str(tmp_path / "o.h5")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_export_prints_the_codec_configuration(approved, tmp_path, capsys):
    th, _, _ = approved
    assert main([str(th), "--codec", "sz3", "--export"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["codec"] == "sz3" and config["bound"] == 2 and config["bound_kind"] == "absolute"
    assert config["hdf5plugin"] == {"class": "SZ3", "kwargs": {"absolute": 2.0}}
    assert config["filter_id"] == 32024 and config["transform"] is None and config["review"] == "approved"
    assert config["cd_values"] == list(hdf5plugin.SZ3(absolute=2.0).filter_options)
    # one dataset's own threshold was never signed off (reviews cover the combined one)
    assert main([str(th), "--codec", "sz3", "--export", "--from-dataset", "frames"]) == 2
    assert "reviews cover the combined threshold" in capsys.readouterr().err
    assert main([str(th), "--codec", "sz3", "--export", "--from-dataset", "frames", "--allow-unreviewed"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["bound"] == 2
    assert main([str(th), "--codec", "sz3", "--export", "--from-dataset", "tooth", "--allow-unreviewed"]) == 2
    assert "no dataset 'tooth' in the thresholds file; expected one of: frames" in capsys.readouterr().err


def test_export_notes_a_pre_transform(tmp_path, capsys):
    data = _counts(dtype=np.uint16)
    th = _thresholds(tmp_path / "t.yaml", "u16", data, [CodecSetting("quant_bslz4", "step_sigma", 1.0)])
    assert main([str(th), "--codec", "quant_bslz4", "--export"]) == 2  # unreviewed
    capsys.readouterr()
    assert main([str(th), "--codec", "quant_bslz4", "--export", "--allow-unreviewed"]) == 0
    out = capsys.readouterr().out
    config = yaml.safe_load(out)
    assert config["transform"] == "noise_quantiser" and config["transform_params"] == {"step_sigma": 1.0}
    assert out.strip().splitlines()[-1].startswith("# note: chain has a pre-transform (noise_quantiser)")
    assert config == codec_config(signoff.load_document(th)["codecs"]["quant_bslz4"]) | {"review": "unreviewed"}


def test_create_dataset_kwargs_write_the_entry_filter(approved, tmp_path):
    th, _, data = approved
    doc = signoff.load_document(th)
    for entry in (doc["codecs"]["sz3"], doc["datasets"]["frames"]["codecs"]["sz3"]):
        kwargs = create_dataset_kwargs(entry, shape=data.shape)
        assert kwargs["chunks"] == (1, *data.shape[1:]) and kwargs["dtype"] == "int32"
        path = tmp_path / "plain.h5"
        clean = np.where(data < 0, 0, data)
        with h5py.File(path, "w") as f:  # h5py + hdf5plugin only
            f.create_dataset("d", data=clean, **kwargs)
        with h5py.File(path, "r") as f:
            filter_id = f["d"].id.get_create_plist().get_filter(0)[0]
            back = f["d"][()]
        assert filter_id == entry["filter_id"] == 32024
        assert np.abs(back.astype(np.int64) - clean).max() <= entry["bound"]
    assert "chunks" not in create_dataset_kwargs(doc["codecs"]["sz3"])  # one frame per chunk needs the shape
    changed = dict(doc["codecs"]["sz3"], hdf5plugin={"class": "SZ3", "kwargs": {"absolute": 3.0}})
    with pytest.raises(Exception, match="re-run the study"):
        create_dataset_kwargs(changed)


def _h5dump(path: Path, dataset: str, dtype, shape, tmp_path: Path) -> np.ndarray:
    target = tmp_path / (dataset.strip("/").replace("/", "_") + ".bin")
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    proc = subprocess.run(["h5dump", "-d", dataset, "-b", "LE", "-o", str(target), str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(target, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (Debian hdf5-tools) not installed")
def test_applied_file_reads_the_same_outside_python(approved, tmp_path):
    th, src, data = approved
    out = tmp_path / "out.h5"
    apply_threshold(th, "sz3", src, out)
    with h5py.File(out, "r") as f:
        stored = f[PAYLOAD][()]
        restored = read_payload(f["entry/data"], "data")
        mask_shape, n_values = f[PAYLOAD + "_mask"].shape, f[PAYLOAD + "_masked_values"].shape
    dumped = _h5dump(out, PAYLOAD, stored.dtype, stored.shape, tmp_path)
    assert np.array_equal(dumped, stored)
    # the masked pixels too, by the one assignment the store documents
    mask = _h5dump(out, PAYLOAD + "_mask", np.uint8, mask_shape, tmp_path) == 1
    values = _h5dump(out, PAYLOAD + "_masked_values", data.dtype, n_values, tmp_path)
    dumped[np.broadcast_to(mask, dumped.shape)] = values
    assert np.array_equal(dumped, restored)


# -- measured data ------------------------------------------------------------------------------------
def _copy_and_apply(tmp_path, src: Path, payload: str, data: np.ndarray, setting: CodecSetting, **kw):
    th = _thresholds(tmp_path / "t.yaml", src.stem, data, [setting], approve=[setting.codec],
                     geometry=kw.pop("geometry", None))
    before = _fingerprint(src)
    out = tmp_path / "out.h5"
    report = apply_threshold(th, setting.codec, src, out, **kw)
    assert _fingerprint(src) == before
    assert report.payload == payload
    with h5py.File(src, "r") as fin, h5py.File(out, "r") as fout:  # plain h5py + hdf5plugin
        _assert_copied(fin, fout, h5py.h5o.get_info(fin[payload].id).addr)
        # what any reader does: the payload, then the documented assignment for masked pixels
        back = fout[payload][()]
        if payload + "_mask" in fout:
            back = back.astype(np.result_type(back, fout[payload + "_masked_values"].dtype))
            back[np.broadcast_to(fout[payload + "_mask"][()] == 1, back.shape)] = fout[payload + "_masked_values"][()]
    return report, back


def test_apply_on_the_measured_tooth_scan(shared_data, tmp_path):
    src = shared_data / "tomo" / "tooth.h5"
    with h5py.File(src, "r") as f:
        data = f["exchange/data"][()]
    report, back = _copy_and_apply(tmp_path, src, "/exchange/data", data, CodecSetting("sz3", "absolute", 1.0))
    assert back.dtype == np.float32 and report.masked_pixels == 0
    assert 0 < np.abs(back.astype(np.float64) - data).max() == report.max_error <= 1.0 + 1e-3
    assert report.input_nbytes == data.nbytes and report.ratio == data.nbytes / report.stored_nbytes


def test_apply_on_a_measured_saxs_frame(shared_data, tmp_path):
    src = shared_data / "powder" / "AgBehenate_228.hdf5"
    with h5py.File(src, "r") as f:
        data = f["entry/data/data"][()]
    report, back = _copy_and_apply(tmp_path, src, "/entry/data/data", data,
                                   CodecSetting("quant_blosc2", "step_sigma", 1.0))
    valid = np.broadcast_to(detector_valid(data) if detector_valid(data) is not None else True, data.shape)
    err = np.abs(back.astype(np.float64) - data)
    assert np.array_equal(back[~valid], data[~valid])
    assert (err[valid] <= 0.5 * np.sqrt(np.maximum(data[valid], 0)) + 1e-9).all()
    assert report.max_error_sigma <= 0.5 and report.ratio > 1


def test_frame_modelling_codec_needs_and_uses_the_geometry(shared_data, tmp_path, capsys):
    from lossbound.pipelines.frames import load_geometry

    src = shared_data / "powder" / "AgBehenate_228.hdf5"
    poni = shared_data / "powder" / "AgBehenate_228_refined_dist.poni"
    with h5py.File(src, "r") as f:
        data = f["entry/data/data"][()]
    geometry = load_geometry(poni, data.shape).get_config()
    th = _thresholds(tmp_path / "t.yaml", "agbh", data, [CodecSetting("sparsify_m1", "k_sigma", 5.0)],
                     approve=["sparsify_m1"], geometry=geometry)
    out = tmp_path / "out.h5"
    assert main([str(th), "--codec", "sparsify_m1", str(src), str(out)]) == 2
    assert "--poni" in capsys.readouterr().err and not out.exists()
    assert main([str(th), "--codec", "sparsify_m1", str(src), str(out), "--poni", str(poni)]) == 0
    assert "not bounded, checked: mask only" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f["entry/data/data"].attrs["lossbound_chain"]
