"""Bragg spots found on raw and compressed stills, compared frame by frame and over the set.

Pure functions first; the evaluator reads a result holding every frame's spots as
concatenated arrays (``spot_frame``, ``spot_y``, ``spot_x``, ``spot_intensity``,
``spot_sigma``) plus ``n_spots`` and ``hit`` per frame (see :mod:`lossbound.pipelines.sx.spots`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy.spatial import cKDTree

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, reject_unknown, result_array

__all__ = ["intensity_agreement", "match_spots"]


def match_spots(reference: np.ndarray, test: np.ndarray, *, tolerance: float = 2.0) -> dict[str, Any]:
    """One-to-one matching of spot centroids within ``tolerance`` pixels (closest pairs first).

    Parameters
    ----------
    reference, test : ndarray, shape (n, 2) and (m, 2)
        ``(y, x)`` centroids.
    tolerance : float
        Largest centroid distance of a match, in pixels.

    Returns
    -------
    dict
        ``pairs`` (k, 2) indices into reference and test, ``recall`` (matched / reference),
        ``precision`` (matched / test), ``f1`` and ``rmsd`` (pixels, over the matches); recall
        and precision are 1 for an empty side that should be empty, NaN-free.
    """
    reference = np.asarray(reference, np.float64).reshape(-1, 2)
    test = np.asarray(test, np.float64).reshape(-1, 2)
    pairs: list[tuple[int, int]] = []
    if len(reference) and len(test):
        dist, idx = cKDTree(test).query(reference, k=min(4, len(test)), distance_upper_bound=tolerance)
        dist, idx = dist.reshape(len(reference), -1), idx.reshape(len(reference), -1)
        candidates = sorted((d, i, j) for i in range(len(reference)) for d, j in zip(dist[i], idx[i]) if np.isfinite(d))
        used_r, used_t = set(), set()
        for _, i, j in candidates:
            if i not in used_r and j not in used_t:
                used_r.add(i)
                used_t.add(j)
                pairs.append((i, j))
    k = len(pairs)
    recall = k / len(reference) if len(reference) else 1.0
    precision = k / len(test) if len(test) else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    p = np.array(pairs, dtype=np.intp).reshape(-1, 2)
    rmsd = float(np.sqrt(np.mean(np.sum((reference[p[:, 0]] - test[p[:, 1]]) ** 2, axis=1)))) if k else math.nan
    return {"pairs": p, "recall": recall, "precision": precision, "f1": f1, "rmsd": rmsd}


def intensity_agreement(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Pearson correlation and R-factor ``sum |I_t - I_r| / sum |I_r|`` of matched intensities
    (NaN with fewer than 3 pairs)."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if reference.size < 3:
        return math.nan, math.nan
    cc = float(np.corrcoef(reference, test)[0, 1]) if reference.std() > 0 and test.std() > 0 else math.nan
    denom = float(np.sum(np.abs(reference)))
    return cc, float(np.sum(np.abs(test - reference)) / denom) if denom > 0 else math.nan


@EVALUATORS.register("spots")
class SpotAgreement(Evaluator):
    """Spot finding and hit calls on compressed stills against the raw ones.

    Parameters
    ----------
    tolerance_px : float
        Largest centroid distance of a matched spot (default 2 pixels).
    weak_i_over_sigma : float
        Spots below this raw I/sigma are "weak" (default 3): lossy codecs destroy those first.

    Output keys: ``hit_agreement`` (fraction of frames with the same hit call),
    ``spot_recall``, ``spot_precision``, ``spot_f1`` (over all frames), ``spot_centroid_rmsd``
    (pixels) and ``spot_centroid_rmsd_rel`` (over the raw indexing's positional RMSD, when the
    result has ``rmsd_px``), ``spot_cc_weak`` / ``spot_cc_strong`` and ``spot_r_weak`` / ``spot_r_strong``
    (intensities of matched spots); per frame (arrays, NaN for frames that are not hits on the
    raw data): ``spot_f1_frames``, ``spot_centroid_rmsd_frames`` and
    ``spot_centroid_shift_frames`` (the median centroid shift of the matched spots, pixels:
    linear in an error's amplitude, where the RMSD is dominated by the few spots whose pixel
    set changes and grows as its square root; inf when no spot of a raw hit is matched).
    """

    name = "spots"
    scaling = {"spot_cc_weak": 2, "spot_cc_strong": 2}

    def __init__(self, *, tolerance_px: float = 2.0, weak_i_over_sigma: float = 3.0, **extra: Any) -> None:
        reject_unknown(self.name, extra)
        super().__init__(tolerance_px=tolerance_px, weak_i_over_sigma=weak_i_over_sigma)
        self.tolerance, self.weak = float(tolerance_px), float(weak_i_over_sigma)

    def _spots(self, outcome: Outcome) -> dict[str, np.ndarray]:
        keys = ("spot_frame", "spot_y", "spot_x", "spot_intensity", "spot_sigma", "hit")
        return {k: result_array(outcome, k, self.name) for k in keys}

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        r, c = self._spots(raw), self._spots(compressed)
        n_frames = int(r["hit"].size)
        f1_frames, rmsd_frames, shift_frames = (np.full(n_frames, np.nan) for _ in range(3))
        n_ref = n_test = matched = 0
        sq: list[np.ndarray] = []
        ir, ic, weak = [], [], []
        for f in np.union1d(np.unique(r["spot_frame"]), np.unique(c["spot_frame"])):
            sr, sc = r["spot_frame"] == f, c["spot_frame"] == f
            ref_yx = np.column_stack([r["spot_y"][sr], r["spot_x"][sr]])
            test_yx = np.column_stack([c["spot_y"][sc], c["spot_x"][sc]])
            m = match_spots(ref_yx, test_yx, tolerance=self.tolerance)
            n_ref, n_test, matched = n_ref + len(ref_yx), n_test + len(test_yx), matched + len(m["pairs"])
            p = m["pairs"]
            d2 = np.sum((ref_yx[p[:, 0]] - test_yx[p[:, 1]]) ** 2, axis=1)
            if 0 <= f < n_frames and r["hit"][f]:  # per frame: the raw hits (triage judges the others)
                f1_frames[f] = m["f1"]
                rmsd_frames[f] = float(np.sqrt(d2.mean())) if d2.size else math.inf
                shift_frames[f] = float(np.median(np.sqrt(d2))) if d2.size else math.inf
            sq.append(d2)
            ir.append(r["spot_intensity"][sr][p[:, 0]])
            ic.append(c["spot_intensity"][sc][p[:, 1]])
            weak.append(r["spot_intensity"][sr][p[:, 0]] / r["spot_sigma"][sr][p[:, 0]] < self.weak)
        recall = matched / n_ref if n_ref else 1.0
        precision = matched / n_test if n_test else 1.0
        out = {
            "hit_agreement": float(np.mean(r["hit"] == c["hit"])) if r["hit"].size else math.nan,
            "spot_recall": recall, "spot_precision": precision,
            "spot_f1": 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0,
        }
        d2 = np.concatenate(sq) if sq else np.zeros(0)
        out["spot_centroid_rmsd"] = float(np.sqrt(d2.mean())) if d2.size else math.nan
        # against the positional noise indexing already sees (its residual RMSD), when indexed
        rmsd = np.asarray(raw.result.get("rmsd_px", []), np.float64)
        noise = float(np.nanmean(rmsd)) if np.isfinite(rmsd).any() else math.nan
        out["spot_centroid_rmsd_rel"] = out["spot_centroid_rmsd"] / noise if noise > 0 else math.nan
        ir_, ic_ = (np.concatenate(v) if v else np.zeros(0) for v in (ir, ic))
        w = np.concatenate(weak) if weak else np.zeros(0, bool)
        for label, sel in (("weak", w), ("strong", ~w)):
            out[f"spot_cc_{label}"], out[f"spot_r_{label}"] = intensity_agreement(ir_[sel], ic_[sel])
        out["spot_f1_frames"] = f1_frames
        out["spot_centroid_rmsd_frames"] = rmsd_frames
        out["spot_centroid_shift_frames"] = shift_frames
        return out
