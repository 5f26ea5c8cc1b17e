"""Quality gates of ptychography: does the raw reconstruction explain the patterns, and has
it converged?

- ``data_fit``: the Poisson deviance of the measured patterns about the raw reconstruction's
  model, in units of the deviance counting noise alone gives
  (:func:`lossbound.pipelines.ptycho.engine.data_fit`). Wrong scan positions (axes swapped, a
  wrong step or unit), a wrong detector orientation or a pattern stack out of order leave
  several times the noise unexplained, and a compressed run is then compared with garbage.
- ``convergence``: the loss's relative decrease over the last fifth of the iterations: a
  reconstruction still moving fast changes with any perturbation, and the bound would judge
  the optimiser's path rather than the data.
- ``stability``: the phase change (rad, over the compared field, ramp removed) when the raw
  patterns get a thousandth of a photon of uniform noise (the ``ptycho`` evaluator's
  reference). An iterative reconstruction in float32 amplifies any change of its input: this
  is the floor every compressed run sits on, whatever the codec did. Warn when it exceeds
  half the fixed phase tolerance.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lossbound.core.gates import GateCheck

__all__ = ["DEFAULTS", "checks", "convergence_check", "data_fit_check", "stability_check"]

DEFAULTS: dict[str, dict[str, Any]] = {
    # refuse when the raw fit leaves more than this many times the counting noise unexplained
    "data_fit": {"action": "refuse", "max_fit_to_noise": 3.0},
    # warn when the loss still fell by more than this fraction over the last fifth of the iterations
    "convergence": {"action": "warn", "max_late_decrease": 0.05},
    # warn when a thousandth of a photon moves the phase by more than this (rad)
    "stability": {"action": "warn", "max_phase_rms": 0.01},
}


def data_fit_check(fit_to_noise: float, *, limit: float) -> GateCheck:
    ok = bool(np.isfinite(fit_to_noise) and fit_to_noise <= limit)
    return GateCheck("data_fit", fit_to_noise, limit, ok, unit="x noise",
                     detail=f"the raw reconstruction leaves {fit_to_noise:.3g} times the counting noise's deviance "
                            f"unexplained",
                     fix="check the scan positions (units, axis order and signs: dataset positions are row, col), "
                         "the detector orientation (dataset.fftshift) and the initial probe; "
                         "technique.gates.data_fit.action=warn to go on")


def convergence_check(loss: np.ndarray, *, limit: float) -> GateCheck:
    loss = np.asarray(loss, float)
    k = max(len(loss) // 5, 1)
    if len(loss) < 2 * k or not np.isfinite(loss[-2 * k:]).all():
        return GateCheck("convergence", None, limit, None, detail="too few iterations to judge convergence")
    before, after = float(np.mean(loss[-2 * k:-k])), float(np.mean(loss[-k:]))
    drop = (before - after) / after if after > 0 else 0.0
    return GateCheck("convergence", drop, limit, drop <= limit, unit="",
                     detail=f"the loss fell by {drop:.2%} over the last {k} of {len(loss)} iterations",
                     fix="raise technique.pipeline.iterations (every point then costs more)",
                     figures={"loss_first": float(loss[0]), "loss_last": float(loss[-1])})


def stability_check(floor: float | None, *, limit: float) -> GateCheck:
    if floor is None or not np.isfinite(floor):
        return GateCheck("stability", None, limit, None, detail="no dithered reconstruction (pipeline.stability_dither "
                                                                 "is null)")
    return GateCheck("stability", floor, limit, floor <= limit, unit="rad",
                     detail=f"a thousandth of a photon added to the raw patterns moves the phase by {floor:.3g} rad "
                            f"(RMS): every compressed run's phase change sits on this floor",
                     fix="add iterations or annealing stages (technique.pipeline.stages) so the reconstruction "
                         "converges; a lower floor lets the noise-referenced criteria see a codec's own damage")


def checks(result: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]], *,
           floor: float | None = None) -> list[GateCheck]:
    out = []
    if settings["data_fit"]["action"] != "off":
        out.append(data_fit_check(float(np.asarray(result["fit_to_noise"]).ravel()[0]),
                                  limit=float(settings["data_fit"]["max_fit_to_noise"])))
    if settings["convergence"]["action"] != "off":
        out.append(convergence_check(result["loss"], limit=float(settings["convergence"]["max_late_decrease"])))
    if settings["stability"]["action"] != "off":
        out.append(stability_check(floor, limit=float(settings["stability"]["max_phase_rms"])))
    return out
