"""Indexing and integrated reflections of raw and compressed stills, frame by frame.

Reads a result with, per frame, ``indexed``, ``basis`` (direct cell vectors as rows) and
``cell``, and the integrated reflections ``refl_frame``, ``refl_hkl``, ``refl_intensity``,
``refl_sigma`` (see :mod:`lossbound.pipelines.sx.technique`). Two indexings of one crystal may differ
by a symmetry operation of the lattice (a and b swapped, say), so the compressed setting is
first brought onto the raw one; the misorientation is the rotation left after that, and
reflections are compared by their Miller indices in the raw setting.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, reject_unknown, result_array
from lossbound.evaluators.spots import intensity_agreement
from lossbound.diffraction import lattice

__all__ = ["cell_deviation", "common_reflections"]


def cell_deviation(cell: np.ndarray, reference: np.ndarray) -> float:
    """Largest relative change of the cell lengths (angles: degrees / 100, as for indexing)."""
    cell, reference = np.asarray(cell, float), np.asarray(reference, float)
    return float(max(np.max(np.abs(cell[:3] / reference[:3] - 1)), np.max(np.abs(cell[3:] - reference[3:])) / 100))


def common_reflections(hkl_ref: np.ndarray, hkl_test: np.ndarray, op: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of reflections present in both lists, after mapping the test
    indices into the reference setting: ``hkl_ref = op @ hkl_test`` for bases related by
    ``op @ basis_test ≈ basis_ref`` (up to a small rotation)."""
    hkl_ref = np.asarray(hkl_ref, np.int64).reshape(-1, 3)
    mapped = np.rint(np.asarray(hkl_test, float).reshape(-1, 3) @ np.asarray(op, float).T).astype(np.int64)
    ref_keys = {tuple(h): i for i, h in enumerate(hkl_ref)}
    pairs = [(ref_keys[tuple(h)], j) for j, h in enumerate(mapped) if tuple(h) in ref_keys]
    p = np.array(pairs, np.intp).reshape(-1, 2)
    return p[:, 0], p[:, 1]


@EVALUATORS.register("indexing")
class IndexingAgreement(Evaluator):
    """Indexing on compressed stills against the raw ones.

    Parameters
    ----------
    weak_i_over_sigma : float
        Reflections below this raw I/sigma are "weak" (default 3).

    Output keys: ``indexed_agreement`` (frames indexed on both raw and compressed data over the
    frames indexed on either: a frame lost *and* a frame indexed only on compressed data — a
    false indexing — both lower it; NaN when neither indexes any), ``false_indexed`` (frames
    indexed only on compressed data), ``indexed_rate_change`` (compressed minus raw indexed
    frames, per raw indexed frame), ``misorientation_max_deg`` and ``misorientation_median_deg``
    (frames indexed in both), ``misorientation_max_sigma`` (the same in units of the raw
    orientation's own standard error, from its refinement's covariance: stills fix the rotation
    about the beam far better than the other two), ``cell_deviation_max``,
    ``refl_common_fraction`` (the raw indexing's reflections also integrated on compressed
    data, over every raw indexed frame: a frame lost loses all of its reflections), and
    ``refl_cc_weak`` / ``refl_cc_strong``, ``refl_r_weak`` / ``refl_r_strong`` (the raw
    reflections kept, in the raw setting). Per frame (arrays, NaN for frames not indexed on the
    raw data, the worst value where the compressed data lose the frame: inf or -inf):
    ``misorientation_deg_frames``, ``cell_deviation_frames``, ``refl_common_fraction_frames``,
    ``refl_cc_strong_frames``, ``refl_r_strong_frames``, ``refl_cc_weak_frames``.
    """

    name = "indexing"
    scaling = {"refl_cc_weak": 2, "refl_cc_strong": 2, "refl_cc_weak_frames": 2, "refl_cc_strong_frames": 2}

    def __init__(self, *, weak_i_over_sigma: float = 3.0, **extra: Any) -> None:
        reject_unknown(self.name, extra)
        super().__init__(weak_i_over_sigma=weak_i_over_sigma)
        self.weak = float(weak_i_over_sigma)

    def _arrays(self, outcome: Outcome) -> dict[str, np.ndarray]:
        keys = ("indexed", "basis", "cell", "orientation_covariance", "refl_frame", "refl_hkl", "refl_intensity",
                "refl_sigma")
        return {k: result_array(outcome, k, self.name) for k in keys}

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, Any]:
        r, c = self._arrays(raw), self._arrays(compressed)
        n = int(r["indexed"].size)
        raw_idx, comp_idx = r["indexed"].astype(bool), c["indexed"].astype(bool)
        both = np.flatnonzero(raw_idx & comp_idx)
        either = int(np.sum(raw_idx | comp_idx))
        n_raw = int(raw_idx.sum())
        out: dict[str, Any] = {
            "indexed_agreement": len(both) / either if either else math.nan,
            "false_indexed": float(np.sum(comp_idx & ~raw_idx)),
            "indexed_rate_change": (int(comp_idx.sum()) - n_raw) / n_raw if n_raw else math.nan,
        }
        cell = raw.data.meta.get("cell")
        ops = lattice.symmetry_ops(cell) if cell is not None else np.eye(3)[None]
        frames = {k: np.full(n, np.nan) for k in ("misorientation_deg", "cell_deviation", "refl_common_fraction",
                                                   "refl_cc_strong", "refl_r_strong", "refl_cc_weak")}
        lost = np.flatnonzero(raw_idx & ~comp_idx)
        for k, worst in (("misorientation_deg", math.inf), ("cell_deviation", math.inf), ("refl_common_fraction", 0.0),
                         ("refl_cc_strong", -math.inf), ("refl_r_strong", math.inf), ("refl_cc_weak", -math.inf)):
            frames[k][lost] = worst
        angles, sigmas, deviations, ir, ic, weak = [], [], [], [], [], []
        n_ref_refl = int(np.isin(r["refl_frame"], np.flatnonzero(raw_idx)).sum())
        for f in both:
            angle, op = lattice.misorientation_deg(c["basis"][f], r["basis"][f], ops)
            angles.append(angle)
            sigmas.append(lattice.misorientation_sigma(c["basis"][f], r["basis"][f],
                                                       r["orientation_covariance"][f], ops))
            deviations.append(cell_deviation(c["cell"][f], r["cell"][f]))
            sr, sc = r["refl_frame"] == f, c["refl_frame"] == f
            i, j = common_reflections(r["refl_hkl"][sr], c["refl_hkl"][sc], op)
            fi, fc = r["refl_intensity"][sr][i], c["refl_intensity"][sc][j]
            fw = fi / r["refl_sigma"][sr][i] < self.weak
            ir.append(fi)
            ic.append(fc)
            weak.append(fw)
            frames["misorientation_deg"][f] = angle
            frames["cell_deviation"][f] = deviations[-1]
            frames["refl_common_fraction"][f] = i.size / int(sr.sum()) if sr.any() else math.nan
            frames["refl_cc_strong"][f], frames["refl_r_strong"][f] = intensity_agreement(fi[~fw], fc[~fw])
            frames["refl_cc_weak"][f], _ = intensity_agreement(fi[fw], fc[fw])
        out["misorientation_max_deg"] = float(max(angles)) if angles else math.nan
        out["misorientation_median_deg"] = float(np.median(angles)) if angles else math.nan
        finite = [v for v in sigmas if math.isfinite(v)]
        out["misorientation_max_sigma"] = float(max(finite)) if finite else math.nan
        out["cell_deviation_max"] = float(max(deviations)) if deviations else math.nan
        ir_, ic_ = (np.concatenate(v) if v else np.zeros(0) for v in (ir, ic))
        w = np.concatenate(weak) if weak else np.zeros(0, bool)
        out["refl_common_fraction"] = ir_.size / n_ref_refl if n_ref_refl else math.nan
        for label, sel in (("weak", w), ("strong", ~w)):
            out[f"refl_cc_{label}"], out[f"refl_r_{label}"] = intensity_agreement(ir_[sel], ic_[sel])
        out.update({f"{k}_frames": v for k, v in frames.items()})
        return out
