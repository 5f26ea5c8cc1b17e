"""What one dose of counting noise does to each downstream metric, from the measured data.

The *noise effect* of a metric is what the measurement's own counting noise does to the
science result: the metric that compares the true result with the result of one measurement.
Measured data carry no true result, so it is estimated by Poisson re-sampling: the pipeline
runs on K re-measurements of the raw data drawn from the technique's noise model
(``Poisson(counts)`` for count data, a documented equivalent otherwise:
:meth:`lossbound.pipelines.base.Technique.resample`), and every evaluator compares each with the raw
result exactly as it compares a compressed one. A re-measurement differs from the raw data by
one dose of noise (for metrics linear in the data, its change from raw is distributed as the
raw's change from the truth); it carries two doses in total, which inflates metrics with a
detection threshold inside — how far is measured against simulations whose truth is known
(:mod:`lossbound.study.calibrate`), and a criterion whose estimate does not hold there keeps a
fixed tolerance.

Per metric (and per frame for per-frame metrics) the effect is the mean ``|metric - ideal|``
over the re-samplings (ideal: the raw data against itself), with its standard error. K starts
at ``resamples`` and grows, in deterministic steps, until every effect a criterion uses has a
relative standard error of at most ``target_se``, or K reaches ``max_resamples``; an effect
that would need more than ``max_resamples`` does not make K grow. Effects still above the
target are not used (their criteria keep the fixed range, and say why).

Computed once per dataset, pipeline, evaluators, noise model (with its parameters), K policy,
seed and the metrics it must resolve, and cached beside the raw results when a cache folder
is configured (``paths.cache_dir``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from lossbound.core.errors import ConfigError, NotApplicable
from lossbound.core.types import Outcome
from lossbound.core.cache import ResultCache
from lossbound.pipelines.base import Technique

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
ESTIMATOR = "poisson-resampling"
#: version of what a cached reference holds (2: per-frame values, adaptive K)
_VERSION = 2

# re-sampled payloads in, each one's metrics out, in order (scalars, and per-frame lists)
EvaluateMany = Callable[[Iterator[np.ndarray]], Iterable[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class NoiseReference:
    """One dataset's counting-noise reference, or why it has none (``unavailable``).

    ``values`` / ``frame_values``: each metric over the K re-samplings (per frame for
    per-frame metrics); ``effects`` / ``frame_effects``: the noise effect and its standard
    error derived from them (set once the raw metrics are known); ``checks``: whether the
    data behave as the noise model assumes (gain, photon dispersion).
    """

    unavailable: str | None = None
    model: str | None = None
    estimator: str | None = None
    resamples: int = 0
    resamples_needed: int | None = None
    steps: tuple[int, ...] = ()
    seed: int | None = None
    seconds: float = 0.0
    cached: bool = True
    values: Mapping[str, list[float]] = dataclasses.field(default_factory=dict)
    frame_values: Mapping[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    effects: Mapping[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    frame_effects: Mapping[str, list[dict[str, float]]] = dataclasses.field(default_factory=dict)
    checks: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.unavailable is None

    @classmethod
    def none(cls, reason: str) -> "NoiseReference":
        return cls(unavailable=reason)

    @classmethod
    def from_measurement(cls, doc: Mapping[str, Any], *, cached: bool) -> "NoiseReference":
        """From what :func:`measure` returned (and the cache kept)."""
        return cls(model=doc["model"], estimator=doc.get("estimator"), resamples=int(doc["resamples"]),
                   resamples_needed=doc.get("resamples_needed"), steps=tuple(doc.get("steps") or ()),
                   seed=doc.get("seed"), seconds=float(doc.get("seconds", 0.0)), cached=cached,
                   values=dict(doc.get("values") or {}), frame_values=dict(doc.get("frame_values") or {}))

    def with_effects(self, ideal: Mapping[str, float], frame_ideal: Mapping[str, list[float]]) -> "NoiseReference":
        """The effects of every metric against the raw data's own (ideal) values."""
        return dataclasses.replace(self, effects=noise_effects(self.values, ideal),
                                   frame_effects=frame_effects(self.frame_values, frame_ideal))

    def summary(self, tolerances: Any, settings: NoiseSettings) -> dict[str, Any]:
        """The reference as the thresholds file and MLflow record it: model, estimator, K
        policy and the K used, its cost, the checks, and per criterion of ``tolerances`` the
        noise effect beside the fixed and the derived range."""
        if not self.available:
            return {"unavailable": self.unavailable, "checks": dict(self.checks)}
        effects = {c.metric: self.effects[c.metric] for c in tolerances if c.metric in self.effects}
        return {"model": self.model, "estimator": self.estimator, "resamples": self.resamples,
                "resamples_needed": self.resamples_needed, "policy": settings.describe(),
                "seed": self.seed, "seconds": self.seconds, "cached": self.cached,
                "checks": dict(self.checks), "limits": tolerances.noise_limits(),
                # every criterion's change from counting noise alone (noise-referenced or not)
                "effects": {m: {"effect": e["effect"], "se": e["effect_sd"]} for m, e in effects.items()},
                "frame_effects": {c.metric: [{"effect": e["effect"], "se": e["effect_sd"]}
                                             for e in self.frame_effects[c.metric]]
                                  for c in tolerances if c.metric in self.frame_effects}}


@dataclasses.dataclass(frozen=True)
class NoiseSettings:
    """``technique.noise_reference``: ``mode`` auto (on where the technique has a noise model
    for the data) | on (required) | off; ``resamples`` the first K; ``max_resamples`` the cap;
    ``target_se`` the relative standard error every used effect must reach; ``seed``."""

    mode: str = "auto"
    resamples: int = 4
    max_resamples: int = 16
    target_se: float = 0.15
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "NoiseSettings":
        cfg = dict(cfg or {})
        keys = {"mode", "resamples", "max_resamples", "target_se", "seed"}
        unknown = set(cfg) - keys
        if unknown:
            raise ConfigError(f"technique.noise_reference: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"expected {', '.join(sorted(keys))}")
        mode = {True: "on", False: "off"}.get(cfg.get("mode"), cfg.get("mode", "auto"))
        if mode not in MODES:
            raise ConfigError(f"technique.noise_reference.mode must be one of {', '.join(MODES)}, got {mode!r}")
        try:
            k, seed = int(cfg.get("resamples", 4)), int(cfg.get("seed", 0))
            k_max = int(cfg.get("max_resamples", max(k, 16)))
        except (TypeError, ValueError):
            raise ConfigError(f"technique.noise_reference: resamples, max_resamples and seed must be integers, "
                              f"got {cfg}") from None
        if k < 2:
            raise ConfigError(f"technique.noise_reference.resamples must be >= 2 (a spread needs two), got {k}")
        if k_max < k:
            raise ConfigError(f"technique.noise_reference.max_resamples must be >= resamples ({k}), got {k_max}")
        try:
            target = float(cfg.get("target_se", 0.15))
        except (TypeError, ValueError):
            target = math.nan
        if not target > 0:
            raise ConfigError(f"technique.noise_reference.target_se must be a number > 0, got {cfg.get('target_se')!r}")
        return cls(mode, k, k_max, target, seed)

    def describe(self) -> dict[str, Any]:
        """The K policy (part of every cache key and of the verdict spec)."""
        return {"estimator": ESTIMATOR, "resamples": self.resamples, "max_resamples": self.max_resamples,
                "target_se": self.target_se, "seed": self.seed}


def effect_of(values: Iterable[float], ideal: float) -> dict[str, float]:
    """Mean and standard error of ``|value - ideal|`` over the re-samplings, over those where
    the metric is finite (``lost``: how many were not; NaN effect when fewer than two are)."""
    v = np.asarray(list(values), dtype=np.float64)
    ok = np.isfinite(v)
    if not math.isfinite(ideal) or ok.sum() < 2:
        return {"effect": math.nan, "effect_sd": math.nan, "ideal": float(ideal), "resamples": int(v.size),
                "lost": int((~ok).sum())}
    damage = np.abs(v[ok] - ideal)
    return {"effect": float(damage.mean()), "effect_sd": float(damage.std(ddof=1) / math.sqrt(damage.size)),
            "ideal": float(ideal), "resamples": int(v.size), "lost": int((~ok).sum())}


def noise_effects(values: Mapping[str, list[float]], ideal: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per scalar metric: :func:`effect_of` over the re-samplings where it is finite (``lost``
    counts the others: a fit the counting noise itself sometimes loses)."""
    return {metric: effect_of(vals, ideal.get(metric, math.nan)) for metric, vals in values.items()}


def frame_effects(values: Mapping[str, list[list[float]]], ideal: Mapping[str, list[float]]
                  ) -> dict[str, list[dict[str, float]]]:
    """Per per-frame metric, per frame: :func:`effect_of` over the re-samplings where that
    frame's metric is finite."""
    out: dict[str, list[dict[str, float]]] = {}
    for metric, per_resample in values.items():
        ref = ideal.get(metric)
        if ref is None:
            continue
        arr = np.asarray(per_resample, dtype=np.float64)  # (K, frames)
        if arr.ndim != 2 or arr.shape[1] != len(ref):
            continue
        out[metric] = [effect_of(arr[:, f], float(ref[f]) if ref[f] is not None else math.nan)
                       for f in range(arr.shape[1])]
    return out


def resamples_needed(effect: Mapping[str, float], samples: np.ndarray, target_se: float) -> int:
    """K at which this effect's relative standard error reaches ``target_se`` (0: never
    needs more — undefined or zero)."""
    ok = samples[np.isfinite(samples)]
    mean = float(effect.get("effect", math.nan))
    if ok.size < 2 or not (math.isfinite(mean) and mean > 0):
        return 0
    cv = float(np.abs(ok - effect["ideal"]).std(ddof=1)) / mean
    return int(math.ceil((cv / target_se) ** 2))


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Scalar metrics and per-frame metrics (arrays become lists of floats)."""
    scalars: dict[str, float] = {}
    frames: dict[str, list[float]] = {}
    for k, v in metrics.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            frames[k] = [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
        else:
            scalars[k] = float(v)
    return scalars, frames


def measure(technique: Technique, raw: Outcome, prepared: Mapping[str, Any],
            evaluate: Callable[[Outcome], dict[str, Any]], settings: NoiseSettings, *,
            ideal: Mapping[str, float], frame_ideal: Mapping[str, list[float]],
            used: Mapping[str, str] | None = None, evaluate_many: EvaluateMany | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Run the pipeline and the evaluators on re-measurements of ``raw`` until every ``used``
    effect (``{metric: 'scalar' | 'frames'}``) is known to ``settings.target_se``, or K
    reaches ``settings.max_resamples``.

    The re-measurements are drawn here, in order, from one generator seeded with
    ``settings.seed``; K grows in steps decided from the effects measured so far only: the
    same data and the same K however they are evaluated. ``evaluate_many`` (payload arrays
    in, their metrics out, in order) evaluates a batch elsewhere, e.g. in worker processes.
    """
    model = technique.noise_model(raw.data)
    rng = np.random.default_rng(settings.seed)  # reproducible: the same re-samplings on every run
    used = dict(used or {})
    values: dict[str, list[float]] = {}
    frame_values: dict[str, list[list[float]]] = {}
    t0 = time.perf_counter()
    k, target = 0, settings.resamples
    history: list[int] = []
    # K grows as the effects ask: the bar's total follows it (shown on a terminal only)
    bar = tqdm(desc=f"noise reference of {raw.data.name}", unit="resample", total=target,
               disable=None if progress else True, leave=False)
    while True:
        draws = (technique.resample(raw.data, rng) for _ in range(target - k))  # drawn as consumed
        if evaluate_many is None:
            results: Iterable[dict[str, Any]] = (evaluate(Outcome(d, technique.run(d, prepared))) for d in draws)
        else:
            results = evaluate_many(d.payload_array for d in draws)
        for metrics in results:
            scalars, frames = split_metrics(metrics)
            for m, v in scalars.items():
                values.setdefault(m, []).append(v)
            for m, v in frames.items():
                frame_values.setdefault(m, []).append(v)
            k += 1
            bar.update(1)
            log.debug("noise reference of %s: re-sampling %d done", raw.data.name, k)
        history.append(k)
        needs = _needed(values, frame_values, ideal, frame_ideal, used, settings.target_se)
        need = max(needs.values(), default=0)
        # grow K for the effects the cap can resolve; one that would need more keeps its fixed
        # range whatever K up to the cap gives it, so it is not worth a re-sampling more
        reachable = max((n for n in needs.values() if n <= settings.max_resamples), default=0)
        if reachable <= k or k >= settings.max_resamples:
            break
        # at least two more (a step worth a process start), at most the cap
        target = min(settings.max_resamples, max(reachable, k + 2))
        bar.total = target
        bar.refresh()
    bar.close()
    seconds = time.perf_counter() - t0
    if need > k:
        beyond = sorted(m for m, n in needs.items() if n > k)
        log.info("noise reference of %s: K = %d; %s would need up to %d re-samplings for a %.0f%% standard error "
                 "(max_resamples %d): fixed where not reached", raw.data.name, k, ", ".join(beyond), need,
                 100 * settings.target_se, settings.max_resamples)
    return {"version": _VERSION, "model": model, "estimator": ESTIMATOR, "resamples": k, "steps": history,
            "resamples_needed": need, "seed": settings.seed, "seconds": seconds,
            "seconds_per_resample": seconds / max(k, 1), "values": values, "frame_values": frame_values}


def _needed(values: Mapping[str, list[float]], frame_values: Mapping[str, list[list[float]]],
            ideal: Mapping[str, float], frame_ideal: Mapping[str, list[float]], used: Mapping[str, str],
            target_se: float) -> dict[str, int]:
    """Per used effect (``metric`` or ``metric[frame]``), the K it needs (from the samples so far)."""
    needs: dict[str, int] = {}
    for metric, kind in used.items():
        if kind == "frames" and metric in frame_values and metric in frame_ideal:
            arr = np.asarray(frame_values[metric], float)
            for f, eff in enumerate(frame_effects({metric: frame_values[metric]}, frame_ideal)[metric]):
                needs[f"{metric}[{f}]"] = resamples_needed(eff, arr[:, f], target_se)
        elif metric in values:
            samples = np.asarray(values[metric], float)
            eff = effect_of(samples, ideal.get(metric, math.nan))
            needs[metric] = resamples_needed(eff, samples, target_se)
    return needs


def noise_reference(technique: Technique, raw: Outcome, prepared: Mapping[str, Any],
                    evaluate: Callable[[Outcome], dict[str, Any]], settings: NoiseSettings, *,
                    cache: ResultCache, key: Mapping[str, Any], ideal: Mapping[str, float],
                    frame_ideal: Mapping[str, list[float]], used: Mapping[str, str],
                    evaluate_many: EvaluateMany | None = None, progress: bool = False) -> NoiseReference:
    """The noise reference of ``raw`` (cached under ``key`` + the settings), or one that says
    why there is none when the technique has no noise model for the data and the mode is auto
    (mode on: a ConfigError)."""
    if settings.mode == "off":
        return NoiseReference.none("technique.noise_reference.mode=off")
    try:
        model = technique.noise_model(raw.data)
    except NotApplicable as exc:
        if settings.mode == "on":
            raise ConfigError(f"technique.noise_reference.mode=on but {exc}") from None
        log.warning("no counting-noise reference: %s (fixed tolerances apply)", exc)
        return NoiseReference.none(str(exc))
    # the model's own parameters (a gain, a dark level) are in its description: part of the key
    what = {"noise_reference": {**settings.describe(), "version": _VERSION, "used": dict(sorted(used.items()))},
            "model": model, **key}
    try:
        doc, hit = cache.get_or_compute_json(what, lambda: measure(
            technique, raw, prepared, evaluate, settings, ideal=ideal, frame_ideal=frame_ideal, used=used,
            evaluate_many=evaluate_many, progress=progress))
    except Exception as exc:  # noqa: BLE001 - the pipeline failed on a re-sampling
        if settings.mode == "on":
            raise
        reason = f"the pipeline failed on a re-sampling ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        log.warning("no counting-noise reference: %s (fixed tolerances apply)", reason)
        return NoiseReference.none(reason)
    if not hit:
        log.info("noise reference of %s: %d re-samplings in %.1f s (%s)", raw.data.name, doc["resamples"],
                 doc["seconds"], doc["model"])
    return NoiseReference.from_measurement(doc, cached=hit)
