from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the project; tests using it skip when it is absent (fresh clones)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"measured data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def compose(overrides: list[str]):
    """The project's Hydra config composed as `python -m evaluate <overrides>` would."""
    from lossbound.cli.config import compose as _compose

    return _compose(overrides)


def small_sim_overrides(tmp_path: Path) -> list[str]:
    """A tiny simulation and store under tmp_path so tests never touch runs/."""
    return [
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.reference_data={tmp_path}",
        "dataset.simulation.n_angles=120",
        "dataset.simulation.n_rows=8",
        "dataset.simulation.n_cols=96",
        "technique.pipeline.max_rows=4",
        "sweep.progress=false",
    ]


def rebuilt_filter_max_error(entry: dict, data: np.ndarray) -> float:
    """Store ``data`` (one frame per chunk) with the filter rebuilt from a thresholds-file entry,
    read it back through HDF5 and return the measured max absolute error."""
    from lossbound.results.thresholds import rebuild_filter
    import h5py

    arr = data.astype(entry["input_dtype"]) if entry.get("input_dtype") else data
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("d", data=arr, chunks=(1, *arr.shape[1:]), compression=rebuild_filter(entry))
    with h5py.File(buf, "r") as f:
        back = f["d"][()]
    return float(np.abs(back.astype(np.float64) - data).max())
