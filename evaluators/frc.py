"""Fourier ring correlation (FRC): spatial resolution of a reconstruction.

Half-set FRC correlates two reconstructions from disjoint halves of the projections (even and
odd angles): their signal is common and their noise independent, so the frequency at which
the correlation falls below a threshold is the resolution the data support.  Compression
that destroys fine detail, or adds noise, moves that crossing to lower frequency.

References
----------
.. [1] M. van Heel, M. Schatz, "Fourier shell correlation threshold criteria",
       J. Struct. Biol. 151, 250-262 (2005).
.. [2] P. B. Rosenthal, R. Henderson, "Optimal determination of particle orientation,
       absolute hand, and contrast loss in single-particle electron cryomicroscopy",
       J. Mol. Biol. 333, 721-745 (2003).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np
from scipy.signal.windows import tukey

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, reject_unknown, result_array
from lossbound.evaluators.image import check_same_shape
from lossbound.core.errors import ConfigError

__all__ = ["frc_curve", "frc_threshold", "frc_resolution", "FRCResolution", "FRC"]

NYQUIST = 0.5  # cycles/pixel
# Taper fraction of the default Tukey window: 12.5 % of each edge, leaving most pixels at
# full weight while removing the periodic-boundary jump that puts a bright cross in the FFT.
_DEFAULT_TUKEY_ALPHA = 0.25


class FRCResolution(NamedTuple):
    """Result of :func:`frc_resolution`."""

    frequency: float
    """Threshold crossing in cycles/pixel (0.5 when it never crosses)."""
    resolution_px: float
    """``1 / frequency``: the resolved period in pixels (2 when it never crosses)."""
    crossed: bool
    """False when the FRC stays above the threshold up to Nyquist (resolution is then a
    bound set by the pixel size, not a measurement)."""


def _window(shape: tuple[int, int], apodize: bool | float) -> np.ndarray | None:
    if apodize is False or apodize is None:
        return None
    alpha = _DEFAULT_TUKEY_ALPHA if apodize is True else float(apodize)
    if not 0 < alpha <= 1:
        raise ValueError(f"apodize must be a bool or a Tukey fraction in (0, 1], got {apodize}")
    ny, nx = shape
    return np.outer(tukey(ny, alpha), tukey(nx, alpha))


def frc_curve(
    a: np.ndarray,
    b: np.ndarray,
    *,
    ring_width: float = 1.0,
    apodize: bool | float = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images, or of two stacks of 2-D slices.

    ``FRC(r) = Re sum_ring F_a F_b* / sqrt(sum_ring |F_a|^2 * sum_ring |F_b|^2)``.
    For stacks (3-D input, slices along axis 0) the three ring sums are accumulated over
    all slices before dividing, i.e. one FRC of the whole stack with the statistics of
    ``n_slices`` times more pixels per ring (not a mean of noisy per-slice curves).

    Parameters
    ----------
    a, b : ndarray
        2-D images (rows, columns) or 3-D stacks (slices, rows, columns) of the same shape.
    ring_width : float, optional
        Ring width in Fourier pixels of the smaller image side (``ring_width / min(rows,
        cols)`` cycles/pixel). Wider rings give a smoother but coarser curve.
    apodize : bool or float, optional
        Multiply each (mean-subtracted) slice by a separable Tukey window before the FFT;
        a float sets the tapered fraction (default True = 0.25).  Without it the periodic
        continuation's edge jumps add a correlated cross through the spectrum, which keeps
        the FRC artificially high along the axes.

    Returns
    -------
    freq : (n_rings,) ndarray
        Ring centres in cycles/pixel, from 0 up to the Nyquist frequency 0.5.
    frc : (n_rings,) ndarray
        Correlation per ring in [-1, 1]; NaN where a ring has no power.
    n_pixels : (n_rings,) ndarray of int
        Fourier pixels per ring, summed over slices (the ``n`` of the half-bit criterion).

    Raises
    ------
    ValueError
        On a shape mismatch, input that is not 2-D/3-D, images smaller than 4x4, or a
        non-positive ``ring_width``.
    """
    check_same_shape(a, b)
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim not in (2, 3):
        raise ValueError(f"frc_curve expects 2-D images or 3-D stacks, got {a.ndim}-D input")
    if not ring_width > 0:
        raise ValueError(f"ring_width must be positive, got {ring_width}")
    ny, nx = a.shape[-2:]
    if min(ny, nx) < 4:
        raise ValueError(f"frc_curve needs images of at least 4x4 pixels, got {(ny, nx)}")
    stack_a = a.reshape((-1, ny, nx))
    stack_b = b.reshape((-1, ny, nx))

    # Ring index of every rfft2 pixel.  rfft2 stores half the plane; the other half is the
    # complex conjugate (real input), which contributes identical values to all three ring
    # sums, so interior columns get weight 2 and the self-conjugate columns weight 1.
    step = ring_width / min(ny, nx)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    ring = np.rint(np.hypot(fy, fx) / step).astype(np.intp)
    n_rings = int(np.floor(NYQUIST / step + 1e-9)) + 1
    weight = np.full(ring.shape, 2.0)
    weight[:, 0] = 1.0
    if nx % 2 == 0:
        weight[:, -1] = 1.0
    inside = ring < n_rings  # drop the corners beyond Nyquist
    ring, weight = ring[inside], weight[inside]

    window = _window((ny, nx), apodize)
    num = np.zeros(n_rings)
    pow_a = np.zeros(n_rings)
    pow_b = np.zeros(n_rings)
    for sa, sb in zip(stack_a, stack_b):
        spectra = []
        for s in (sa, sb):
            s = np.asarray(s, dtype=np.float64)
            # The mean only feeds the zero-frequency ring; removing it before windowing
            # stops the window's own spectrum leaking into the low rings.
            s = s - s.mean()
            if window is not None:
                s = s * window
            spectra.append(np.fft.rfft2(s)[inside])
        fa, fb = spectra
        num += np.bincount(ring, weights=weight * (fa * fb.conj()).real, minlength=n_rings)
        pow_a += np.bincount(ring, weights=weight * np.abs(fa) ** 2, minlength=n_rings)
        pow_b += np.bincount(ring, weights=weight * np.abs(fb) ** 2, minlength=n_rings)

    counts = np.bincount(ring, weights=weight, minlength=n_rings).astype(np.int64)
    denom = np.sqrt(pow_a * pow_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = np.where(denom > 0, num / denom, np.nan)
    freq = np.arange(n_rings) * step
    return freq, frc, counts * stack_a.shape[0]


def frc_threshold(
    threshold: float | str, n_pixels: np.ndarray | None = None, *, n_rings: int | None = None
) -> np.ndarray | float:
    """Threshold value(s) for :func:`frc_resolution`.

    A number is returned as is.  ``'half-bit'`` and ``'one-bit'`` are the information
    criteria of van Heel & Schatz [1]_, which depend on the pixels per ring ``n``:
    ``(0.2071 + 1.9102/sqrt(n)) / (1.2071 + 0.9102/sqrt(n))`` and
    ``(0.5 + 2.4142/sqrt(n)) / (1.5 + 1.4142/sqrt(n))``.
    """
    if isinstance(threshold, str):
        if n_pixels is None:
            raise ValueError(f"threshold {threshold!r} needs n_pixels (from frc_curve)")
        n = np.asarray(n_pixels, dtype=np.float64)
        with np.errstate(divide="ignore"):
            inv = 1 / np.sqrt(n)
        if threshold == "half-bit":
            return (0.2071 + 1.9102 * inv) / (1.2071 + 0.9102 * inv)
        if threshold == "one-bit":
            return (0.5 + 2.4142 * inv) / (1.5 + 1.4142 * inv)
        raise ValueError(
            f"threshold must be a number, 'half-bit' or 'one-bit', got {threshold!r}"
        )
    value = float(threshold)
    if not -1 < value < 1:
        raise ValueError(f"a numeric FRC threshold must lie in (-1, 1), got {value}")
    return value


def frc_resolution(
    freq: np.ndarray,
    frc: np.ndarray,
    *,
    threshold: float | str = 1 / 7,
    n_pixels: np.ndarray | None = None,
) -> FRCResolution:
    """Resolution from an FRC curve: its first crossing below ``threshold``.

    Parameters
    ----------
    freq, frc : (n_rings,) ndarray
        Output of :func:`frc_curve`.
    threshold : float or {'half-bit', 'one-bit'}, optional
        Default 1/7 (0.143): the Rosenthal & Henderson criterion [2]_ for the FRC of two
        *half-set* reconstructions; it corresponds to a correlation of 0.5 between the
        full-data reconstruction and the (unknown) noise-free object, because
        ``FRC_full = 2 FRC_half / (1 + FRC_half)`` and ``sqrt(FRC_full) = 0.5``.  The
        information criteria (van Heel & Schatz [1]_) need ``n_pixels``.
    n_pixels : (n_rings,) ndarray, optional
        Pixels per ring, from :func:`frc_curve`; required for the bit criteria.

    Returns
    -------
    FRCResolution
        ``(frequency [cycles/pixel], resolution_px = 1/frequency, crossed)``.  The crossing
        is linearly interpolated between the last ring above and the first ring below the
        threshold.  Rings at zero frequency (the mean) and empty (NaN) rings are ignored.
        If the FRC never falls below the threshold the Nyquist frequency 0.5 (2 px) is
        returned with ``crossed=False``; if it is already below at the first ring, that
        ring's frequency is returned (resolution no better than the image size).

    Raises
    ------
    ValueError
        If ``freq`` and ``frc`` differ in shape, or for an invalid threshold.
    """
    freq = np.asarray(freq, dtype=np.float64)
    frc = np.asarray(frc, dtype=np.float64)
    if freq.shape != frc.shape or freq.ndim != 1:
        raise ValueError(
            f"freq and frc must be 1-D arrays of equal length, got {freq.shape} and {frc.shape}"
        )
    if n_pixels is not None and np.shape(n_pixels) != freq.shape:
        raise ValueError(f"n_pixels shape {np.shape(n_pixels)} differs from freq {freq.shape}")
    thr = np.broadcast_to(frc_threshold(threshold, n_pixels), freq.shape)
    valid = np.flatnonzero((freq > 0) & np.isfinite(frc) & np.isfinite(thr))
    margin = frc[valid] - thr[valid]
    below = np.flatnonzero(margin < 0)
    if below.size == 0:
        return FRCResolution(NYQUIST, 1 / NYQUIST, False)
    j = below[0]
    if j == 0:
        f = freq[valid[0]]
    else:
        # Linear interpolation of (frc - threshold) between the two bracketing rings.
        f0, f1 = freq[valid[j - 1]], freq[valid[j]]
        m0, m1 = margin[j - 1], margin[j]
        f = f0 + (f1 - f0) * m0 / (m0 - m1)
    return FRCResolution(float(f), float(1 / f), True)


@EVALUATORS.register("frc")
class FRC(Evaluator):
    """Half-set FRC resolution of the raw and compressed data, and their agreement.

    Parameters
    ----------
    half_keys : pair of str
        Result arrays reconstructed from disjoint projection halves
        (default ``('recon_even', 'recon_odd')``).
    threshold : float or {'half-bit', 'one-bit'}
        Resolution criterion (default 1/7, see :func:`frc_resolution`).
    key : str
        Full reconstruction, for the raw-vs-compressed agreement band (default ``'recon'``).
    agreement_threshold : float
        FRC(raw recon, compressed recon) level defining that band (default 0.5).
    ring_width, apodize
        Passed to :func:`frc_curve`.

    Output keys
    -----------
    ``frc_resolution_raw_px``, ``frc_resolution_px`` : half-set resolution in pixels of the
    raw and the compressed data (2 px = Nyquist-limited, i.e. the curve never crossed).
    ``frc_resolution_change`` : ``(compressed - raw) / raw``; positive = worse.
    ``frc_raw_vs_compressed_freq`` : cycles/pixel where FRC(raw recon, compressed recon)
    first falls below ``agreement_threshold`` (0.5 = agrees up to Nyquist).
    """

    name = "frc"

    def __init__(
        self,
        *,
        half_keys: tuple[str, str] | list[str] = ("recon_even", "recon_odd"),
        threshold: float | str = 1 / 7,
        key: str = "recon",
        agreement_threshold: float = 0.5,
        ring_width: float = 1.0,
        apodize: bool | float = True,
        **extra: Any,
    ) -> None:
        reject_unknown(self.name, extra)
        half_keys = tuple(half_keys)
        if len(half_keys) != 2:
            raise ConfigError(f"evaluator 'frc': half_keys must name 2 results, got {half_keys!r}")
        try:
            frc_threshold(threshold, np.ones(1))
            frc_threshold(agreement_threshold)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"evaluator 'frc': {exc}") from None
        if not isinstance(threshold, str):
            threshold = float(threshold)
        super().__init__(
            half_keys=half_keys,
            threshold=threshold,
            key=key,
            agreement_threshold=float(agreement_threshold),
            ring_width=float(ring_width),
            apodize=apodize,
        )
        self.half_keys = half_keys
        self.threshold = threshold
        self.key = key
        self.agreement_threshold = float(agreement_threshold)
        self.ring_width = float(ring_width)
        self.apodize = apodize

    def _curve(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return frc_curve(a, b, ring_width=self.ring_width, apodize=self.apodize)

    def _half_set_resolution(self, outcome: Outcome) -> FRCResolution:
        even, odd = (result_array(outcome, k, self.name) for k in self.half_keys)
        freq, frc, n = self._curve(even, odd)
        return frc_resolution(freq, frc, threshold=self.threshold, n_pixels=n)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        res = self._half_set_resolution(raw)
        return {
            "resolution_px": res.resolution_px,
            "frequency": res.frequency,
            "crossed": res.crossed,
        }

    def compare(
        self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]
    ) -> dict[str, float]:
        raw_px = float(reference["resolution_px"])
        comp = self._half_set_resolution(compressed)
        freq, frc, n = self._curve(
            result_array(raw, self.key, self.name),
            result_array(compressed, self.key, self.name),
        )
        agree = frc_resolution(freq, frc, threshold=self.agreement_threshold, n_pixels=n)
        return {
            "frc_resolution_raw_px": raw_px,
            "frc_resolution_px": comp.resolution_px,
            "frc_resolution_change": (comp.resolution_px - raw_px) / raw_px,
            "frc_raw_vs_compressed_freq": agree.frequency,
        }
