"""Acceptance criteria: metric ranges that a compressed point must stay inside.

A range is fixed (``{min: 0.95}``) or referenced to the measurement's own counting noise
(``{min: 0.95, noise: 0.5}``): where a noise reference exists (the metric's spread over
Poisson re-samplings of the raw data, :mod:`lossbound.study.noise_reference`), the limit is
``ideal -/+ f * noise effect`` — the compression may change the metric by at most ``f`` times
what counting noise alone changes it — and the fixed range applies only where it does not.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

from lossbound.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class NoiseLimit:
    """Where a criterion's range came from: ``ideal -/+ factor * effect``.

    ``effect`` is the mean ``|metric - ideal|`` over the Poisson re-samplings of the raw data
    (``effect_sd`` its standard error), ``fixed`` the configured range it replaces.
    """

    factor: float
    effect: float
    effect_sd: float
    ideal: float
    resamples: int
    fixed: tuple[float | None, float | None] = (None, None)


@dataclasses.dataclass(frozen=True)
class Criterion:
    metric: str
    min: float | None = None
    max: float | None = None
    noise: NoiseLimit | None = None

    def check(self, value: float | None) -> str | None:
        """None when ``value`` is inside the range, else a short reason."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{self.metric} is undefined"
        if self.min is not None and value < self.min:
            return f"{self.metric}={value:.4g} < {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{self.metric}={value:.4g} > {self.max:g}"
        return None

    def margin(self, value: float | None, *, ideal: float | None = None) -> float | None:
        """Signed distance inside the range (> 0 inside, < 0 outside; None if undefined).

        With ``ideal`` (the metric of the raw data against itself: 0 for errors, 1 for Dice)
        the margin is ``log(allowed damage / damage)``, damage being the distance from the
        ideal: damage grows about as a power of the codec's bound, so the margin is about
        linear in log(bound), which the threshold search interpolates. Without it, upper
        limits on positive metrics use ``log(max / value)``, others the relative difference.
        """
        if value is None or not math.isfinite(value):
            return None
        margins = []
        for limit, sign in ((self.max, 1.0), (self.min, -1.0)):
            if limit is None:
                continue
            allowed = sign * (limit - ideal) if ideal is not None and math.isfinite(ideal) else None
            if allowed is not None and allowed > 0:
                damage = max(sign * (value - ideal), allowed * 1e-9)
                margins.append(math.log(allowed / damage))
            elif sign > 0 and limit > 0 and value > 0:
                margins.append(math.log(limit / value))
            else:
                margins.append(sign * (limit - value) / max(abs(limit), 1e-12))
        return min(margins) if margins else None

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:.4g}")
        if self.max is not None:
            parts.append(f"<= {self.max:.4g}")
        text = f"{self.metric} {' and '.join(parts)}"
        if self.noise is not None:
            text += f" ({self.noise.factor:g} x counting-noise effect {self.noise.effect:.3g})"
        return text


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    failures: tuple[str, ...]


class Tolerances:
    """A set of criteria built from ``{metric: {min: x, max: y}}``.

    Parameters
    ----------
    config : mapping
        The technique's ``tolerances`` section. Each value needs ``min`` and/or ``max``.
    """

    def __init__(self, config: Mapping[str, Mapping[str, Any]] | None, *,
                 not_applicable: Iterable[str] = (),
                 noise: Mapping[str, Mapping[str, float]] | None = None,
                 max_relative_se: float = math.inf) -> None:
        self.config = dict(config or {})
        self.not_applicable = frozenset(not_applicable)
        self.noise = dict(noise or {})
        self.max_relative_se = float(max_relative_se)
        criteria = []
        #: metrics with a noise-referenced range but no usable reference (fixed range used)
        self.noise_missing: dict[str, str] = {}
        for metric, spec in (config or {}).items():
            if spec is None:  # `technique.tolerances.recon_psnr=null` switches a criterion off
                continue
            if not isinstance(spec, Mapping) or not set(spec) <= {"min", "max", "noise"} or not spec:
                raise ConfigError(
                    f"tolerance {metric!r}: expected a mapping with 'min', 'max' and/or 'noise', got {spec!r}"
                )
            bounds = {key: _number(metric, key, spec.get(key)) for key in ("min", "max", "noise")}
            if bounds["noise"] is not None and not bounds["noise"] > 0:
                raise ConfigError(f"tolerance {metric}.noise: expected a factor > 0, got {spec['noise']!r}")
            criterion = self._criterion(metric, bounds)
            if criterion is not None:
                criteria.append(criterion)
        self._all: tuple[Criterion, ...] = tuple(criteria)
        # Criteria whose metric is undefined on this dataset even for the raw data against
        # itself (no powder peak in an empty-beam frame): not checked, still recorded.
        self.criteria: tuple[Criterion, ...] = tuple(c for c in criteria if c.metric not in self.not_applicable)

    def _criterion(self, metric: str, bounds: Mapping[str, float | None]) -> Criterion | None:
        lo, hi, factor = bounds["min"], bounds["max"], bounds["noise"]
        if factor is None:
            return Criterion(metric, lo, hi)
        ref = self.noise.get(metric)
        effect = None if ref is None else ref.get("effect")
        why = None
        if effect is None or not math.isfinite(effect) or not math.isfinite(ref.get("ideal", math.nan)):
            why = "no noise reference" if ref is None else "undefined on the re-samplings"
        elif effect > 0 and not ref.get("effect_sd", math.inf) <= self.max_relative_se * effect:
            why = (f"noise effect {effect:.3g} +- {ref.get('effect_sd', math.nan):.2g} too uncertain with "
                   f"K={ref.get('resamples')} (standard error above {self.max_relative_se:g} of it)")
        if why is not None:
            self.noise_missing[metric] = why
            if lo is None and hi is None:
                return None  # noise-only criterion without a usable reference: nothing to check
            return Criterion(metric, lo, hi)
        ideal, allowed = float(ref["ideal"]), factor * float(effect)
        two_sided = (lo is None) == (hi is None)
        limit = NoiseLimit(factor=factor, effect=float(effect), effect_sd=float(ref.get("effect_sd", math.nan)),
                           ideal=ideal, resamples=int(ref.get("resamples", 0)), fixed=(lo, hi))
        return Criterion(metric, ideal - allowed if (lo is not None or two_sided) else None,
                         ideal + allowed if (hi is not None or two_sided) else None, noise=limit)

    def without(self, metrics: Iterable[str]) -> "Tolerances":
        """The same tolerances with ``metrics`` marked not applicable (skipped by checks)."""
        return Tolerances(self.config, not_applicable=self.not_applicable | set(metrics), noise=self.noise,
                          max_relative_se=self.max_relative_se)

    def with_noise(self, noise: Mapping[str, Mapping[str, float]], *, max_relative_se: float = math.inf
                   ) -> "Tolerances":
        """The same tolerances with counting-noise effects ``{metric: {effect, effect_sd, ideal,
        resamples}}``: criteria with a ``noise`` factor take their range from them, unless the
        effect's standard error exceeds ``max_relative_se`` of it (too few re-samplings to tell)."""
        return Tolerances(self.config, not_applicable=self.not_applicable, noise=noise,
                          max_relative_se=max_relative_se)

    @property
    def noise_factors(self) -> dict[str, float]:
        """Metrics configured with a noise-referenced range, and their factor."""
        return {m: float(s["noise"]) for m, s in self.config.items() if isinstance(s, Mapping) and s.get("noise")}

    def noise_limits(self) -> dict[str, dict[str, Any]]:
        """Per noise-referenced criterion: the noise effect, the derived range, the fixed one."""
        out: dict[str, dict[str, Any]] = {}
        for c in self._all:
            if c.noise is not None:
                out[c.metric] = {"factor": c.noise.factor, "noise_effect": c.noise.effect,
                                 "noise_effect_se": c.noise.effect_sd, "ideal": c.noise.ideal,
                                 "min": c.min, "max": c.max, "fixed_min": c.noise.fixed[0],
                                 "fixed_max": c.noise.fixed[1], "resamples": c.noise.resamples}
        for metric, why in self.noise_missing.items():
            if metric not in self.not_applicable:
                out[metric] = {"factor": self.noise_factors.get(metric), "fixed_used": why}
        return out

    def check(self, metrics: Mapping[str, float]) -> Verdict:
        failures = [reason for c in self.criteria if (reason := c.check(metrics.get(c.metric)))]
        return Verdict(not failures, tuple(failures))

    def margins(self, metrics: Mapping[str, float], *, ideal: Mapping[str, float] | None = None
                ) -> dict[str, float | None]:
        """:meth:`Criterion.margin` of every criterion (``ideal``: raw-vs-raw metrics)."""
        ideal = ideal or {}
        return {c.metric: c.margin(metrics.get(c.metric), ideal=ideal.get(c.metric)) for c in self.criteria}

    def missing(self, metrics: Mapping[str, float]) -> list[str]:
        """Criteria whose metric no evaluator produces (a configuration mistake)."""
        return [m for m, spec in self.config.items() if spec is not None and m not in metrics]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Every configured criterion as configured (not-applicable ones included, noise factors
        rather than the ranges derived from one dataset's noise: datasets measured under the
        same configuration combine)."""
        out = {}
        for metric, spec in self.config.items():
            if spec is None:
                continue
            out[metric] = {k: float(spec[k]) for k in ("min", "max", "noise") if spec.get(k) is not None}
        return out

    def __iter__(self):
        return iter(self.criteria)


def _number(metric: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"tolerance {metric}.{key}: expected a number, got {value!r}") from None
