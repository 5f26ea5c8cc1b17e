"""Quality gates: how well the raw data fit the declared setup, measured on the raw result.

A bound protects a raw science result. When the setup is wrong (a flipped image under its
PONI, a beam centre off by pixels, angles in radians read as degrees), the raw result is
garbage, the compressed one is compared with garbage and the thresholds come out looser. A
technique measures its gates once on the raw result (:meth:`lossbound.pipelines.base.Technique.gates`);
the study then passes, warns or refuses (``technique.gates.<name>.action``) before any
counting-noise reference or search is spent on it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from lossbound.core.errors import ConfigError

__all__ = ["ACTIONS", "GateCheck", "gate_settings"]

#: what a study does with a failed gate: ``refuse`` stops it in one line, ``warn`` records the
#: warning (log, MLflow, thresholds file, report) and goes on, ``off`` does not measure it
ACTIONS = ("refuse", "warn", "off")


@dataclasses.dataclass(frozen=True)
class GateCheck:
    """One gate's measurement on the raw result.

    ``value`` is what was measured (in ``unit``) and ``limit`` the configured limit;
    ``passed`` is None where the gate cannot be measured on these data (``detail`` says why).
    ``detail`` states the measurement in words; ``fix`` names the setting to check and the
    likely fix (said when the gate fails). ``figures`` holds the other numbers behind it
    (e.g. every orientation's score).
    """

    name: str
    value: float | None
    limit: float | list[float] | None  # a bound, or an allowed [low, high] range
    passed: bool | None
    unit: str = ""
    detail: str = ""
    fix: str = ""
    figures: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # plain Python types: the measurements are cached as JSON and written to YAML
        object.__setattr__(self, "passed", None if self.passed is None else bool(self.passed))
        object.__setattr__(self, "value", None if self.value is None else float(self.value))
        object.__setattr__(self, "limit", _plain(self.limit))
        object.__setattr__(self, "figures", _plain(dict(self.figures)))

    @property
    def limit_text(self) -> str:
        if isinstance(self.limit, (list, tuple)):
            return "–".join(f"{v:g}" for v in self.limit)
        return "none" if self.limit is None else f"{self.limit:g}"

    @property
    def value_text(self) -> str:
        return "n/a" if self.value is None else f"{self.value:.3g}{' ' + self.unit if self.unit else ''}"

    def record(self, action: str) -> dict[str, Any]:
        """Plain, YAML-able: what the thresholds file and the report keep."""
        status = "not measured" if self.passed is None else "passed" if self.passed else \
            ("refused" if action == "refuse" else "warning")
        return {"status": status, "action": action, "value": _plain(self.value), "limit": _plain(self.limit),
                "unit": self.unit, "detail": self.detail, **({"fix": self.fix} if self.passed is False else {}),
                **({"figures": dict(self.figures)} if self.figures else {})}


def gate_settings(defaults: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any] | None,
                  *, technique: str) -> dict[str, dict[str, Any]]:
    """The technique's gate defaults overridden by ``technique.gates`` (checked: an unknown
    gate or option, or an action other than refuse | warn | off, is a one-line error)."""
    config = dict(config or {})
    out = {name: dict(d) for name, d in defaults.items()}
    for name, over in config.items():
        if name not in out:
            raise ConfigError(f"technique.gates.{name}: unknown gate for {technique}; expected one of: "
                              f"{', '.join(sorted(out)) or 'none'}")
        if over is None:
            continue
        if isinstance(over, str):  # technique.gates.orientation=warn
            over = {"action": over}
        if not isinstance(over, Mapping):
            raise ConfigError(f"technique.gates.{name} must be a mapping or an action ({' | '.join(ACTIONS)}), "
                              f"got {over!r}")
        unknown = sorted(set(over) - set(out[name]))
        if unknown:
            raise ConfigError(f"technique.gates.{name}: unknown option(s) {', '.join(unknown)}; expected: "
                              f"{', '.join(out[name])}")
        out[name].update(over)
    for name, d in out.items():
        if d.get("action") not in ACTIONS:
            raise ConfigError(f"technique.gates.{name}.action must be one of {' | '.join(ACTIONS)}, "
                              f"got {d.get('action')!r}")
        for key, value in d.items():
            if key != "action" and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                        and math.isfinite(value) and value >= 0):
                raise ConfigError(f"technique.gates.{name}.{key} must be a non-negative number, got {value!r}")
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, str)) or v is None:
        return v
    if type(v).__name__ == "bool_":  # numpy's
        return bool(v)
    if isinstance(v, (int, float)) or (hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0):
        v = float(v)
        return None if not math.isfinite(v) else round(v, 6)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v
