"""Acceptance criteria: metric ranges that a compressed point must stay inside."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

from lossbound.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Criterion:
    metric: str
    min: float | None = None
    max: float | None = None

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
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{self.metric} {' and '.join(parts)}"


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
                 not_applicable: Iterable[str] = ()) -> None:
        self.config = dict(config or {})
        self.not_applicable = frozenset(not_applicable)
        criteria = []
        for metric, spec in (config or {}).items():
            if spec is None:  # `technique.tolerances.recon_psnr=null` switches a criterion off
                continue
            if not isinstance(spec, Mapping) or not set(spec) <= {"min", "max"} or not spec:
                raise ConfigError(
                    f"tolerance {metric!r}: expected a mapping with 'min' and/or 'max', got {spec!r}"
                )
            bounds = {}
            for key in ("min", "max"):
                value = spec.get(key)
                if value is not None:
                    try:
                        bounds[key] = float(value)
                    except (TypeError, ValueError):
                        raise ConfigError(
                            f"tolerance {metric}.{key}: expected a number, got {value!r}"
                        ) from None
            criteria.append(Criterion(metric, **bounds))
        self._all: tuple[Criterion, ...] = tuple(criteria)
        # Criteria whose metric is undefined on this dataset even for the raw data against
        # itself (no powder peak in an empty-beam frame): not checked, still recorded.
        self.criteria: tuple[Criterion, ...] = tuple(c for c in criteria if c.metric not in self.not_applicable)

    def without(self, metrics: Iterable[str]) -> "Tolerances":
        """The same tolerances with ``metrics`` marked not applicable (skipped by checks)."""
        return Tolerances(self.config, not_applicable=self.not_applicable | set(metrics))

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
        return [c.metric for c in self._all if c.metric not in metrics]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Every configured criterion (not-applicable ones included: datasets measured under
        the same configuration combine)."""
        return {
            c.metric: {k: v for k, v in (("min", c.min), ("max", c.max)) if v is not None}
            for c in self._all
        }

    def __iter__(self):
        return iter(self.criteria)
