"""Threshold search strategies: which codec values to evaluate next.

A strategy is stateless: given every evaluation already recorded for one codec curve
(``known``: value -> PointResult, from this study, earlier runs or other jobs) and the values
already under way, it proposes the next values, best first; an empty proposal with nothing
under way means the search is done. So a resumed or parallel study simply continues.

Values live on the "loss axis" ``t = ±log(value)``, oriented so that larger ``t`` means more
loss (``CodecSetting.loss_grows_with_value``). The threshold is the largest ``t`` that passed
with every smaller tested ``t`` passing too (see :mod:`lossbound.results.thresholds`).
"""
from __future__ import annotations

import abc
import math
from typing import Any, Iterable, Mapping, Sequence

from lossbound.core.errors import ConfigError
from lossbound.core.registry import Registry
from lossbound.core.types import PointResult
from lossbound.criteria.tolerance import Tolerances

#: strategies by name; each is a module of this package (adding one is adding a file and a
#: ``conf/search/<name>.yaml``)
SEARCHES: Registry[type["Search"]] = Registry("search strategy", package="lossbound.search")

# Interior proposals snap to this log2 grid, so repeated and resumed studies propose the same
# values (and reuse them) and the values read well (e.g. 45.25, 53.82, 64).
_SNAP_STEPS_PER_OCTAVE = 8


def _positive_list(name: str, values: Any) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of numbers, got {values!r}") from None
    if not out or any(not (math.isfinite(v) and v > 0) for v in out):
        raise ConfigError(f"{name} must hold finite positive numbers, got {values!r}")
    return out


class Search(abc.ABC):
    """One codec curve's search (built per codec, cheap)."""

    def __init__(self, *, grows: bool, integer: bool, tolerances: Tolerances,
                 ideal: Mapping[str, float] | None = None) -> None:
        self.grows = grows          # larger value = more loss
        self.integer = integer      # values must be integers (e.g. ZFP precision)
        self.tolerances = tolerances
        self.ideal = dict(ideal or {})  # metrics of the raw data against itself

    # -- loss axis ---------------------------------------------------------------------------
    def t(self, value: float) -> float:
        return math.log(value) if self.grows else -math.log(value)

    def value(self, t: float) -> float:
        v = math.exp(t if self.grows else -t)
        if self.integer:
            return float(max(1, round(v)))
        return float(f"{v:.4g}")

    @abc.abstractmethod
    def propose(self, known: Mapping[float, PointResult], pending: Iterable[float]) -> list[float]:
        """Values to evaluate next, best first (none already known or pending)."""

    def steps_left(self, known: Mapping[float, PointResult], pending: Iterable[float]) -> float:
        """About how many evaluations this curve still needs one after another (for
        scheduling only: longer chains are started first, so workers do not end idle
        behind one long search). Default: one round, if anything is left to propose."""
        return 1.0 if self.propose(known, pending) else 0.0

    def points_left(self, known: Mapping[float, PointResult], pending: Iterable[float]) -> float:
        """About how many evaluations this curve still needs in all (the progress bar's total).
        Default: :meth:`steps_left`, a search that evaluates one value per step."""
        return self.steps_left(known, pending)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name}

    @classmethod
    @abc.abstractmethod
    def from_config(cls, options: Mapping[str, Any], *, grid_values: Sequence[float] | None,
                    **common: Any) -> "Search":
        """The strategy from its ``search`` options (``strategy`` removed; a codec's own
        ``bracket`` and ``limits`` already merged in); ``common``: grows, integer, tolerances,
        ideal."""

    name = ""


def make_search(config: Mapping[str, Any], *, grows: bool, integer: bool, tolerances: Tolerances,
                grid_values: Sequence[float] | None, bracket: Sequence[float] | None = None,
                limits: Sequence[float] | None = None, ideal: Mapping[str, float] | None = None) -> Search:
    """The search of one codec curve from the ``search`` config group.

    ``grid_values`` are the codec's ``bounds`` (or ``sweep.bounds``); ``bracket`` and
    ``limits`` a codec's own, overriding ``search.bracket`` and ``search.limits`` (a value
    outside a codec's meaningful range is never evaluated).
    """
    cfg = dict(config or {})
    cls = SEARCHES.get(cfg.pop("strategy", "bisect"))
    if bracket is not None:
        cfg["bracket"] = bracket
    if limits is not None:
        cfg["limits"] = limits
    return cls.from_config(cfg, grid_values=grid_values, grows=grows, integer=integer, tolerances=tolerances,
                           ideal=ideal)


def non_monotonic(points: Iterable[PointResult], *, grows: bool) -> list[float]:
    """Values that passed although a less lossy value failed (never trusted)."""
    order = sorted((p for p in points if p.value is not None), key=lambda p: p.value if grows else -p.value)
    seen_fail = False
    late: list[float] = []
    for p in order:
        if not p.passed:
            seen_fail = True
        elif seen_fail:
            late.append(p.value)
    return late
