"""Comparing ptychographic reconstructions: the object's phase and amplitude, their Fourier
ring correlation, the probe, and (on a simulation) each run against the truth.

Ptychography leaves a global phase offset and a linear phase ramp free (a shift of the
patterns' centre), and the object's amplitude scale trades against the probe's. Both are
removed before any comparison: :func:`align_object` fits them over the well-illuminated field
and takes them out of the compressed object.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator, Outcome, reject_unknown, result_array
from lossbound.evaluators.frc import frc_curve, frc_resolution

__all__ = ["PtychoObject", "align_object", "illuminated", "object_frc", "probe_change"]


def illuminated(illumination: np.ndarray, *, fraction: float = 0.3) -> np.ndarray:
    """Pixels whose summed probe intensity exceeds ``fraction`` of the maximum."""
    ill = np.asarray(illumination, np.float64)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    return ill > fraction * ill.max()


def align_object(reference: np.ndarray, test: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``test`` with the global phase offset, linear phase ramp and amplitude scale that best
    match ``reference`` over ``field`` removed (weighted least squares on the wrapped phase
    difference; weights: the reference's amplitude).

    Parameters
    ----------
    reference, test : (H, W) complex ndarray
    field : (H, W) bool ndarray
    """
    if reference.shape != test.shape or field.shape != reference.shape:
        raise ValueError(f"shapes differ: {reference.shape}, {test.shape}, {field.shape}")
    if not field.any():
        raise ValueError("the illuminated field is empty")
    ii, jj = np.nonzero(field)
    d = np.angle(test[field] * np.conj(reference[field])).astype(np.float64)
    d0 = np.angle(np.sum(np.exp(1j * d)))          # offset first, so the fit sees no wraps
    d = np.angle(np.exp(1j * (d - d0)))
    w = np.abs(reference[field]).astype(np.float64)
    a = np.stack([np.ones_like(d), ii - ii.mean(), jj - jj.mean()], axis=1)
    coef, *_ = np.linalg.lstsq(a * w[:, None], d * w, rcond=None)
    y, x = np.mgrid[: reference.shape[0], : reference.shape[1]]
    plane = d0 + coef[0] + coef[1] * (y - ii.mean()) + coef[2] * (x - jj.mean())
    scale = np.sum(np.abs(reference[field])) / max(np.sum(np.abs(test[field])), 1e-30)
    return test * scale * np.exp(-1j * plane)


def object_frc(a: np.ndarray, b: np.ndarray, field: np.ndarray, *, threshold: float | str = 1 / 7) -> dict[str, float]:
    """FRC of two phase images over the bounding box of ``field`` (outside the field set to
    the field's mean, Tukey-apodised): the frequency where they stop agreeing at ``threshold``
    (0.5 cycles/pixel when they agree to the pixel), the resolution that gives, and the mean
    FRC over the high band 0.25-0.5 cycles/pixel (a continuous measure where the crossing is
    pinned at Nyquist)."""
    rows, cols = np.nonzero(field)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    f = field[box]
    a, b = (np.where(f, x[box], x[box][f].mean()) for x in (a, b))
    n = min(a.shape)
    a, b = a[:n, :n], b[:n, :n]
    freq, frc, counts = frc_curve(a, b, apodize=True)
    res = frc_resolution(freq, frc, threshold=threshold, n_pixels=counts)
    high = (freq >= 0.25) & (freq <= 0.5) & np.isfinite(frc)
    return {"frequency": res.frequency, "resolution_px": res.resolution_px, "crossed": float(res.crossed),
            "high_band": float(np.mean(frc[high])) if high.any() else float("nan")}


def probe_change(reference: np.ndarray, test: np.ndarray) -> float:
    """``||g test - reference|| / ||reference||`` with the complex scalar ``g`` that minimises it
    (the probe's global phase and scale are free)."""
    ref = np.asarray(reference, np.complex128).ravel()
    t = np.asarray(test, np.complex128).ravel()
    g = np.vdot(t, ref) / max(np.vdot(t, t).real, 1e-30)
    return float(np.linalg.norm(g * t - ref) / max(np.linalg.norm(ref), 1e-30))


def _complex(outcome: Outcome) -> np.ndarray:
    amp = result_array(outcome, "object_amplitude", "ptycho")
    phase = result_array(outcome, "object_phase", "ptycho")
    return amp * np.exp(1j * phase.astype(np.float64))


@EVALUATORS.register("ptycho")
class PtychoObject(Evaluator):
    """The compressed data's reconstruction against the raw data's, and both against the truth.

    Parameters
    ----------
    illuminated : float
        The field compared: pixels whose summed probe intensity exceeds this fraction of the
        raw run's maximum (default 0.3).
    threshold : float or 'half-bit'
        FRC threshold (default 1/7).

    Output keys: ``phase_rms_change`` (rad) and ``amplitude_rms_change`` (relative to the mean
    amplitude) after alignment; ``phase_frc_frequency`` (cycles/pixel where the raw and
    compressed phases stop agreeing at the threshold; 0.5 = agree to the pixel) and
    ``phase_frc_high`` (their mean FRC over 0.25-0.5 cycles/pixel);
    ``probe_change`` (relative); ``fit_to_noise`` and its change from raw;
    ``phase_rms_floor``: the phase change a thousandth of a photon makes (the raw result's
    ``stability_*`` reconstruction; the floor under every ``phase_rms_change``). With a simulated
    truth: ``truth_phase_rms`` and ``truth_resolution_px`` for the compressed run and
    ``truth_phase_rms_raw``, ``truth_resolution_px_raw`` for the raw run (compressed vs truth
    beside raw vs truth), and ``truth_resolution_change`` (the compressed run's FRC resolution
    against the truth over the raw run's, minus 1).
    """

    name = "ptycho"
    # the FRC is a correlation: 1 - FRC grows with the square of an error's amplitude. The
    # amplitude change grows slower than the error (measured on sim_ptycho: exponent 0.61-0.70
    # between 0.25 and 2 sigma of counting noise), so it declares the measured 0.7: a linear
    # declaration would hold compressed data to 0.37 of the noise's amplitude, not to f = 0.5.
    scaling = {"phase_rms_change": 1, "amplitude_rms_change": 0.7, "probe_change": 1, "phase_frc_high": 2}

    def __init__(self, *, illuminated: float = 0.3, threshold: float | str = 1 / 7, **extra: Any) -> None:
        reject_unknown(self.name, extra)
        if not 0 < float(illuminated) < 1:
            raise ValueError(f"evaluator 'ptycho': illuminated must lie in (0, 1), got {illuminated}")
        super().__init__(illuminated=float(illuminated), threshold=threshold)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        field = illuminated(result_array(raw, "illumination", self.name), fraction=self.params["illuminated"])
        out: dict[str, Any] = {"field": field, "floor": float("nan")}
        if "stability_phase" in raw.result:
            a = _complex(raw)
            b = np.asarray(raw.result["stability_amplitude"]) * np.exp(1j * np.asarray(raw.result["stability_phase"], np.float64))
            b = align_object(a, b, field)
            out["floor"] = float(np.sqrt(np.mean(np.angle(b[field] * np.conj(a[field])) ** 2)))
        truth = self._truth(raw)
        if truth is not None:
            out["truth"] = truth
            out["truth_raw"] = self._against_truth(raw, truth, field)
        return out

    def _truth(self, raw: Outcome) -> np.ndarray | None:
        """The truth on the reconstruction's grid (None without a simulated truth)."""
        arrays = raw.data.arrays
        if "truth_object" not in arrays:
            return None
        truth = np.asarray(arrays["truth_object"])
        origin = np.asarray(raw.result["origin"]).astype(int) + np.round(np.asarray(arrays["truth_offset"])).astype(int)
        shape = np.asarray(raw.result["object_phase"]).shape
        out = np.full(shape, np.nan + 0j, np.complex128)
        r0, c0 = origin
        rs = slice(max(r0, 0), min(r0 + shape[0], truth.shape[0]))
        cs = slice(max(c0, 0), min(c0 + shape[1], truth.shape[1]))
        out[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = truth[rs, cs]
        return out

    def _against_truth(self, outcome: Outcome, truth: np.ndarray, field: np.ndarray) -> dict[str, float]:
        ok = field & np.isfinite(truth)
        obj = align_object(truth, _complex(outcome), ok)
        d = np.angle(obj[ok] * np.conj(truth[ok]))
        frc = object_frc(np.angle(truth), np.angle(obj), ok, threshold=self.params["threshold"])
        return {"phase_rms": float(np.sqrt(np.mean(d**2))), "resolution_px": frc["resolution_px"]}

    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        field = reference["field"]
        a = _complex(raw)
        b = align_object(a, _complex(compressed), field)
        d = np.angle(b[field] * np.conj(a[field]))
        amp_a = np.abs(a[field])
        frc = object_frc(np.angle(a), np.angle(b), field, threshold=self.params["threshold"])
        out = {
            "phase_rms_change": float(np.sqrt(np.mean(d**2))),
            "amplitude_rms_change": float(np.sqrt(np.mean((np.abs(b[field]) - amp_a) ** 2)) / max(amp_a.mean(), 1e-30)),
            "phase_frc_frequency": frc["frequency"],
            "phase_frc_high": frc["high_band"],
            "probe_change": probe_change(result_array(raw, "probe", self.name), result_array(compressed, "probe", self.name)),
        }
        fit_a = float(result_array(raw, "fit_to_noise", self.name).ravel()[0])
        fit_b = float(result_array(compressed, "fit_to_noise", self.name).ravel()[0])
        out.update(fit_to_noise=fit_b, fit_to_noise_change=fit_b - fit_a, phase_rms_floor=reference["floor"])
        if "truth" in reference:
            mine = self._against_truth(compressed, reference["truth"], field)
            raw_t = reference["truth_raw"]
            out.update(truth_phase_rms=mine["phase_rms"], truth_resolution_px=mine["resolution_px"],
                       truth_phase_rms_raw=raw_t["phase_rms"], truth_resolution_px_raw=raw_t["resolution_px"],
                       truth_resolution_change=mine["resolution_px"] / raw_t["resolution_px"] - 1)
        return out
