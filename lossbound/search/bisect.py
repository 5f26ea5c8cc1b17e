"""``search=bisect`` (default): the largest passing value to within a ratio, in log space."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from lossbound.core.errors import ConfigError
from lossbound.core.types import PointResult
from lossbound.search.base import _SNAP_STEPS_PER_OCTAVE, SEARCHES, Search, _positive_list


@SEARCHES.register("bisect")
class BisectSearch(Search):
    """Largest passing value, to within a ratio ``resolution``, in log space.

    Parameters
    ----------
    bracket : [low, high] or None
        Values to start from: the least lossy first, the other once it passed; None starts at
        ``start`` and expands.
    start, expand : float
        Without a bracket: the first value, and the factor of each expansion step. With a
        bracket that does not contain the threshold, the search expands beyond it likewise.
    limits : [min, max]
        Never evaluate outside; a threshold at a limit is reported as such.
    resolution : float
        Stop when passing and failing values are at most this ratio apart (default √2).
    interpolate : int
        Evaluations (per curve) that may use interpolation of the criteria's margins in
        log space before plain bisection takes over. Each interpolation proposes a pair of
        values straddling the predicted crossing by ``resolution``, which often closes the
        bracket at once.
    max_evaluations : int
        Hard cap per curve.
    verify : int
        Once the bracket is closed, this many less lossy values must have passed, one of them
        at most half as lossy as the threshold (``value / 2``, or ``2 value`` where less is
        lossier); the search evaluates what is missing. A verification value that fails moves
        the bracket below it and the search goes on, so a pass above a failure cannot make the
        threshold. 0 turns it off.
    """

    name = "bisect"

    def __init__(self, *, bracket: Sequence[float] | None = (2, 2048), start: float = 16.0,
                 expand: float = 4.0, limits: Sequence[float] = (1e-6, 1e9),
                 resolution: float = math.sqrt(2), interpolate: int = 6, max_evaluations: int = 16,
                 verify: int = 2, **kw: Any) -> None:
        super().__init__(**kw)
        if bracket is not None:
            bracket = _positive_list("search.bracket", bracket)
            if len(bracket) != 2 or bracket[0] >= bracket[1]:
                raise ConfigError(f"search.bracket must be [low, high] with low < high, got {bracket}")
        self.bracket = bracket
        self.start = _positive_list("search.start", [start])[0]
        self.expand = float(expand)
        if not self.expand > 1:
            raise ConfigError(f"search.expand must be > 1, got {expand!r}")
        lim = _positive_list("search.limits", limits)
        if len(lim) != 2 or lim[0] >= lim[1]:
            raise ConfigError(f"search.limits must be [min, max] with min < max, got {limits!r}")
        self.limits = lim
        self.resolution = float(resolution)
        if not self.resolution > 1:
            raise ConfigError(f"search.resolution must be > 1 (a ratio), got {resolution!r}")
        self.interpolate = int(interpolate)
        self.max_evaluations = int(max_evaluations)
        if self.max_evaluations < 2:
            raise ConfigError(f"search.max_evaluations must be >= 2, got {max_evaluations!r}")
        self.verify = int(verify)
        if self.verify < 0:
            raise ConfigError(f"search.verify must be >= 0, got {verify!r}")

    def describe(self):
        return {"strategy": self.name, "bracket": self.bracket, "start": self.start, "expand": self.expand,
                "limits": self.limits, "resolution": self.resolution, "interpolate": self.interpolate,
                "max_evaluations": self.max_evaluations, "verify": self.verify}

    # -- helpers -----------------------------------------------------------------------------
    def _inside(self, v: float) -> bool:
        return self.limits[0] <= v <= self.limits[1]

    def _clamp(self, v: float) -> float:
        """An expansion step that leaves the limits lands on the limit (evaluated once)."""
        return min(max(v, self.limits[0]), self.limits[1])

    def _fresh(self, values: Iterable[float], skip: set[float]) -> list[float]:
        out: list[float] = []
        for v in values:
            if self._inside(v) and v not in skip and v not in out:
                out.append(v)
        return out

    def _snap(self, t: float, how: str = "round") -> float:
        """The value at grid point nearest ``t`` (``how``: 'round', 'floor' or 'ceil' on the
        loss axis); integer modes round to integers instead."""
        if self.integer:
            return self.value(t)
        k = {"round": round, "floor": math.floor, "ceil": math.ceil}[how](t / math.log(2) * _SNAP_STEPS_PER_OCTAVE)
        return self.value(k * math.log(2) / _SNAP_STEPS_PER_OCTAVE)

    def bracket_state(self, known: Mapping[float, PointResult]) -> tuple[float | None, float | None]:
        """(lo, hi) on the loss axis: the last pass of the passing run from the least lossy
        end, and the first failure after it (None where there is none)."""
        lo = hi = None
        for v in sorted(known, key=self.t):
            if known[v].passed:
                if hi is None:
                    lo = self.t(v)
            elif hi is None:
                hi = self.t(v)
                break
        return lo, hi

    def done(self, known: Mapping[float, PointResult]) -> bool:
        lo, hi = self.bracket_state(known)
        return lo is not None and hi is not None and hi - lo <= math.log(self.resolution) + 1e-9

    def at_limit(self, value: float) -> bool:
        """Nothing less lossy than ``value`` can be evaluated (the limit, or 1 for integers)."""
        below = self._clamp(self.value(self.t(value) - math.log(self.expand)))
        return below == value or not self.t(below) < self.t(value)

    def verification(self, known: Mapping[float, PointResult], skip: Iterable[float] = ()) -> list[float]:
        """Less lossy values still to evaluate to confirm a closed bracket's threshold (see
        ``verify``): at most half as lossy first, then one between; those outside the limits
        or already known are never proposed (such a threshold stays unconfirmed)."""
        lo, hi = self.bracket_state(known)
        if self.verify == 0 or lo is None or hi is None:
            return []
        below = [self.t(v) for v, p in known.items() if p.passed and self.t(v) < lo - 1e-9]
        half = lo - math.log(2)
        skip = set(known) | set(skip)
        wanted: list[float] = []
        need_half = not any(t <= half + 1e-9 for t in below)
        if need_half:
            wanted.append(self._snap(half, "floor"))
        if len(below) + len(wanted) < self.verify:
            wanted.append(self._snap(lo - 0.5 * math.log(2), "floor"))
        # enough passes below but none half as lossy still needs the half-as-lossy one
        count = max(self.verify - len(below), int(need_half))
        return [v for v in self._fresh(wanted, skip) if self.t(v) < lo - 1e-9][:count]

    def confirmed(self, known: Mapping[float, PointResult]) -> bool:
        """The threshold has its ``verify`` less lossy passes, one at most half as lossy."""
        lo, hi = self.bracket_state(known)
        if lo is None:
            return False
        below = [self.t(v) for v, p in known.items() if p.passed and self.t(v) < lo - 1e-9]
        return len(below) >= self.verify and (self.verify == 0 or any(t <= lo - math.log(2) + 1e-9 for t in below))

    def steps_left(self, known, pending):
        """Bisection steps to close the bracket to ``resolution`` (log2 of its width in
        resolutions), plus the first round or an expansion step while it is open, plus the
        verification once it is closed."""
        if len(known) >= self.max_evaluations:
            return 0.0
        if self.done(known):
            return 1.0 if self.verification(known, pending) else 0.0
        res = math.log(self.resolution)
        lo, hi = self.bracket_state(known)
        if lo is not None and hi is not None:
            return math.log2(max((hi - lo) / res, 1.0))
        if not known and self.bracket:
            return 1.0 + math.log2(max((self.t(self.bracket[1]) - self.t(self.bracket[0])) / res, 1.0))
        return 1.0 + math.log2(max(math.log(self.expand) / res, 1.0))

    def propose(self, known, pending):
        pending = list(pending)
        skip = set(known) | set(pending)
        if len(known) + len(pending) >= self.max_evaluations:
            return []
        if not known:
            # the least lossy end first: the lossier end is worth an evaluation only once it passed
            return [] if pending else self._fresh(sorted(self.bracket or [self.start], key=self.t)[:1], skip)
        lo, hi = self.bracket_state(known)
        step = math.log(self.expand)
        if lo is None:  # the least lossy value tried failed: expand towards less loss
            if self.bracket and self.bracket[0] not in known:
                return self._fresh([self.bracket[0]], skip)
            return self._fresh([self._clamp(self.value(min(self.t(v) for v in known) - step))], skip)
        if hi is None:  # no failure above the passes: expand towards more loss
            if self.bracket and self.bracket[1] not in known:
                return self._fresh([self.bracket[1]], skip)
            return self._fresh([self._clamp(self.value(max(self.t(v) for v in known) + step))], skip)
        res = math.log(self.resolution)
        width = hi - lo
        if width <= res + 1e-9:  # closed: confirm it with less lossy values
            return self.verification(known, pending)
        if any(lo < self.t(v) < hi for v in pending):
            return []  # wait for what is under way inside the bracket
        # interpolation while it earns its keep; plain bisection after `interpolate` evaluations
        guess = self._crossing(known, lo, hi) if len(known) - 2 < self.interpolate else None
        if width <= 2 * res or (guess is not None and guess - lo <= res):
            # one step of `resolution` above the last pass closes the bracket either way
            return self._fresh([self._inside_bracket(lo + 0.999 * res, lo, hi, "floor")], skip)
        if guess is not None and hi - guess <= res:
            return self._fresh([self._inside_bracket(hi - 0.999 * res, lo, hi, "ceil")], skip)
        if guess is None:
            return self._fresh([self._inside_bracket(0.5 * (lo + hi), lo, hi, "round")], skip)
        # A pair straddling the predicted crossing, less than one resolution apart: if the
        # prediction is right, the two answers close the bracket together.
        half = 0.499 * res
        centre = min(max(guess, lo + half), hi - half)
        return self._fresh([self._inside_bracket(centre - half, lo, hi, "ceil"),
                            self._inside_bracket(centre + half, lo, hi, "floor")], skip)

    def _inside_bracket(self, t: float, lo: float, hi: float, how: str) -> float:
        """A value near ``t`` strictly inside (lo, hi), snapped to the grid when possible."""
        for v in (self._snap(t, how), self.value(t), self.value(0.5 * (lo + hi))):
            if lo < self.t(v) < hi:
                return v
        return self.value(0.5 * (lo + hi))

    def _crossing(self, known: Mapping[float, PointResult], lo: float, hi: float) -> float | None:
        """Predicted first crossing of any criterion's margin between ``lo`` and ``hi``,
        interpolating linearly in t between the nearest evaluations on either side."""
        by_t = {self.t(v): p for v, p in known.items() if p.status == "ok"}
        if lo not in by_t or hi not in by_t:
            return None
        m_lo = self.tolerances.margins(by_t[lo].metrics, by_t[lo].frame_metrics, ideal=self.ideal)
        m_hi = self.tolerances.margins(by_t[hi].metrics, by_t[hi].frame_metrics, ideal=self.ideal)
        best = None
        for metric, a in m_lo.items():
            b = m_hi.get(metric)
            if a is None or b is None or not (a > 0 > b):
                continue
            t = lo + (hi - lo) * a / (a - b)
            best = t if best is None else min(best, t)
        return best

    @classmethod
    def from_config(cls, options: Mapping[str, Any], *, grid_values: Sequence[float] | None,
                    **common: Any) -> "BisectSearch":
        known = {"bracket", "start", "expand", "limits", "resolution", "interpolate", "max_evaluations", "verify"}
        if unknown := sorted(set(options) - known):
            raise ConfigError(f"search: unknown option(s) {', '.join(unknown)}; expected: {', '.join(sorted(known))}")
        return cls(**common, **options)
