"""Each noise-referenced metric scales with an error's amplitude as its evaluator declares.

A tolerance ``noise: f`` allows ``f**p`` times the noise effect, ``p`` the metric's declared
power (1 linear, 2 quadratic: chi-squared, 1 - CC). Measured here on the small simulations:
the same Gaussian error pattern, at 0.25 and 0.5 of each pixel's counting-noise sigma, is
added to the raw data; the metric's damage (distance from the raw-vs-raw ideal; per-frame
metrics averaged over their judged frames) must grow by 2**p between the two. Values are kept
at or above 0 (pyFAI reads a Pilatus -1 as a gap: a mask, not the error's amplitude, would
change).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import small_sim_overrides
from lossbound.cli.calibrate import compose  # resolved, as the command composes it
from lossbound.core.types import Outcome
from lossbound.study.context import ContextSpec, raw_part
from lossbound.criteria.noise_reference import split_metrics

SMALL = {
    "tomo": lambda tmp: small_sim_overrides(tmp),
    "azint": lambda tmp: ["technique=azint", f"paths.runs_dir={tmp / 'runs'}", f"paths.reference_data={tmp}",
                          "dataset.simulation.detector=Pilatus300k", "dataset.simulation.poni_px=[300,240]",
                          "dataset.simulation.distance_mm=120"],
    "saxs": lambda tmp: ["technique=azint", "dataset=sim_saxs", f"paths.runs_dir={tmp / 'runs'}",
                         f"paths.reference_data={tmp}"],
    "sx": lambda tmp: ["technique=sx", f"paths.runs_dir={tmp / 'runs'}", f"paths.reference_data={tmp}",
                       "dataset.simulation.n_frames=3", "dataset.simulation.misses=[1]",
                       "+dataset.simulation.detector=Pilatus300k", "+dataset.simulation.beam_px=[240.0,300.0]",
                       "+dataset.simulation.distance_mm=120.0"],
    "ptycho": lambda tmp: ["technique=ptycho", f"paths.runs_dir={tmp / 'runs'}", f"paths.reference_data={tmp}"],
}


def _damage(part, amplitude: float, z: np.ndarray) -> dict[str, float]:
    data = part.raw.data
    x = np.asarray(data.payload_array, np.float64)
    offset = np.mean(data.arrays["darks"], axis=0) if "darks" in data.arrays else 0.0
    sigma = np.sqrt(np.maximum((x - offset) * float(data.meta.get("adu_per_photon") or 1.0), 1.0))
    valid = np.ones(x.shape, bool) if data.mask is None else np.broadcast_to(data.mask, x.shape)
    noisy = np.where(valid, np.maximum(x + amplitude * sigma * z, 0.0), x)
    comp = data.with_payload(noisy)
    scalars, frames = split_metrics(part.evaluate(Outcome(comp, part.technique.run(comp, part.prepared))))
    out = {}
    for m, v in scalars.items():
        out[m] = abs(v - part.raw_metrics[m])
    for m, v in frames.items():
        ideal = np.asarray(part.raw_frame_metrics[m], float)
        d = np.abs(np.asarray(v, float) - ideal)
        ok = np.isfinite(d)
        out[m] = float(d[ok].mean()) if ok.any() else math.nan
    return out


@pytest.mark.parametrize("which", ["tomo", "azint", "saxs", "sx", "ptycho"])
def test_declared_scaling_holds_at_two_error_amplitudes(which, tmp_path):
    if which == "ptycho":
        from lossbound.pipelines.ptycho import engine

        if engine.available() is not None:
            pytest.skip("ptycho needs the optional part: pip install 'lossbound[ptycho]'")
    cfg = compose(SMALL[which](tmp_path))
    part = raw_part(ContextSpec(technique=cfg["technique"], dataset=cfg["dataset"]))
    scaling = {m: p for ev in part.evaluators.values() for m, p in ev.powers().items()}
    metrics = [m for m in part.tolerances.noise_metrics()]
    assert metrics, f"{which}: no noise-referenced criterion to check"
    z = np.random.default_rng(7).standard_normal(part.raw.data.payload_array.shape)
    small, large = _damage(part, 0.25, z), _damage(part, 0.5, z)
    report = {}
    for m in metrics:
        assert small[m] > 0 and large[m] > 0, f"{which} {m}: no damage at 0.25 / 0.5 sigma ({small[m]}, {large[m]})"
        report[m] = (math.log2(large[m] / small[m]), scaling.get(m, 1))
    bad = {m: r for m, r in report.items() if abs(r[0] - r[1]) > 0.35}
    assert not bad, f"{which}: measured exponent vs declared power: {bad} (all: {report})"
