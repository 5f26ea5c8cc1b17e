"""Phase segmentation by global thresholds: does compression change what a user would segment?

Raw and compressed reconstructions are segmented with the *same* thresholds (multi-Otsu,
found once on the raw reconstruction), so any label change is caused by the compression and
not by the threshold search reacting to slightly different histograms.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from skimage.filters import threshold_multiotsu

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, check_mask_param, mask_for, reject_unknown, result_array
from lossbound.evaluators.image import check_same_shape, slab_bounds
from lossbound.core.errors import ConfigError

__all__ = ["phase_labels", "dice", "phase_fractions", "Segmentation"]


def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got {thresholds!r}")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError(f"thresholds must be finite and strictly increasing, got {t.tolist()}")
    if t.size > 254:
        raise ValueError(f"at most 254 thresholds (uint8 labels), got {t.size}")
    return t


def phase_labels(image: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Label each pixel with the index of its intensity interval (``np.digitize``).

    Parameters
    ----------
    image : ndarray
        Any shape.
    thresholds : sequence of float
        Strictly increasing; ``k`` thresholds give labels ``0 .. k``, label ``i`` meaning
        ``thresholds[i-1] <= value < thresholds[i]``.

    Returns
    -------
    labels : ndarray of uint8
        Same shape as ``image``. NaN pixels get the top label (``np.digitize`` convention).

    Raises
    ------
    ValueError
        If ``thresholds`` is empty, not finite or not strictly increasing.
    """
    t = _check_thresholds(thresholds)
    image = np.asarray(image)
    out = np.empty(image.shape, dtype=np.uint8)
    # np.digitize returns intp (8 bytes/voxel); labelling slab-wise bounds that temporary.
    flat_in = image.reshape(image.shape or (1,))
    flat_out = out.reshape(out.shape or (1,))
    for sl in slab_bounds(flat_in.shape):
        flat_out[sl] = np.digitize(flat_in[sl], t)
    return out


def dice(a: np.ndarray, b: np.ndarray, *, label: int) -> float:
    """Dice coefficient ``2 |A & B| / (|A| + |B|)`` of the pixels labelled ``label``.

    Parameters
    ----------
    a, b : ndarray of int
        Label images of the same shape.
    label : int
        Phase to compare.

    Returns
    -------
    dice : float
        In [0, 1]; 1.0 when the phase is absent from both (they agree perfectly).

    Raises
    ------
    ValueError
        On a shape mismatch.
    """
    check_same_shape(a, b, what="label image")
    in_a = np.asarray(a) == label
    in_b = np.asarray(b) == label
    total = int(np.count_nonzero(in_a)) + int(np.count_nonzero(in_b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(in_a & in_b)) / total


def phase_fractions(labels: np.ndarray, *, n_phases: int) -> np.ndarray:
    """Volume fraction of each phase.

    Parameters
    ----------
    labels : ndarray of int
        Labels in ``0 .. n_phases-1``.
    n_phases : int
        Number of phases (length of the result, even if some phases are absent).

    Returns
    -------
    fractions : (n_phases,) ndarray of float64
        Summing to 1.

    Raises
    ------
    ValueError
        If ``labels`` is empty or holds labels outside ``0 .. n_phases-1``.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("phase_fractions of an empty label image")
    if n_phases < 1:
        raise ValueError(f"n_phases must be >= 1, got {n_phases}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_phases:
        raise ValueError(f"labels must lie in 0..{n_phases - 1}, found {lo}..{hi}")
    counts = np.bincount(labels.ravel(), minlength=n_phases)
    return counts / labels.size


@EVALUATORS.register("segmentation")
class Segmentation(Evaluator):
    """Agreement of threshold segmentations of the raw and compressed results.

    Parameters
    ----------
    key : str
        Result array to segment (default ``'recon'``).
    n_phases : int
        Number of phases for multi-Otsu (default 3); ignored when ``thresholds`` is given.
    thresholds : list of float, optional
        Explicit, strictly increasing thresholds (``n_phases = len(thresholds) + 1``).
    mask : {None, 'circle'}
        ``'circle'`` segments and scores only the reconstruction circle (default None).

    Output keys: ``seg_dice_phase{i}`` per phase, ``seg_dice_min``, ``seg_dice_mean``, and
    ``seg_phase_fraction_change_max`` = max over phases of
    ``|fraction_compressed - fraction_raw|`` (absolute volume fraction, not relative).
    """

    name = "segmentation"

    def __init__(
        self,
        *,
        key: str = "recon",
        n_phases: int = 3,
        thresholds: Sequence[float] | None = None,
        mask: str | None = None,
        **extra: Any,
    ) -> None:
        reject_unknown(self.name, extra)
        check_mask_param(self.name, mask)
        if thresholds is not None:
            try:
                thresholds = _check_thresholds(thresholds).tolist()
            except ValueError as exc:
                raise ConfigError(f"evaluator 'segmentation': {exc}") from None
            n_phases = len(thresholds) + 1
        elif int(n_phases) < 2:
            raise ConfigError(f"evaluator 'segmentation': n_phases must be >= 2, got {n_phases}")
        super().__init__(key=key, n_phases=int(n_phases), thresholds=thresholds, mask=mask)
        self.key = key
        self.n_phases = int(n_phases)
        self.thresholds = thresholds
        self.mask = mask

    def _values(self, image: np.ndarray, raw: Outcome) -> np.ndarray:
        mask = mask_for(self.mask, image.shape, raw, evaluator=self.name)
        return image if mask is None else image[..., mask]

    def reference(self, raw: Outcome) -> dict[str, Any]:
        values = self._values(result_array(raw, self.key, self.name), raw)
        if self.thresholds is not None:
            thresholds = list(self.thresholds)
        else:
            finite = values[np.isfinite(values)]
            # threshold_multiotsu accepts any shape; it only uses the 256-bin histogram.
            thresholds = threshold_multiotsu(finite, classes=self.n_phases).tolist()
        fractions = phase_fractions(phase_labels(values, thresholds), n_phases=self.n_phases)
        return {"thresholds": thresholds, "fractions_raw": fractions.tolist()}

    def compare(
        self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]
    ) -> dict[str, float]:
        thresholds = reference["thresholds"]
        ref = result_array(raw, self.key, self.name)
        test = result_array(compressed, self.key, self.name)
        check_same_shape(ref, test, what=f"result {self.key!r}")
        ref_labels = phase_labels(self._values(ref, raw), thresholds)
        test_labels = phase_labels(self._values(test, raw), thresholds)
        dices = [dice(ref_labels, test_labels, label=i) for i in range(self.n_phases)]
        change = np.abs(
            phase_fractions(test_labels, n_phases=self.n_phases)
            - phase_fractions(ref_labels, n_phases=self.n_phases)
        )
        out = {f"seg_dice_phase{i}": float(d) for i, d in enumerate(dices)}
        out["seg_dice_min"] = float(min(dices))
        out["seg_dice_mean"] = float(np.mean(dices))
        out["seg_phase_fraction_change_max"] = float(change.max())
        return out
