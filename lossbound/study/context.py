"""The study context: everything a point needs besides its codec setting.

A context is described by a small JSON-able :class:`ContextSpec` (technique, dataset, cache
folder). :func:`context_for` builds it once per process — the dataset is read, the raw
result comes from the on-disk cache (computed there once), the evaluator references are
derived — so worker processes and later jobs rebuild the same context from the cache by key.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from lossbound.codecs import CodecSetting
from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Evaluator
from lossbound.core.errors import ConfigError
from lossbound.core.hashing import stable_hash
from lossbound.core.types import Dataset, Outcome
from lossbound.core.cache import ResultCache
from lossbound.criteria.noise_reference import NoiseReference, NoiseSettings, noise_reference, split_metrics
from lossbound.criteria.tolerance import Tolerances
from lossbound.pipelines import TECHNIQUES
from lossbound.pipelines.base import Technique


class Resampler(Protocol):
    """What a context needs of a process pool (:class:`lossbound.study.executor.WorkerPool`):
    its size, and a function that evaluates many re-sampled payloads in its processes."""

    workers: int

    def resampler(self, evaluate: Callable[[np.ndarray], dict[str, Any]]) -> Callable[..., Any]: ...

log = logging.getLogger(__name__)

#: what the evaluators' metrics mean (2: per-frame metrics, false indexings and lost frames
#: counted): part of every point id, so journaled points of another meaning are not reused
METRICS_VERSION = 2


@dataclasses.dataclass(frozen=True)
class ContextSpec:
    """What a study context is built from (plain, JSON-able, picklable).

    ``technique`` is the ``technique`` config section (name, pipeline, evaluators,
    tolerances); ``dataset`` the ``dataset`` section; ``cache_dir`` the raw-result cache.
    """

    technique: Mapping[str, Any]
    dataset: Mapping[str, Any]
    cache_dir: str | None = None

    @property
    def key(self) -> str:
        return stable_hash({"technique": self.technique, "dataset": self.dataset, "cache": self.cache_dir})


@dataclasses.dataclass
class RawPart:
    """A context before its counting-noise reference: what a re-sampling is evaluated with."""

    technique: Technique
    evaluators: dict[str, Evaluator]  # config key -> evaluator
    tolerances: Tolerances
    raw: Outcome
    prepared: dict[str, Any]
    references: dict[str, Any]
    raw_seconds: float
    raw_cached: bool
    raw_metrics: dict[str, float]
    #: per-frame metrics of the raw data against itself (one value per frame)
    raw_frame_metrics: dict[str, list[float]]
    noise_settings: NoiseSettings

    def evaluate(self, comp: Outcome) -> dict[str, Any]:
        """Every evaluator's metrics for ``comp`` against the raw outcome: floats, and
        per-frame metrics as lists of floats."""
        metrics: dict[str, Any] = {}
        for key, ev in self.evaluators.items():
            scalars, frames = split_metrics(ev.compare(self.raw, comp, self.references[key]))
            metrics.update(scalars)
            metrics.update(frames)
        return metrics

    def evaluate_split(self, comp: Outcome) -> tuple[dict[str, float], dict[str, list[float]]]:
        """:meth:`evaluate`, as scalar metrics and per-frame metrics."""
        return split_metrics(self.evaluate(comp))

    def evaluate_payload(self, payload: Any) -> dict[str, Any]:
        """The pipeline and every evaluator on the raw dataset with ``payload`` in place of its own."""
        data = self.raw.data.with_payload(payload)
        return self.evaluate(Outcome(data, self.technique.run(data, self.prepared)))


@dataclasses.dataclass
class StudyContext(RawPart):
    """A technique on one dataset, with the raw outcome computed once and its counting-noise
    reference; ``tolerances`` include the noise-referenced ranges."""

    spec: ContextSpec
    # counting-noise reference: model, K, seconds, per-metric values and effects; or why there is none
    noise: NoiseReference = dataclasses.field(default_factory=lambda: NoiseReference.none("not measured"))

    @property
    def data(self) -> Dataset:
        return self.raw.data

    @property
    def evaluator_config(self) -> Mapping[str, Any]:
        return self.spec.technique.get("evaluators") or {}

    @property
    def key(self) -> str:
        """What a point's science depends on besides its codec: dataset content, pipeline,
        evaluators. Tolerances are not in it: verdicts are re-derived from stored metrics."""
        return stable_hash({
            "dataset": self.data.checksum,
            "pipeline": self.technique.describe(),
            "evaluators": self.evaluator_config,
            "metrics_version": METRICS_VERSION,
            **data_key(self.technique, self.data),
        }, length=24)

    def point_id(self, setting: CodecSetting) -> str:
        spec = setting.spec
        # what the codec's spec fixes besides the setting (a pre-transform's parameters, the
        # filter's fixed options): a spec that changes must not reuse the old spec's points
        chain = {k: dict(v) for k, v in (("transform", spec.transform_kwargs), ("filter", spec.fixed_kwargs)) if v}
        return stable_hash({
            "dataset": self.data.checksum,
            "codec": setting.as_dict(),
            **({"chain": chain} if chain else {}),
            "pipeline": self.technique.describe(),
            "evaluators": self.evaluator_config,
            "metrics_version": METRICS_VERSION,
            **data_key(self.technique, self.data),
        })


def data_key(technique: Technique, data: Dataset) -> dict[str, Any]:
    """What the technique's result depends on besides the arrays and its config (empty for
    most: then ids are what they were before such a dependency existed)."""
    key = technique.data_key(data)
    return {"data": key} if key else {}


_CONTEXTS: dict[str, StudyContext] = {}
_RAW_PARTS: dict[str, RawPart] = {}

def forget_contexts() -> None:
    """Drop this process's contexts and raw parts: the next study rebuilds them as a new
    process would (from the disk cache only)."""
    _CONTEXTS.clear()
    _RAW_PARTS.clear()


def context_for(spec: ContextSpec, *, pool: "Resampler | None" = None, progress: bool = False) -> StudyContext:
    """The context of ``spec``, built once per process; ``pool``'s processes share the
    counting-noise reference when it is computed here (not cached)."""
    ctx = _CONTEXTS.get(spec.key)
    if ctx is None:
        ctx = _CONTEXTS[spec.key] = build_context(spec, pool=pool, progress=progress)
    return ctx


def build_evaluators(config: Mapping[str, Any]) -> dict[str, Evaluator]:
    """``{key: params}`` -> evaluators; ``params.evaluator`` names the registry entry when the
    key is not one (e.g. two ``image_quality`` evaluators with different prefixes)."""
    out: dict[str, Evaluator] = {}
    for key, params in config.items():
        params = dict(params or {})
        name = params.pop("evaluator", key)
        out[key] = EVALUATORS.get(name)(**params)
    return out


def raw_part(spec: ContextSpec, *, processes: int = 1, progress: bool = False) -> RawPart:
    """The raw part of ``spec``'s context, built once per process (the raw result from the
    cache); ``processes`` the technique may keep busy while it computes the raw result."""
    part = _RAW_PARTS.get(spec.key)
    if part is None:
        part = _RAW_PARTS[spec.key] = _build_raw_part(spec, processes=processes, progress=progress)
    return part


def _build_raw_part(spec: ContextSpec, *, processes: int, progress: bool = False) -> RawPart:
    tcfg = spec.technique
    technique: Technique = TECHNIQUES.get(tcfg["name"])(tcfg.get("pipeline") or {})
    technique.processes = max(1, processes)
    evaluators = build_evaluators(tcfg.get("evaluators") or {})
    tolerances = Tolerances(tcfg.get("tolerances"))
    scaling = {m: p for ev in evaluators.values() for m, p in ev.powers().items()}
    noise_settings = NoiseSettings.from_config(tcfg.get("noise_reference"))  # checked before any work
    t0 = time.perf_counter()
    data = technique.load(spec.dataset)

    def compute():
        log.info("%s: computing the raw result of %s (once; cached)", tcfg["name"], data.name)
        technique.progress = progress
        try:
            return technique.raw_result(data)
        finally:
            technique.progress = False

    cache = ResultCache(spec.cache_dir)
    prepared, result, hit = cache.get_or_compute(
        {"dataset": data.checksum, "pipeline": technique.describe(), **data_key(technique, data)}, compute
    )
    raw = Outcome(data, result)
    references = {key: ev.reference(raw) for key, ev in evaluators.items()}
    raw_seconds = time.perf_counter() - t0

    # Raw against itself: every tolerance metric must exist, and no two evaluators may write
    # the same metric name (one would silently overwrite the other).
    raw_metrics: dict[str, float] = {}
    raw_frames: dict[str, list[float]] = {}
    owner: dict[str, str] = {}
    for key, ev in evaluators.items():
        scalars, frames = split_metrics(ev.compare(raw, raw, references[key]))
        for k in (*scalars, *frames):
            if k in owner:
                raise ConfigError(
                    f"technique.evaluators: {owner[k]!r} and {key!r} both produce metric {k!r}; "
                    f"give one of them another prefix"
                )
            owner[k] = key
        raw_metrics.update(scalars)
        raw_frames.update(frames)
    if missing := tolerances.missing(raw_metrics, raw_frames):
        raise ConfigError(
            f"technique.tolerances: no evaluator produces {', '.join(missing)}; "
            f"available metrics: {', '.join(sorted([*raw_metrics, *raw_frames]))}"
        )
    tolerances = tolerances.bind(ideal=raw_metrics, frame_ideal=raw_frames, scaling=scaling)
    undefined = [c.metric for c in tolerances
                 if (math.isnan(raw_metrics[c.metric]) if c.metric in raw_metrics
                     else not np.isfinite(np.asarray(raw_frames[c.metric], float)).any())]
    if undefined:
        log.warning("criteria not applicable to %s (undefined even for the raw data against itself): %s",
                    data.name, ", ".join(undefined))
        tolerances = tolerances.without(undefined)
    return RawPart(technique=technique, evaluators=evaluators, tolerances=tolerances, raw=raw, prepared=prepared,
                   references=references, raw_seconds=raw_seconds, raw_cached=hit, raw_metrics=raw_metrics,
                   noise_settings=noise_settings, raw_frame_metrics=raw_frames)


def build_context(spec: ContextSpec, *, pool: "Resampler | None" = None, progress: bool = False) -> StudyContext:
    """``spec``'s context; the raw result keeps ``pool.workers`` cores busy, and the pool's
    processes share the counting-noise re-samplings (when the cache lets them read the raw result)."""
    part = raw_part(spec, processes=pool.workers if pool is not None else 1, progress=progress)
    technique, raw, tolerances, settings = part.technique, part.raw, part.tolerances, part.noise_settings
    noise = NoiseReference.none("no tolerance has a noise factor")
    if tolerances.noise_factors:
        evaluate_many = None
        if pool is not None and spec.cache_dir:  # its processes read the raw result from the cache
            evaluate_many = pool.resampler(part.evaluate_payload)
        noise = noise_reference(
            technique, raw, part.prepared, part.evaluate, settings, cache=ResultCache(spec.cache_dir),
            key={"dataset": raw.data.checksum, "pipeline": technique.describe(),
                 "evaluators": spec.technique.get("evaluators") or {}, **data_key(technique, raw.data)},
            ideal=part.raw_metrics, frame_ideal=part.raw_frame_metrics, used=tolerances.noise_metrics(),
            evaluate_many=evaluate_many, progress=progress)
        if noise.available:
            # once, for all readers
            noise = noise.with_effects(part.raw_metrics, part.raw_frame_metrics)
            tolerances = tolerances.with_noise(noise.effects, frame_noise=noise.frame_effects,
                                               target_se=settings.target_se)
            for metric, why in tolerances.noise_missing.items():
                if metric in tolerances.not_applicable:
                    continue
                log.warning("%s: no usable counting-noise yardstick for %s (%s): its fixed range applies",
                            raw.data.name, metric, why)
    checks = technique.noise_checks(raw.data)
    if checks.get("warning"):
        log.warning("%s: %s", raw.data.name, checks["warning"])
    noise = dataclasses.replace(noise, checks=checks)
    if not (v := tolerances.check(part.raw_metrics, part.raw_frame_metrics)).passed:
        log.warning("raw data compared with itself fails the tolerances (%s)", "; ".join(v.failures))
    fields = {f.name: getattr(part, f.name) for f in dataclasses.fields(RawPart)}
    return StudyContext(**{**fields, "tolerances": tolerances}, spec=spec, noise=noise)
