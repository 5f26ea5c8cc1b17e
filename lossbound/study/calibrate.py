"""The noise yardstick calibrated against a simulation whose truth is known.

A criterion with a noise factor allows the compression ``f**p`` times the metric's *noise
effect*: what one dose of counting noise does to the science result, i.e. the metric that
compares the true result with the result of one measurement. On measured data the effect is
estimated by Poisson re-sampling (:mod:`lossbound.criteria.noise_reference`). A built-in
simulation knows its noise-free measurement and can measure the same sample again
(:meth:`lossbound.pipelines.base.Technique.simulation_truth`), so both sides can be measured:

* **true**: the mean over ``truths`` independent measurements ``R_i`` of
  ``|metric(T, R_i) - metric(T, T)|``, where ``T`` is the true result — the pipeline on the
  noise-free measurement (:meth:`~lossbound.pipelines.base.Technique.truth_result`); per frame for
  per-frame metrics;
* **estimated**: the study's own estimator, run on ``estimates`` further independent
  measurements as if each were the measured dataset (same K policy, same seed rule), averaged.

``ratio = estimated / true``; per-frame metrics pool their judged frames (mean over frames).
A noise-referenced criterion whose ratio falls outside ``RATIO_RANGE`` does not measure what
it claims and must keep a fixed tolerance.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from lossbound.core.errors import ConfigError
from lossbound.core.processes import pin_threads, spawn_context
from lossbound.core.types import Outcome
from lossbound.study.context import ContextSpec, RawPart, raw_part
from lossbound.criteria.noise_reference import effect_of, frame_effects, measure, noise_effects, split_metrics

log = logging.getLogger(__name__)

RATIO_RANGE = (0.8, 1.25)

__all__ = ["RATIO_RANGE", "CriterionCalibration", "calibrate", "format_line"]


@dataclasses.dataclass
class CriterionCalibration:
    """One criterion: ``true`` and ``estimated`` noise effects with standard errors, or why
    it is fixed (``fixed``)."""

    technique: str
    criterion: str
    kind: str = "scalar"
    true: float = math.nan
    true_se: float = math.nan
    estimated: float = math.nan
    estimated_se: float = math.nan
    frames: int = 0
    fixed: str | None = None
    resamples: list[int] = dataclasses.field(default_factory=list)
    dataset: str | None = None
    #: coefficient of variation of the estimate between independent measurements of the sample
    #: (what one study's standard error, from its own K re-samplings, does not see)
    spread: float = math.nan

    @property
    def ratio(self) -> float:
        return self.estimated / self.true if self.true > 0 else math.nan

    @property
    def ratio_se(self) -> float:
        """First-order standard error of the ratio."""
        if not (self.true > 0 and self.estimated > 0):
            return math.nan
        return self.ratio * math.hypot(self.true_se / self.true, self.estimated_se / self.estimated)

    @property
    def inside(self) -> bool:
        return RATIO_RANGE[0] <= self.ratio <= RATIO_RANGE[1]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio, "ratio_se": self.ratio_se,
                "inside": self.inside if self.fixed is None else None}


def format_line(c: CriterionCalibration) -> str:
    """``yardstick <technique> <criterion> true=<mean±se> estimated=<mean±se> ratio=<x>``, or
    ``yardstick <technique> <criterion> fixed (<reason>)``."""
    if c.fixed is not None:
        return f"yardstick {c.technique} {c.criterion} fixed ({c.fixed})"
    line = (f"yardstick {c.technique} {c.criterion} true={c.true:.4g}±{c.true_se:.2g} "
            f"estimated={c.estimated:.4g}±{c.estimated_se:.2g} ratio={c.ratio:.3g}")
    if math.isfinite(c.spread):
        line += f" spread={c.spread:.0%}"
    if c.kind == "frames":
        line += f" (per frame, {c.frames} frames pooled)"
    if c.dataset:
        line += f" [{c.dataset}]"
    if not c.inside:
        line += f"  OUTSIDE [{RATIO_RANGE[0]:g}, {RATIO_RANGE[1]:g}]: keep a fixed tolerance"
    return line


# -- the work, in any process ----------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _setup(spec: ContextSpec, threads: int | None = None) -> dict[str, Any]:
    """The raw part, the simulation's truth and the true result (once per process)."""
    if _STATE.get("key") == spec.key:
        return _STATE
    if threads:
        pin_threads(threads)
    part = raw_part(spec)
    truth = part.technique.simulation_truth(part.raw.data)
    if truth is None:
        raise ConfigError(f"{part.raw.data.name} is not a built-in simulation of {part.technique.name}: "
                          f"calibration needs its truth (use the default dataset=sim_{part.technique.name})")
    t_out = Outcome(truth.noise_free, part.technique.truth_result(truth.noise_free, part.prepared))
    refs = {k: ev.reference(t_out) for k, ev in part.evaluators.items()}
    _STATE.clear()
    _STATE.update(key=spec.key, part=part, truth=truth, t_out=t_out, refs=refs)
    _STATE["ideal"] = split_metrics(_compare(part, t_out, t_out, refs))
    return _STATE


def _compare(part: RawPart, raw: Outcome, comp: Outcome, refs: Mapping[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for key, ev in part.evaluators.items():
        metrics.update(ev.compare(raw, comp, refs[key]))
    return metrics


def _measurement(state: Mapping[str, Any], seed: int, index: int) -> Outcome:
    part = state["part"]
    data = state["truth"].measure(np.random.default_rng([seed, index]))
    return Outcome(data, part.technique.run(data, part.prepared))


def _true_sample(spec: ContextSpec, seed: int, index: int) -> dict[str, Any]:
    """The metrics of the true result against measurement ``index``."""
    state = _setup(spec)
    return split_metrics(_compare(state["part"], state["t_out"], _measurement(state, seed, index), state["refs"]))


def _estimate(spec: ContextSpec, seed: int, index: int, used: Mapping[str, str]) -> dict[str, Any]:
    """The study's estimator on measurement ``index`` taken as the measured dataset."""
    state = _setup(spec)
    part = state["part"]
    raw = _measurement(state, seed, index)
    refs = {k: ev.reference(raw) for k, ev in part.evaluators.items()}
    ideal, frame_ideal = split_metrics(_compare(part, raw, raw, refs))
    doc = measure(part.technique, raw, part.prepared, lambda comp: _compare(part, raw, comp, refs),
                  part.noise_settings, ideal=ideal, frame_ideal=frame_ideal, used=used)
    return {"effects": noise_effects(doc["values"], ideal),
            "frame_effects": frame_effects(doc["frame_values"], frame_ideal), "resamples": doc["resamples"]}


def _init(spec: ContextSpec, threads: int) -> None:
    _setup(spec, threads)


# -- combining -----------------------------------------------------------------------------------
def _pool_frames(per_frame: list[list[dict[str, float]]], judged: np.ndarray) -> tuple[float, float]:
    """Mean over the judged frames of each frame's effect (averaged over the lists), and its
    standard error."""
    means, ses = [], []
    for f in np.flatnonzero(judged):
        vals = [lst[f] for lst in per_frame]
        eff = np.array([v["effect"] for v in vals], float)
        sd = np.array([v["effect_sd"] for v in vals], float)
        means.append(float(eff.mean()))
        ses.append(float(eff.std(ddof=1) / math.sqrt(eff.size)) if eff.size > 1 else float(sd[0]))
    if not means:
        return math.nan, math.nan
    return float(np.mean(means)), float(math.sqrt(np.sum(np.square(ses))) / len(ses))


def calibrate(spec: ContextSpec, *, truths: int = 12, estimates: int = 2, seed: int = 20261204,
              workers: int = 1, progress: bool = True) -> list[CriterionCalibration]:
    """Calibrate every criterion of ``spec``'s technique on its built-in simulation.

    Parameters
    ----------
    spec : ContextSpec
        The technique and its default simulated dataset (and the raw-result cache).
    truths : int
        Independent measurements compared with the true result.
    estimates : int
        Further independent measurements, each taken as the measured dataset by the study's
        estimator (with the configured K policy).
    seed : int
        Measurement ``i`` is drawn from ``default_rng([seed, i])``.
    workers : int
        Processes (each rebuilds the raw part from the cache and the truth from the
        simulation's parameters).
    """
    if truths < 2 or estimates < 1:
        raise ConfigError(f"calibrate needs truths >= 2 and estimates >= 1, got {truths} and {estimates}")
    state = _setup(spec)  # here first: the raw result lands in the cache, errors surface once
    part: RawPart = state["part"]
    tolerances, name = part.tolerances, part.technique.name
    used = tolerances.noise_metrics()
    ideal_t, frame_ideal_t = state["ideal"]
    jobs: list[tuple[str, int]] = [("truth", i) for i in range(truths)] + \
                                  [("estimate", truths + j) for j in range(estimates)]
    results: dict[tuple[str, int], Any] = {}
    bar = tqdm(total=len(jobs), desc=f"calibrating the {name} yardstick", unit="run", disable=not progress)
    if workers > 1:
        threads = max(1, (len(__import__("os").sched_getaffinity(0)) or 1) // workers)
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=spawn_context(),
                                                    initializer=_init, initargs=(spec, threads)) as pool:
            futures = {}
            for kind, i in sorted(jobs, key=lambda j: j[0] != "estimate"):  # the long ones first
                fn = _estimate if kind == "estimate" else _true_sample
                args = (spec, seed, i, used) if kind == "estimate" else (spec, seed, i)
                futures[pool.submit(fn, *args)] = (kind, i)
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    else:
        for kind, i in jobs:
            results[(kind, i)] = _estimate(spec, seed, i, used) if kind == "estimate" else _true_sample(spec, seed, i)
            bar.update(1)
    bar.close()

    true_samples = [results[("truth", i)] for i in range(truths)]
    est = [results[("estimate", truths + j)] for j in range(estimates)]
    out: list[CriterionCalibration] = []
    for metric, spec_ in tolerances.config.items():
        if spec_ is None:
            continue
        cal = CriterionCalibration(name, metric, kind="frames" if metric in frame_ideal_t else "scalar",
                                   resamples=[e["resamples"] for e in est])
        if not spec_.get("noise"):
            cal.fixed = str(spec_.get("why") or "no noise factor configured")
            out.append(cal)
            continue
        if metric in tolerances.not_applicable:
            cal.fixed = "not applicable to the simulation (undefined for the raw data against itself)"
            out.append(cal)
            continue
        if cal.kind == "frames":
            values = np.array([s[1][metric] for s in true_samples], float)  # (truths, frames)
            true_f = [effect_of(values[:, f], frame_ideal_t[metric][f]) for f in range(values.shape[1])]
            est_f = [e["frame_effects"].get(metric) for e in est]
            if any(x is None or len(x) != len(true_f) for x in est_f):
                cal.fixed = "the estimator gives no per-frame effect on the simulation"
                out.append(cal)
                continue
            judged = np.array([math.isfinite(t["effect"]) and t["effect"] > 0
                               and all(math.isfinite(x[f]["effect"]) for x in est_f) for f, t in enumerate(true_f)])
            cal.frames = int(judged.sum())
            cal.true, cal.true_se = _pool_frames([true_f], judged)
            cal.estimated, cal.estimated_se = _pool_frames(est_f, judged)
            per_estimate = np.array([np.mean([x[f]["effect"] for f in np.flatnonzero(judged)]) for x in est_f])
            if per_estimate.size > 1 and per_estimate.mean() > 0:
                cal.spread = float(per_estimate.std(ddof=1) / per_estimate.mean())
        else:
            t = effect_of([s[0][metric] for s in true_samples], ideal_t.get(metric, math.nan))
            cal.true, cal.true_se = t["effect"], t["effect_sd"]
            e = np.array([x["effects"][metric]["effect"] for x in est], float)
            e_sd = np.array([x["effects"][metric]["effect_sd"] for x in est], float)
            cal.estimated = float(e.mean())
            cal.estimated_se = float(e.std(ddof=1) / math.sqrt(e.size)) if e.size > 1 else float(e_sd[0])
            if e.size > 1 and e.mean() > 0:
                cal.spread = float(e.std(ddof=1) / e.mean())
        if not (math.isfinite(cal.true) and cal.true > 0 and math.isfinite(cal.estimated)):
            cal.fixed = (f"no defined noise effect on the simulation (true {cal.true:.3g}, "
                         f"estimated {cal.estimated:.3g})")
        out.append(cal)
    return out
