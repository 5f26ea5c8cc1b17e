"""Ptychographic reconstruction with CDTools (``cdtools-py``, PyTorch, on the CPU).

Why CDTools and not Pty-chi: Pty-chi 2.2 imports torchvision at module level (its
``utils.py``); torchvision from the package index does not load beside the CPU build of
PyTorch, and pairing it with a CUDA build costs ~5.5 GB. Pty-chi also installs mypy, ruff,
pytest, pandas and scikit-learn as run-time dependencies. CDTools needs only PyTorch,
NumPy, SciPy, h5py and matplotlib (README, "Ptychography").

The reconstruction is automatic-differentiation ptychography (Adam on the amplitude error,
mini-batches) with a fixed seed, one thread and a fixed iteration count, so the same patterns
give the same object bit for bit. Geometry is nominal: the patterns' Fourier sampling defines
the object pixel, and everything here is in object pixels.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Iterator

import numpy as np

__all__ = ["Reconstruction", "available", "data_fit", "reconstruct"]

# A nominal far-field geometry whose object pixel is _DX (only the ratio matters)
_WAVELENGTH = 1e-10
_DET_PIXEL = 75e-6
_DX = 10e-9


def available() -> str | None:
    """None when CDTools and PyTorch import, else the one-line reason."""
    try:
        import cdtools  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return (f"ptycho reconstruction needs cdtools-py and torch (pip install 'lossbound[ptycho]'): "
                f"{exc}")
    return None


@dataclasses.dataclass
class Reconstruction:
    """One reconstruction: the object (complex, the scanned field plus the padding), the probe,
    the loss per iteration, where the object's pixel (0, 0) sits in scan coordinates, the
    summed probe intensity over the object, and optionally the model's patterns."""

    obj: np.ndarray
    probe: np.ndarray
    loss: np.ndarray
    origin: tuple[int, int]
    illumination: np.ndarray
    model_patterns: np.ndarray | None = None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _dataset(patterns: np.ndarray, valid: np.ndarray, positions: np.ndarray):
    import cdtools
    import torch

    n = patterns.shape[-1]
    distance = _DX * n * _DET_PIXEL / _WAVELENGTH
    tr = np.zeros((len(positions), 3))
    # CDTools' object axes run against the detector basis below: a scan position (row, col)
    # in object pixels is the translation (-col, -row) * dx
    tr[:, 0] = -positions[:, 1] * _DX
    tr[:, 1] = -positions[:, 0] * _DX
    return cdtools.datasets.Ptycho2DDataset(
        tr, np.ascontiguousarray(patterns, dtype=np.float32), wavelength=_WAVELENGTH,
        detector_geometry={"distance": distance, "basis": np.array([[0, -_DET_PIXEL], [-_DET_PIXEL, 0], [0, 0]])},
        mask=torch.as_tensor(np.asarray(valid, bool)))


def reconstruct(patterns: np.ndarray, valid: np.ndarray, positions: np.ndarray, *,
                probe: np.ndarray | None = None, iterations: int = 30, batch_size: int = 20,
                lr: float = 0.02, seed: int = 0, padding: int = 8, model_patterns: bool = False,
                stages: tuple[tuple[int, float, int], ...] = ()) -> Reconstruction:
    """Reconstruct object and probe from far-field ``patterns``.

    Parameters
    ----------
    patterns : (n, N, N) ndarray
        Photon counts, zero frequency at the centre; invalid pixels are ignored (any value),
        negative values count as 0.
    valid : (N, N) ndarray of bool
        Pixels the fit uses.
    positions : (n, 2) ndarray
        Scan positions (row, col) of the probe window's corner, in object pixels.
    probe : (N, N) complex ndarray, optional
        The initial probe (rescaled to the patterns' mean total counts); default: CDTools'
        estimate from the mean pattern.
    iterations, batch_size, lr, seed, padding
        Adam epochs, patterns per mini-batch, learning rate, the mini-batch order's seed, and
        object pixels added around the scanned field.
    model_patterns : bool
        Also return the model's patterns at every position (for :func:`data_fit`).
    """
    import cdtools
    import torch

    # a lossy codec's negative counts are clipped: the amplitude model takes their square root
    patterns = np.where(valid, np.clip(patterns, 0, None), 0).astype(np.float32)
    positions = np.asarray(positions, np.float64)
    with _one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        ds = _dataset(patterns, valid, positions)
        model = cdtools.models.FancyPtycho.from_dataset(ds, n_modes=1, obj_padding=padding, panel_plot_mode=False)
        if probe is not None:
            start = torch.as_tensor(np.asarray(probe), dtype=torch.complex64)
            scale = np.sqrt(float(patterns.sum(axis=(1, 2)).mean()) / max(float((start.abs() ** 2).sum()), 1e-30))
            model.probe.data[0] = start * scale / model.probe_norm
        losses = [float(v) for v in model.Adam_optimize(iterations, ds, lr=lr, batch_size=batch_size, thread=False)]
        for n_it, factor, batch in stages:
            losses += [float(v) for v in model.Adam_optimize(int(n_it), ds, lr=lr * float(factor), batch_size=int(batch),
                                                              thread=False)]
        obj = model.obj.detach().numpy().astype(np.complex64)
        prb = (model.probe.detach()[0] * model.probe_norm).numpy().astype(np.complex64)
        # the object pixel of scan position p: p - min position + translation offset
        pix = cdtools.tools.interactions.translations_to_pixel(model.probe_basis, ds.translations.to(torch.float32))
        corner = (pix - model.min_translation).numpy()
        offset = np.round(corner - positions).astype(int)
        if np.ptp(offset[:, 0]) or np.ptp(offset[:, 1]):
            raise RuntimeError("cdtools placed the scan positions other than expected (orientation convention)")
        origin = (-int(offset[0, 0]), -int(offset[0, 1]))
        model_out = None
        if model_patterns:
            with torch.no_grad():
                sims = []
                for start in range(0, len(positions), 64):
                    idx = torch.arange(start, min(start + 64, len(positions)))
                    (ind, tr), _ = ds[idx]
                    sims.append(model.forward(ind, tr).numpy())
            model_out = np.concatenate(sims).astype(np.float32)
    illumination = _illumination(np.abs(prb) ** 2, positions - np.asarray(origin), obj.shape)
    return Reconstruction(obj=obj, probe=prb, loss=np.asarray(losses), origin=origin, illumination=illumination,
                          model_patterns=model_out)


def _illumination(intensity: np.ndarray, corners: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum of the probe's intensity over the scan (nearest-pixel placement)."""
    out = np.zeros(shape, np.float64)
    n = intensity.shape[0]
    for r, c in np.round(corners).astype(int):
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + n, shape[0]), min(c + n, shape[1])
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] += intensity[r0 - r:r1 - r, c0 - c:c1 - c]
    return out.astype(np.float32)


def data_fit(measured: np.ndarray, model: np.ndarray, valid: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """How well a reconstruction explains the patterns, in units of counting noise.

    The Poisson deviance of the measured counts about the model's, per valid pixel, divided by
    the deviance a Poisson draw from the model itself has (one draw, fixed seed): 1 means the
    misfit is what counting noise alone gives; a wrong position list, probe or geometry gives
    several. Low counts make the plain deviance < 1 per pixel, which the ratio removes.
    """
    mu = np.maximum(np.asarray(model, np.float64)[:, valid], 1e-9)
    obs = np.clip(np.asarray(measured, np.float64)[:, valid], 0, None)
    draw = np.random.default_rng(seed).poisson(mu).astype(np.float64)

    def deviance(x: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(x > 0, x * np.log(x / mu), 0.0) - (x - mu)
        return float(2 * term.mean())

    d_obs, d_noise = deviance(obs), deviance(draw)
    return {"deviance": d_obs, "deviance_noise": d_noise, "fit_to_noise": d_obs / d_noise if d_noise > 0 else np.nan}
