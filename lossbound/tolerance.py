"""Acceptance criteria: metric ranges that a compressed point must stay inside."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from lossbound.errors import ConfigError


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

    def __init__(self, config: Mapping[str, Mapping[str, Any]] | None) -> None:
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
        self.criteria: tuple[Criterion, ...] = tuple(criteria)

    def check(self, metrics: Mapping[str, float]) -> Verdict:
        failures = [reason for c in self.criteria if (reason := c.check(metrics.get(c.metric)))]
        return Verdict(not failures, tuple(failures))

    def missing(self, metrics: Mapping[str, float]) -> list[str]:
        """Criteria whose metric no evaluator produces (a configuration mistake)."""
        return [c.metric for c in self.criteria if c.metric not in metrics]

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            c.metric: {k: v for k, v in (("min", c.min), ("max", c.max)) if v is not None}
            for c in self.criteria
        }

    def __iter__(self):
        return iter(self.criteria)
