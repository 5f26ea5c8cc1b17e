"""Pixel masks shared by pipelines and evaluators (ground floor: numpy only)."""
from __future__ import annotations

import numpy as np

__all__ = ["broadcast_mask", "circle_mask"]


def broadcast_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Broadcast a boolean mask (e.g. one 2-D mask for a stack) to ``shape`` without copying."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"mask shape {mask.shape} cannot be broadcast to the image shape {shape}"
        ) from None



def circle_mask(shape: tuple[int, ...], *, ratio: float = 1.0) -> np.ndarray:
    """Boolean mask of the reconstruction circle over the last two axes of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Image or stack shape; only the last two entries (rows, columns) are used.
    ratio : float, optional
        Radius as a fraction of half the smaller image side (1.0 = inscribed circle).

    Returns
    -------
    mask : (rows, columns) ndarray of bool
        True inside the circle; broadcasts against a stack of slices.

    Notes
    -----
    Parallel-beam FBP only has full angular coverage inside the inscribed circle; outside
    it the values depend on the backend (zeros, or unconstrained streaks), so including
    them would make metrics compare backend conventions rather than compression damage.
    """
    if len(shape) < 2:
        raise ValueError(f"circle_mask needs at least 2-D shape, got {tuple(shape)}")
    if not 0 < ratio <= np.sqrt(2):
        raise ValueError(f"ratio must be in (0, sqrt(2)], got {ratio}")
    ny, nx = shape[-2:]
    y = np.arange(ny) - (ny - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    radius = ratio * min(ny, nx) / 2
    return (y[:, None] ** 2 + x[None, :] ** 2) <= radius**2
