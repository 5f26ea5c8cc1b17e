"""Bragg-preserving sparsification of diffraction frames at acquisition speed.

The decision per pixel is the sx spot finder's (:func:`lossbound.diffraction.detector.significant_pixels`):
a pixel is kept exactly when it stands above its background and the 3x3 box sum of its
background-subtracted signal exceeds ``k`` times the box's noise; kept pixels are grown by a
square margin; every other valid pixel becomes the background model (rounded, or a Poisson
draw from it). What makes it fast:

- **The expensive model once per block of frames.** pyFAI's sigma-clipped shell statistics
  (``sigma_clip_ng`` on the integrator's CSR engine — the part that decides which pixels are
  background and how much a shell spreads) run on the first frame of every ``model_every``
  frames. The other frames of the block reuse its per-pixel model and cuts.
- **The level per frame.** Each frame's background level is refreshed per resolution shell
  from its own background pixels (under a 4-sigma cut at the level found so far, every other
  row, starting from the previous frame's level): the model is scaled by the shell's ratio of
  measured to modelled background, its noise by the square root of that ratio (Poisson).
  Beam-intensity changes from still to still therefore do not leak into the replaced pixels.
- **Compiled passes over rolling row buffers** (numba): the shell sums; the signal, the 3x3
  box sums and the cut, with each kept pixel grown by its margin where it is (kept pixels are
  ~1 %); the replacement. One byte per pixel (the kept mask) is all that is stored besides
  the frame.

With ``model_every = 1`` every frame gets its own sigma-clipped model, as the pure-numpy
version of this codec did (:func:`sparsify_reference`, kept for the tests).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numba
import numpy as np

REFRESH_SIGMA = 4.0  # the level refresh's cut, in sigmas of the background (see _sparsify_frame)

__all__ = ["BlockModel", "block_model", "sparsify_frames", "sparsify_reference"]


@dataclasses.dataclass(frozen=True)
class BlockModel:
    """The per-pixel background model of one block of frames (see the module docstring).

    Attributes
    ----------
    background : float32 ndarray
        Background per pixel (the shells' clipped mean, interpolated in q).
    cut : float32 ndarray
        ``k`` times the noise of each pixel's 3x3 box (valid pixels only).
    sigma : float32 ndarray
        The background's noise per pixel (at least Poisson); a pixel more than
        ``REFRESH_SIGMA`` of it above the level does not refresh the level.
    shells : int16 (or int32) ndarray
        Each pixel's resolution shell; ``n_shells`` in all.
    """

    background: np.ndarray
    cut: np.ndarray
    sigma: np.ndarray
    shells: np.ndarray
    n_shells: int


def block_model(ai: Any, frame: np.ndarray, masked: np.ndarray, *, k: float, npt: int, clip_sigma: float,
                clip_iterations: int, unit: str = "q_nm^-1") -> BlockModel:
    """The :class:`BlockModel` of ``frame``: pyFAI ``sigma_clip_ng`` through
    :func:`lossbound.diffraction.detector.shell_statistics`, then per pixel the background and
    noise as :func:`~lossbound.diffraction.detector.pixel_model` defines them (linear in q
    between shells, noise at least Poisson), in one compiled pass."""
    from lossbound.diffraction.detector import shell_statistics

    radial, mean, std, r = shell_statistics(ai, frame, masked, npt=npt, unit=unit, thres=clip_sigma,
                                            max_iter=clip_iterations)
    if len(radial) < 2 or not np.allclose(np.diff(radial), radial[1] - radial[0], rtol=1e-6, atol=0):
        raise ValueError("the background model expects evenly spaced shells from pyFAI")
    shape = frame.shape
    background, cut, sigma = (np.empty(shape, np.float32) for _ in range(3))
    shells = np.empty(shape, np.int16 if len(radial) < 2**15 else np.int32)  # fewer bytes to read per frame
    _pixel_model(np.ascontiguousarray(r, np.float64), float(radial[0]), float(radial[1] - radial[0]),
                 mean.astype(np.float64), std.astype(np.float64), masked.view(np.uint8), float(k),
                 background, cut, sigma, shells)
    return BlockModel(background, cut, sigma, shells, len(radial))


@numba.njit(nogil=True, cache=True)
def _pixel_model(r, r0, step, mean, std, masked, k, background, cut, sigma, shells
                 ):  # pragma: no cover - compiled; tested through sparsify_frames
    ny, nx = r.shape
    last = mean.shape[0] - 1
    var = np.empty((ny, nx), np.float32)  # float32: half the bytes to move, ~1e-7 relative on a cut
    for i in range(ny):
        for j in range(nx):
            t = (r[i, j] - r0) / step
            if t <= 0.0:
                b, s, shell = mean[0], std[0], 0
            elif t >= last:
                b, s, shell = mean[last], std[last], last
            else:  # np.interp between the two shells around the pixel
                lo = int(t)
                w = t - lo
                b = mean[lo] + w * (mean[lo + 1] - mean[lo])
                s = std[lo] + w * (std[lo + 1] - std[lo])
                shell = lo + 1 if w >= 0.5 else lo
            s = max(s, np.sqrt(max(b, 1.0)))  # a shell's spread is at least its counting noise
            background[i, j] = b
            sigma[i, j] = s
            shells[i, j] = shell
            var[i, j] = 0.0 if masked[i, j] else s * s
    # the noise of each 3x3 box (valid pixels only), as significant_pixels sums it
    hv = np.empty((ny, nx), np.float32)
    for i in range(ny):
        for j in range(nx):
            h = var[i, j]
            if j > 0:
                h += var[i, j - 1]
            if j + 1 < nx:
                h += var[i, j + 1]
            hv[i, j] = h
    for i in range(ny):
        for j in range(nx):
            box = hv[i, j]
            if i > 0:
                box += hv[i - 1, j]
            if i + 1 < ny:
                box += hv[i + 1, j]
            cut[i, j] = k * np.sqrt(max(box, 1e-12))


def sparsify_frames(frames: np.ndarray, masked: np.ndarray, ai: Any, *, k: float, margin: int, noise: bool,
                    npt: int, clip_sigma: float, clip_iterations: int, model_every: int, seed: int = 0
                    ) -> np.ndarray:
    """Sparsify a stack of frames (``(n, ny, nx)`` integers) in place and return it.

    ``masked`` (bool, the stack's shape or one frame's) marks pixels that are not
    measurements: never replaced, never used. See the module docstring for the rest.
    """
    if model_every < 1:
        raise ValueError(f"model_every must be >= 1, got {model_every!r}")
    info = np.iinfo(frames.dtype)
    if masked.shape == frames.shape[1:]:
        masked = masked[None]  # one mask, every frame (index 0 below)
    mask8 = masked.view(np.uint8)
    shared = masked.shape[0] == 1
    model = None
    ratio = np.ones(1, np.float32)
    for i in range(frames.shape[0]):
        fresh = i % int(model_every) == 0
        if fresh:
            model = block_model(ai, frames[i], masked[0 if shared else i], k=k, npt=npt, clip_sigma=clip_sigma,
                                clip_iterations=clip_iterations)
            ratio = np.ones(model.n_shells, np.float32)  # each frame's refresh starts from the last one's level
        _sparsify_frame(frames[i], mask8[0 if shared else i], model.background, model.cut, model.sigma, REFRESH_SIGMA,
                        model.shells, ratio, not fresh, int(margin), bool(noise), np.int64(seed) * 1_000_003 + i,
                        info.min, info.max)
    return frames


@numba.njit(nogil=True, cache=True, inline="always")
def _shell_sums(frame, masked, bg, sigma, shells, ratio, spread, acc, acc_model
                ):  # pragma: no cover - compiled; tested through sparsify_frames
    """Add one row's pixels under the cut (``bg * ratio + sigma * spread`` per shell) to the
    per-shell sums of counts and of the model."""
    # neighbouring pixels share a shell: the sums run in registers and are flushed when the
    # shell changes (a store-load chain through acc[s] for every pixel is much slower)
    current = shells[0]
    counts = 0
    model = 0.0
    for j in range(frame.shape[0]):
        s = shells[j]
        if s != current:
            acc[current] += counts
            acc_model[current] += model
            current = s
            counts = 0
            model = 0.0
        if masked[j] == 0 and frame[j] <= bg[j] * ratio[s] + sigma[j] * spread[s]:
            counts += frame[j]
            model += bg[j]
    acc[current] += counts
    acc_model[current] += model


@numba.njit(nogil=True, cache=True)
def _sparsify_frame(frame, masked, bg, cut, sigma, refresh_sigma, shells, ratio, refresh, margin, noise, seed, lo, hi
                    ):  # pragma: no cover - compiled; tested through sparsify_frames
    # Memory traffic sets the speed: the frame is read by rows, intermediate rows live in small
    # rolling buffers, and one byte per pixel (the kept mask) is stored, sparsely.
    ny, nx = frame.shape
    # 1. the frame's background level per shell: measured / modelled over the pixels under a
    # cut at the level found so far. The cut (4 sigma, one-sided) reproduces pyFAI's
    # two-sided iterated 3-sigma clipped mean on measured stills to 0.1 %; a 3-sigma one-sided
    # cut would take the Poisson tail (~1.4 % of the mean at a few counts) with it. From every
    # other row (half the cost; the level of a shell of ~5000 pixels at 3 counts is then known
    # to ~1 %, 0.03 counts, against the 0.5-count rounding of the written model), again while its
    # total over the frame moves by more than 0.1 % (a frame much brighter than the model's loses its
    # upper tail to the first cuts), four times at most. Starting from the previous frame's
    # level, a steady stream needs one or two sweeps.
    n_shells = ratio.shape[0]  # ratio: the level to start from (the previous frame's), updated in place
    if refresh:
        acc = np.zeros(n_shells)
        acc_model = np.zeros(n_shells)
        for _ in range(4):
            acc[:] = 0.0
            acc_model[:] = 0.0
            spread = (refresh_sigma * np.sqrt(ratio)).astype(np.float32)
            for i in range(0, ny, 2):
                _shell_sums(frame[i], masked[i], bg[i], sigma[i], shells[i], ratio, spread, acc, acc_model)
            # the frame's total level moved by (signed: a flux change adds up over the shells,
            # the shells' counting noise does not)
            moved = 0.0
            for s in range(n_shells):
                if acc_model[s] > 0.0:
                    new = acc[s] / acc_model[s]
                    moved += (new - ratio[s]) * acc_model[s]
                    ratio[s] = new
            if abs(moved) < 1e-3 * max(acc.sum(), 1.0):
                break
    root = np.sqrt(ratio)  # the noise scales as the square root of the level (Poisson)
    # 2. candidates: signal > 0 and its 3x3 box sum above the cut; signal and row sums of three
    # rows at a time
    signal = np.zeros((3, nx), np.float32)
    rows = np.zeros((3, nx), np.float32)
    kept = np.zeros(nx, np.uint8)
    keep = np.zeros((ny, nx), np.uint8)
    for i in range(-1, ny):
        nxt = i + 1
        if nxt < ny:  # the next row's signal and row sums
            sl = nxt % 3
            for j in range(nx):  # branch-free: masked pixels carry no signal
                v = np.float32(frame[nxt, j]) - bg[nxt, j] * ratio[shells[nxt, j]]
                signal[sl, j] = v * np.float32(1 - masked[nxt, j])
            rows[sl, 0] = signal[sl, 0] + (signal[sl, 1] if nx > 1 else np.float32(0.0))
            for j in range(1, nx - 1):
                rows[sl, j] = signal[sl, j - 1] + signal[sl, j] + signal[sl, j + 1]
            if nx > 1:
                rows[sl, nx - 1] = signal[sl, nx - 2] + signal[sl, nx - 1]
        if i < 0:
            continue
        c = i % 3
        u = (i + 2) % 3
        d = nxt % 3
        w_up = np.float32(1.0 if i > 0 else 0.0)
        w_down = np.float32(1.0 if nxt < ny else 0.0)
        found = 0
        for j in range(nx):  # no branch: the compiler vectorises it
            box = rows[c, j] + w_up * rows[u, j] + w_down * rows[d, j]
            hit = (signal[c, j] > 0) & (box > cut[i, j] * root[shells[i, j]])
            kept[j] = hit
            found += hit
        if found:  # kept pixels are few (~1 %): each grown by its square margin where it is
            top, bottom = max(i - margin, 0), min(i + margin + 1, ny)
            for j in range(nx):
                if kept[j]:
                    for jj in range(max(j - margin, 0), min(j + margin + 1, nx)):
                        for ii in range(top, bottom):
                            keep[ii, jj] = 1
    # 3. every other valid pixel becomes the model: rounded, or a seeded Poisson draw
    if noise:
        np.random.seed(seed)
        for i in range(ny):
            for j in range(nx):
                if keep[i, j] == 0 and masked[i, j] == 0:
                    frame[i, j] = min(max(np.random.poisson(max(bg[i, j] * ratio[shells[i, j]], 0.0)), lo), hi)
    else:
        top = np.float64(hi)  # the model is >= 0, so only the dtype's top can be exceeded (float64: exact)
        for i in range(ny):
            for j in range(nx):
                value = min(np.rint(max(bg[i, j] * ratio[shells[i, j]], np.float32(0.0))), top)
                if (keep[i, j] | masked[i, j]) == 0:
                    frame[i, j] = np.int64(value)
    return frame


def sparsify_reference(data: np.ndarray, *, k_sigma: float, margin: int, noise: bool, npt: int, clip_sigma: float,
                       clip_iterations: int, masked: np.ndarray, geometry: Mapping[str, Any], seed: int = 0
                       ) -> np.ndarray:
    """The codec's first version in plain numpy (a sigma-clipped model per frame, no refresh):
    the reference the compiled one is compared with."""
    from scipy import ndimage

    from lossbound.diffraction.detector import background_model, integrator_for, significant_pixels

    frames = np.array(data, copy=True).reshape((-1,) + data.shape[-2:])
    masked_frames = np.broadcast_to(masked, data.shape).reshape(frames.shape)
    ai = integrator_for(geometry, frames.shape[1:])
    grow = np.ones((2 * int(margin) + 1,) * 2, bool)
    info = np.iinfo(frames.dtype)
    for i, frame in enumerate(frames):
        bg, sigma = background_model(ai, frame, masked_frames[i], npt=npt, thres=clip_sigma, max_iter=clip_iterations)
        keep, _ = significant_pixels(frame, bg, sigma, masked_frames[i], k=float(k_sigma))
        if margin > 0:
            keep = ndimage.binary_dilation(keep, structure=grow)
        model = np.random.default_rng([int(seed), i]).poisson(np.maximum(bg, 0)) if noise else np.rint(bg)
        replace = ~keep & ~masked_frames[i]
        frame[replace] = np.clip(model, info.min, info.max)[replace].astype(frames.dtype)
    return frames.reshape(data.shape)
