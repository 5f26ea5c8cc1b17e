"""Hostile input: every case ends with one line naming the file, key or value and what was
expected, a non-zero exit and no traceback; no MLflow run is left FINISHED and the input file
is byte-identical afterwards. Needs no shared data."""
from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, compose, small_sim_overrides

N_ANGLES, ROWS, COLS = 24, 4, 40


def _scan(**over) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    flats = rng.poisson(5000, (3, ROWS, COLS)).astype(np.uint16)
    darks = rng.poisson(100, (3, ROWS, COLS)).astype(np.uint16)
    proj = rng.poisson(2500, (N_ANGLES, ROWS, COLS)).astype(np.uint16)
    theta = np.linspace(0, 180, N_ANGLES, endpoint=False)
    arrays = {"data": proj, "data_white": flats, "data_dark": darks, "theta": theta}
    arrays.update(over)
    return arrays


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(f"exchange/{key}", data=value)
    return path


def _nan_frame() -> np.ndarray:
    proj = _scan()["data"].astype(np.float32)
    proj[5, :, : int(COLS * 0.8)] = np.nan
    return proj


def _file_case(name: str, tmp: Path) -> Path:
    p = tmp / f"{name}.h5"
    if name == "missing":
        return p
    if name == "directory":
        p.mkdir()
        return p
    if name == "not_hdf5":
        p.write_text("angle,counts\n0,100\n")
        return p
    if name == "truncated":
        full = _write(tmp / "full.h5", _scan()).read_bytes()
        p.write_bytes(full[: len(full) // 2])
        return p
    arrays = {
        "wrong_key": {k: v for k, v in _scan().items() if k != "data"},
        "angle_mismatch": _scan(theta=np.arange(N_ANGLES - 3, dtype=float)),
        "empty": _scan(data=np.zeros((0, ROWS, COLS), np.uint16), theta=np.zeros(0)),
        "one_d": _scan(data=np.ones(N_ANGLES, np.uint16)),
        "two_d": _scan(data=np.ones((N_ANGLES, COLS), np.uint16)),
        "nonfinite_angles": _scan(theta=np.r_[np.nan, np.arange(1, N_ANGLES, dtype=float)]),
        "complex": _scan(data=_scan()["data"].astype(np.complex64)),
        "all_zero": _scan(data=np.zeros((N_ANGLES, ROWS, COLS), np.uint16)),
        "flats_below_darks": _scan(data_white=np.zeros((3, ROWS, COLS), np.uint16)),
        "mostly_nan_frame": _scan(data=_nan_frame()),
    }[name]
    return _write(p, arrays)


# case -> what the one line must name
FILE_CASES = {
    "missing": "file not found", "directory": "is a directory", "not_hdf5": "not an HDF5 file",
    "truncated": "truncated.h5", "wrong_key": "exchange/data", "angle_mismatch": "one angle per projection",
    "empty": "no frames", "one_d": "3-D stack", "two_d": "3-D stack", "nonfinite_angles": "non-finite angles",
    "complex": "dtype complex64", "all_zero": "all zero", "flats_below_darks": "not above the darks",
    "mostly_nan_frame": "frame 5 is 80 % NaN/Inf",
}


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossbound", "study", *args, f"paths.runs_dir={tmp / 'runs'}",
                           "sweep.progress=false"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _assert_refused(proc: subprocess.CompletedProcess, tmp: Path, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), last
    for needle in needles:
        assert needle in last, (needle, last)
    db = tmp / "runs" / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            finished = con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
        assert finished == 0


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_scan_file_is_one_line_and_nonzero_exit(case, tmp_path):
    path = _file_case(case, tmp_path)
    before = _digest(path)
    proc = _run(["dataset=file", f"dataset.path={path}"], tmp_path)
    _assert_refused(proc, tmp_path, FILE_CASES[case], path.name)
    assert _digest(path) == before


@pytest.mark.parametrize("override, needle", [
    ("sweep.bounds=[-4]", "value must be > 0"),
    ("codec.sz3.mode=loose", "unknown mode 'loose'"),
    ("codec.sz3.chunks=[0,4]", "chunks"),
    ("search.resolution=1.0", "search.resolution"),
    ("sweep.workers=0", "sweep.workers"),
    ("technique.pipeline.zinger_sigma=-1", "zinger_sigma"),
])
def test_bad_values_are_one_line_and_nonzero_exit(override, needle, tmp_path):
    path = _write(tmp_path / "scan.h5", _scan())
    before = _digest(path)
    # the scan is pure noise (no object, so no rotation centre): the gate that says so is off,
    # this test is about the values
    over = ["dataset=file", f"dataset.path={path}", "codec=[sz3]", "technique.gates.rotation_centre=off", override]
    if override.startswith("sweep.bounds"):
        over.append("search=grid")
    proc = _run(over, tmp_path)
    _assert_refused(proc, tmp_path, needle)
    assert _digest(path) == before


def test_default_dataset_with_another_path_is_refused_not_simulated(tmp_path):
    target = tmp_path / "beamline" / "scan.h5"
    proc = _run([f"dataset.path={target}"], tmp_path)
    _assert_refused(proc, tmp_path, str(target), "dataset=file")
    assert not target.exists() and not target.parent.exists()


def test_nan_pixels_are_defective_pixels_and_the_study_runs(tmp_path, caplog):
    """A detector that writes NaN for bad pixels: they are counted and interpolated (lossless
    codecs only here: SZ3 on float data with NaN did not finish a 40x4x40 stack in 300 s)."""
    from lossbound.cli import evaluate

    proj = _scan()["data"].astype(np.float32)
    proj[:, 1, 7] = np.nan      # a pixel NaN in every frame
    proj[3, 2, 20] = np.inf     # and one in a single frame
    path = _write(tmp_path / "nan.h5", _scan(data=proj))
    before = _digest(path)
    with caplog.at_level("INFO"):
        res = evaluate.run(compose([f"paths.runs_dir={tmp_path / 'runs'}", "dataset=file", f"dataset.path={path}",
                                    "codec=[]", "tracking.enabled=false",
                                    "technique.pipeline.max_rows=2"]))
    assert "2 defective pixel(s)" in caplog.text and "non_finite 2" in caplog.text
    assert len(res.points) == 3 and all(p.status == "ok" and p.passed for p in res.points)
    for p in res.points:  # NaN would have spread through the reconstruction and its noise
        assert np.isfinite(p.metrics["recon_noise_sigma"]) and p.metrics["recon_error_to_noise"] == 0.0
    assert _digest(path) == before


def test_a_study_where_every_point_fails_ends_normally(tmp_path):
    from lossbound.cli import evaluate

    res = evaluate.run(compose(small_sim_overrides(tmp_path) + [
        "codec=[sz3]", "search=grid", "sweep.bounds=[2,8]", "sweep.timeout_s=0.0001", "sweep.workers=1"]))
    assert res.points and all(p.status == "failed" for p in res.points)
    assert "timed out" in res.points[0].reason
    assert res.codecs["sz3"]["bound"] is None
    assert res.thresholds["datasets"]["sim_tomo"]["codecs"]["sz3"]["bound"] is None
