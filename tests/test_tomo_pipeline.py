"""Tomography I/O, reconstruction backends against the phantom, and the registered ``tomo`` technique."""

from __future__ import annotations

import hashlib
import io
import math
import os
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from lossbound.core.errors import ConfigError, InputError
from lossbound.pipelines.tomo.simulate import simulate_tomo, simulation_params, write_dataexchange
from lossbound.pipelines import TECHNIQUES
from lossbound.pipelines.tomo import io as tomo_io
from lossbound.pipelines.tomo import recon

REPO = Path(__file__).resolve().parents[1]
TOOTH = REPO.parent / "shared" / "data" / "tomo" / "tooth.h5"
SIM = dict(n_angles=180, n_rows=8, n_cols=128, n_flats=10, n_darks=10)
# The backend tests below compare bare reconstructions with the phantom: a camera without
# defects. The defect handling is tested on the default (defective) camera further down.
CLEAN = dict(dead_pixels=0, hot_pixels=0, zingers=0)


@pytest.fixture(scope="module")
def sim() -> dict[str, np.ndarray]:
    return simulate_tomo(**SIM, **CLEAN)


@pytest.fixture(scope="module")
def sinograms(sim) -> np.ndarray:
    trans = recon.flat_dark_correct(sim["projections"], sim["flats"], sim["darks"])
    return np.ascontiguousarray(np.moveaxis(recon.minus_log(trans), 1, 0))


@pytest.fixture(scope="module")
def recons(sim, sinograms) -> dict[str, np.ndarray]:
    theta = np.deg2rad(sim["theta"])
    return {
        b: recon.reconstruct(sinograms, theta, center=float(sim["center"]), backend=b)
        for b in ("algotom", "skimage")
    }


@pytest.fixture()
def scan_file(sim, tmp_path) -> Path:
    path = tmp_path / "scan.h5"
    write_dataexchange(path, sim, attrs=simulation_params(**SIM, **CLEAN))
    return path


def _digest(path: Path) -> tuple[float, str]:
    return os.stat(path).st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_naming(exc: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, (part, msg)


# ---------------------------------------------------------------------------------------------
# Reconstruction
# ---------------------------------------------------------------------------------------------


def test_flat_dark_correction_and_log(sim):
    trans = recon.flat_dark_correct(sim["projections"], sim["flats"], sim["darks"], min_transmission=0.05)
    assert trans.dtype == np.float32 and trans.shape == sim["projections"].shape
    assert trans.min() >= 0.05
    assert np.median(trans[:, :, :3]) == pytest.approx(1.0, abs=0.01)  # air beside the sample
    np.testing.assert_allclose(recon.minus_log(np.array([1.0, math.e], np.float32)), [0.0, -1.0], atol=1e-6)


def test_angle_weight_covers_half_turns():
    assert recon.angle_weight(np.deg2rad(np.arange(360) * 0.5)) == pytest.approx(math.pi / 360)
    assert recon.angle_weight(np.linspace(0, math.pi, 181)) == pytest.approx(math.pi / 180)
    assert recon.angle_weight(np.deg2rad(np.arange(720) * 0.5)) == pytest.approx(math.pi / 720)


@pytest.mark.parametrize("backend", ["algotom", "skimage"])
def test_reconstruction_matches_phantom(sim, recons, backend):
    rec = recons[backend]
    mu, labels = sim["phantom"], sim["labels"]
    assert rec.dtype == np.float32 and rec.shape == mu.shape
    inside = labels > 0
    assert np.corrcoef(rec[inside], mu[inside])[0, 1] > 0.9
    # Large phases, away from their edges: the phantom's own values within 5 %.
    for material in (1, 2):  # polymer, glass
        core = ndimage.binary_erosion(labels == material, structure=np.ones((1, 5, 5), bool))
        assert core.sum() > 1000
        assert float(rec[core].mean()) == pytest.approx(float(mu[core].mean()), rel=0.05), material
    # Every phase, small objects included, against the phantom seen at FBP resolution
    # (Hann-filtered FBP ~ a Gaussian of 1 px): mean within 10 % of max(mu, mu_polymer).
    blurred = ndimage.gaussian_filter(mu, (0, 1.0, 1.0))
    assert np.corrcoef(rec[inside], blurred[inside])[0, 1] > 0.97
    mu_polymer = float(mu[labels == 1].mean())
    for material in range(1, 6):
        sel = labels == material
        assert sel.sum() >= 50, material
        tol = 0.1 * max(float(mu[sel].mean()), mu_polymer)
        assert float(rec[sel].mean()) == pytest.approx(float(blurred[sel].mean()), abs=tol), material
    assert abs(float(rec[labels == 0][:1000].mean())) < 5e-4  # air reconstructs to ~0


def test_backends_agree(recons):
    a, s = recons["algotom"], recons["skimage"]
    assert np.sqrt(np.mean((a - s) ** 2)) < 0.03 * np.sqrt(np.mean(a**2))


def test_reconstruction_is_deterministic(sinograms, sim, recons):
    # algotom's threaded back-projection races; recon.py pins it to one numba thread.
    again = recon.reconstruct(
        sinograms, np.deg2rad(sim["theta"]), center=float(sim["center"]), backend="algotom"
    )
    np.testing.assert_array_equal(again, recons["algotom"])


def test_find_center(sim, sinograms):
    found = recon.find_center(sinograms[SIM["n_rows"] // 2], sim["theta"])
    assert found == pytest.approx(float(sim["center"]), abs=0.5)


def test_bad_backend_and_filter():
    with pytest.raises(ConfigError, match="backend 'nope'"):
        recon.reconstruct(np.zeros((4, 16), np.float32), np.linspace(0, 3, 4), center=8.0, backend="nope")
    with pytest.raises(ConfigError, match="filter_name 'parzen'"):
        recon.reconstruct(
            np.zeros((4, 16), np.float32),
            np.linspace(0, 3, 4),
            center=8.0,
            backend="skimage",
            filter_name="parzen",
        )


def test_tomopy_backend_is_calibrated_onto_the_common_grid(monkeypatch, sim, sinograms, recons):
    """A stand-in tomopy whose output is transposed, flipped and scaled: calibration undoes it."""
    from algotom.rec.reconstruction import fbp_reconstruction

    def fake_recon(tomo, theta, center=None, algorithm=None, filter_name=None, sinogram_order=False, **kw):
        assert algorithm == "gridrec" and tomo.ndim == 3 and not sinogram_order
        with recon._numba_threads(1):
            out = [
                fbp_reconstruction(
                    tomo[:, i], center, angles=theta, apply_log=False, gpu=False, filter_name="hann"
                )
                for i in range(tomo.shape[1])
            ]
        return 3.0 * np.stack(out)[:, ::-1, :].swapaxes(1, 2)

    fake = types.ModuleType("tomopy")
    fake.recon = fake_recon
    fake.__version__ = "0.0-fake"
    monkeypatch.setitem(sys.modules, "tomopy", fake)
    recon._tomopy_calibration.cache_clear()
    try:
        assert recon.resolve_backend("auto") == "tomopy"
        rec = recon.reconstruct(
            sinograms[:2], np.deg2rad(sim["theta"]), center=float(sim["center"]), backend="tomopy"
        )
    finally:
        recon._tomopy_calibration.cache_clear()
    ref = recons["algotom"][:2]
    assert np.corrcoef(rec.ravel(), ref.ravel())[0, 1] > 0.99
    assert float(rec.sum() / ref.sum()) == pytest.approx(1.0, abs=0.002)


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------


def test_io_errors_are_one_line_and_name_the_file(tmp_path, scan_file, sim):
    missing = tmp_path / "nothing.h5"
    with pytest.raises(InputError) as exc:
        tomo_io.read_dataexchange(missing)
    _one_line_naming(exc, str(missing), "not found")

    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    with pytest.raises(InputError) as exc:
        tomo_io.read_dataexchange(text)
    _one_line_naming(exc, str(text), "HDF5")

    with pytest.raises(InputError) as exc:
        tomo_io.read_dataexchange(scan_file, keys={"flats": "exchange/flat"})
    _one_line_naming(exc, str(scan_file), "exchange/flat", "flat fields")

    bad = tmp_path / "bad_flats.h5"
    write_dataexchange(bad, {**sim, "flats": sim["flats"][:, :4]})
    with pytest.raises(InputError) as exc:
        tomo_io.read_dataexchange(bad)
    _one_line_naming(exc, str(bad), "exchange/data_white", "(4, 128)", "(8, 128)")

    bad_theta = tmp_path / "bad_theta.h5"
    write_dataexchange(bad_theta, {**sim, "theta": sim["theta"][:-1]})
    with pytest.raises(InputError) as exc:
        tomo_io.read_dataexchange(bad_theta)
    _one_line_naming(exc, str(bad_theta), "exchange/theta", "179 angles", "180 projections")

    with pytest.raises(InputError) as exc:
        tomo_io.read_nxtomo(scan_file)
    _one_line_naming(exc, str(scan_file), "NXtomo")


def _write_nxtomo(path: Path, sim: dict, *, with_keys: bool = True) -> None:
    frames = np.concatenate([sim["darks"][:3], sim["flats"][:4], sim["projections"], sim["flats"][4:6]])
    keys = np.array([2] * 3 + [1] * 4 + [0] * len(sim["projections"]) + [1] * 2, np.uint8)
    angles = np.concatenate([np.zeros(7), sim["theta"], np.full(2, 180.0)])
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry["definition"] = "NXtomo"
        det = entry.create_group("instrument/detector")
        det["data"] = frames
        if with_keys:
            det["image_key"] = keys
        entry.create_group("sample")["rotation_angle"] = angles
        entry.create_group("data")["data"] = h5py.SoftLink("/entry/instrument/detector/data")


def test_nxtomo_reader_and_format_detection(tmp_path, scan_file, sim):
    nx = tmp_path / "scan_nx.h5"
    _write_nxtomo(nx, sim)
    arrays = tomo_io.read_nxtomo(nx)
    np.testing.assert_array_equal(arrays["projections"], sim["projections"])
    np.testing.assert_array_equal(arrays["flats"], np.concatenate([sim["flats"][:4], sim["flats"][4:6]]))
    np.testing.assert_array_equal(arrays["darks"], sim["darks"][:3])
    np.testing.assert_array_equal(arrays["theta"], sim["theta"])
    assert arrays["projections"].dtype == np.uint16 and arrays["theta"].dtype == np.float64
    assert tomo_io.find_format(nx) == "nxtomo"
    assert tomo_io.find_format(scan_file) == "dataexchange"

    nokey = tmp_path / "nokey.h5"
    _write_nxtomo(nokey, sim, with_keys=False)
    with pytest.raises(InputError) as exc:
        tomo_io.read_nxtomo(nokey)
    _one_line_naming(exc, str(nokey), "image_key")


# ---------------------------------------------------------------------------------------------
# The technique
# ---------------------------------------------------------------------------------------------


def test_technique_is_registered():
    assert "tomo" in TECHNIQUES
    assert TECHNIQUES.get("tomo").name == "tomo"


def test_technique_generates_caches_and_runs(tmp_path, caplog):
    tech = TECHNIQUES.get("tomo")({"backend": "algotom", "rows": {"start": 1, "step": 3}})
    path = tmp_path / "sim" / "tomo_sim.h5"
    cfg = {
        "name": "sim",
        "format": "dataexchange",
        "path": str(path),
        "adu_per_photon": 1.0,
        "simulation": SIM,
    }
    with caplog.at_level("INFO"):
        ds = tech.load(cfg)
    assert path.exists() and "simulating" in caplog.text
    assert ds.payload == "projections" and ds.payload_array.dtype == np.uint16
    assert set(ds.arrays) == {"projections", "flats", "darks", "theta"}
    assert ds.meta["adu_per_photon"] == 1.0 and ds.meta["simulated"]
    assert ds.meta["ground_truth"]["center"] == pytest.approx((SIM["n_cols"] - 1) / 2 + 1.7)

    before = _digest(path)
    again = tech.load(cfg)  # cached: same parameters, file untouched
    assert _digest(path) == before and again.checksum == ds.checksum

    prepared = tech.prepare(ds)
    assert set(prepared) == {"center", "defective_pixels", "defect_counts", "zingers"}
    # the default camera has one dead and one hot pixel, found and nothing else
    assert prepared["defect_counts"] == {"non_finite": 0, "dead": 1, "saturated": 0, "hot": 1}
    assert prepared["center"] == pytest.approx(ds.meta["ground_truth"]["center"], abs=0.5)
    result = tech.run(ds, prepared)
    assert set(result) == {"recon", "recon_even", "recon_odd"}
    for arr in result.values():  # rows 1, 4, 7
        assert arr.shape == (3, SIM["n_cols"], SIM["n_cols"]) and arr.dtype == np.float32
    # Decompressed payloads arrive as float32: the same numbers give the same result.
    as_float = tech.run(ds.with_payload(ds.payload_array.astype(np.float32)), prepared)
    np.testing.assert_allclose(as_float["recon"], result["recon"], atol=1e-6)

    fig = tech.figure(tech.preview(result), tech.preview(as_float), title="self")
    assert len(fig.axes) == 6  # three images and their colorbars
    fig.savefig(io.BytesIO(), format="png")

    desc = tech.describe()
    assert desc["backend_resolved"] == "algotom" and desc["backend_version"]
    assert desc["rows"] == {"start": 1, "stop": None, "step": 3}

    # Other parameters: the cached file is regenerated.
    changed = tech.load({**cfg, "simulation": {**SIM, "seed": 5}})
    assert changed.meta["simulation"]["seed"] == 5 and changed.checksum != ds.checksum


def test_technique_center_from_config_and_bad_rows(scan_file):
    tech = TECHNIQUES.get("tomo")({"center": 64.5, "halves": False, "rows": {"start": 2, "stop": 3}})
    ds = tech.load({"path": str(scan_file), "format": "auto"})
    assert ds.name == "scan"
    assert tech.prepare(ds)["center"] == 64.5
    assert set(tech.run(ds, {"center": 64.5})) == {"recon"}
    # max_rows thins the selection evenly: 8 rows, at most 3 -> every third row.
    thin = TECHNIQUES.get("tomo")({"max_rows": 3, "halves": False, "center": 64.5})
    assert thin.run(ds, {"center": 64.5})["recon"].shape == (3, 128, 128)
    assert thin._rows(8) == slice(0, 8, 3)
    with pytest.raises(ConfigError, match="select no row"):
        TECHNIQUES.get("tomo")({"rows": {"start": 50}}).run(ds, {"center": 64.5})
    with pytest.raises(ConfigError):
        TECHNIQUES.get("tomo")({"rows": {"step": 0}})


def test_load_never_modifies_input_files(tmp_path, scan_file):
    os.chmod(scan_file, 0o444)
    before = _digest(scan_file)
    tech = TECHNIQUES.get("tomo")({})
    tech.load({"path": str(scan_file)})
    assert _digest(scan_file) == before
    # Someone's own file (no /simulation attributes) is never replaced by a simulation.
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["exchange/data"] = np.zeros((2, 2, 2))
    before = _digest(foreign)
    with pytest.raises(InputError) as exc:
        tech.load({"path": str(foreign), "simulation": {}})
    _one_line_naming(exc, str(foreign), "refusing to overwrite")
    assert _digest(foreign) == before
    with pytest.raises(InputError) as exc:
        tech.load({"path": str(tmp_path / "absent.h5")})
    _one_line_naming(exc, "absent.h5", "not found")


def test_tooth_reconstructs_with_found_center():
    if not TOOTH.exists():
        pytest.skip(f"measured data not found at {TOOTH} (../shared/data beside the repository)")
    before = _digest(TOOTH)
    tech = TECHNIQUES.get("tomo")({"backend": "algotom", "halves": False})
    ds = tech.load({"name": "tooth", "path": str(TOOTH), "format": "auto"})
    assert ds.payload_array.shape == (181, 2, 640) and ds.payload_array.dtype == np.float32
    center = tech.prepare(ds)["center"]
    assert 293.0 <= center <= 297.0
    rec = tech.run(ds, {"center": center})["recon"]
    assert rec.shape == (2, 640, 640) and np.isfinite(rec).all()
    # Dense enamel/dentine well above the background, which stays near zero.
    assert np.percentile(rec, 99.5) > 0.005
    assert abs(float(np.median(rec[:, 100:200, 300:340]))) < 5e-4
    assert _digest(TOOTH) == before


def test_unknown_pipeline_option_is_a_one_line_config_error():
    from lossbound.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown option.*centre") as exc:
        TECHNIQUES.get("tomo")({"centre": 128.0})
    assert "\n" not in str(exc.value)
