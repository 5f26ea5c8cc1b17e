"""The spread of each downstream metric from counting statistics alone.

The technique's pipeline runs on K re-measurements of the raw data drawn from its noise model
(``Poisson(counts)`` for count data, a documented equivalent otherwise:
:meth:`pipelines.base.Technique.resample`), and every evaluator compares each with the raw
result exactly as it compares a compressed one. The *noise effect* of a metric is the mean
``|metric - ideal|`` over the K re-samplings (ideal: the raw data against itself), with its
standard error. A criterion with a ``noise`` factor ``f`` then allows the compression to
change the metric by at most ``f`` times that (:class:`lossbound.study.tolerance.Tolerances`).

Computed once per dataset, pipeline, evaluators, noise model (with its parameters), K and seed,
and cached beside the raw results when a cache folder is configured (``paths.cache_dir``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from lossbound.core.errors import ConfigError, NotApplicable
from lossbound.core.types import Outcome
from lossbound.study.cache import ResultCache
from pipelines.base import Technique

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")

# re-sampled payloads in, each one's metrics out, in order
EvaluateMany = Callable[[Iterator[np.ndarray]], Iterable[dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class NoiseSettings:
    """``technique.noise_reference``: ``mode`` auto (on where the technique has a noise model
    for the data) | on (required) | off; ``resamples`` K; ``seed``."""

    mode: str = "auto"
    resamples: int = 5
    seed: int = 0
    # a noise effect known no better than this (standard error / effect) is no yardstick:
    # its criterion keeps the fixed range
    max_relative_se: float = 0.5

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "NoiseSettings":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"mode", "resamples", "seed", "max_relative_se"}
        if unknown:
            raise ConfigError(f"technique.noise_reference: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"expected mode, resamples, seed, max_relative_se")
        mode = {True: "on", False: "off"}.get(cfg.get("mode"), cfg.get("mode", "auto"))
        if mode not in MODES:
            raise ConfigError(f"technique.noise_reference.mode must be one of {', '.join(MODES)}, got {mode!r}")
        try:
            k, seed = int(cfg.get("resamples", 5)), int(cfg.get("seed", 0))
        except (TypeError, ValueError):
            raise ConfigError(f"technique.noise_reference: resamples and seed must be integers, got {cfg}") from None
        if k < 2:
            raise ConfigError(f"technique.noise_reference.resamples must be >= 2 (a spread needs two), got {k}")
        try:
            rel = float(cfg.get("max_relative_se", 0.5))
        except (TypeError, ValueError):
            rel = math.nan
        if not rel > 0:
            raise ConfigError(f"technique.noise_reference.max_relative_se must be a number > 0, "
                              f"got {cfg.get('max_relative_se')!r}")
        return cls(mode, k, seed, rel)


def noise_effects(values: Mapping[str, list[float]], ideal: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per metric: mean and standard error of ``|value - ideal|`` over the re-samplings
    (NaN where the metric is undefined on any of them)."""
    out = {}
    for metric, vals in values.items():
        v = np.asarray(vals, dtype=np.float64)
        ref = ideal.get(metric, math.nan)
        if v.size == 0 or not np.isfinite(v).all() or not math.isfinite(ref):
            effect = sd = math.nan
        else:
            damage = np.abs(v - ref)
            effect = float(damage.mean())
            sd = float(damage.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
        out[metric] = {"effect": effect, "effect_sd": sd, "ideal": float(ref), "resamples": int(v.size)}
    return out


def measure(technique: Technique, raw: Outcome, prepared: Mapping[str, Any],
            evaluate: Callable[[Outcome], dict[str, float]], settings: NoiseSettings, *,
            evaluate_many: EvaluateMany | None = None) -> dict[str, Any]:
    """Run the pipeline and the evaluators on ``settings.resamples`` re-measurements of ``raw``.

    The re-measurements are drawn here, in order, from one generator seeded with
    ``settings.seed``: the same data however they are evaluated. ``evaluate_many`` (payload
    arrays in, their metrics out, in order) evaluates them elsewhere, e.g. in worker processes;
    by default each runs here, one after the other.
    """
    model = technique.noise_model(raw.data)
    rng = np.random.default_rng(settings.seed)  # reproducible: the same re-samplings on every run
    draws = (technique.resample(raw.data, rng) for _ in range(settings.resamples))  # drawn as consumed
    if evaluate_many is None:
        results: Iterable[dict[str, float]] = (
            evaluate(Outcome(data, technique.run(data, prepared))) for data in draws)
    else:
        results = evaluate_many(data.payload_array for data in draws)
    values: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for i, metrics in enumerate(results):
        for k, v in metrics.items():
            values.setdefault(k, []).append(float(v))
        log.info("noise reference of %s: re-sampling %d/%d done", raw.data.name, i + 1, settings.resamples)
    seconds = time.perf_counter() - t0
    return {"model": model, "resamples": settings.resamples, "seed": settings.seed, "seconds": seconds,
            "seconds_per_resample": seconds / settings.resamples, "values": values}


def noise_reference(technique: Technique, raw: Outcome, prepared: Mapping[str, Any],
                    evaluate: Callable[[Outcome], dict[str, float]], settings: NoiseSettings, *,
                    cache: ResultCache, key: Mapping[str, Any],
                    evaluate_many: EvaluateMany | None = None) -> dict[str, Any]:
    """The noise reference of ``raw`` (cached under ``key`` + the settings), or
    ``{"unavailable": reason}`` when the technique has no noise model for the data and the
    mode is auto (mode on: a ConfigError)."""
    if settings.mode == "off":
        return {"unavailable": "technique.noise_reference.mode=off"}
    try:
        model = technique.noise_model(raw.data)
    except NotApplicable as exc:
        if settings.mode == "on":
            raise ConfigError(f"technique.noise_reference.mode=on but {exc}") from None
        log.warning("no counting-noise reference: %s (fixed tolerances apply)", exc)
        return {"unavailable": str(exc)}
    # the model's own parameters (a gain, a dark level) are in its description: part of the key
    what = {"noise_reference": {"resamples": settings.resamples, "seed": settings.seed}, "model": model, **key}
    try:
        doc, hit = cache.get_or_compute_json(what, lambda: measure(technique, raw, prepared, evaluate, settings,
                                                                      evaluate_many=evaluate_many))
    except Exception as exc:  # noqa: BLE001 - the pipeline failed on a re-sampling
        if settings.mode == "on":
            raise
        reason = f"the pipeline failed on a re-sampling ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        log.warning("no counting-noise reference: %s (fixed tolerances apply)", reason)
        return {"unavailable": reason}
    doc = dict(doc, cached=hit)
    if not hit:
        log.info("noise reference of %s: %d re-samplings in %.1f s (%s)", raw.data.name, doc["resamples"],
                 doc["seconds"], doc["model"])
    return doc
