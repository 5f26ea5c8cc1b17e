"""Acceptance criteria: how far a compressed point's metrics may move from the raw data's.

A criterion names a metric and a fixed range (``{min: 0.95}``), a noise factor
(``{min: 0.95, noise: 0.5}``) or both. Where a counting-noise reference exists
(:mod:`lossbound.criteria.noise_reference`) a noise factor ``f`` allows the compression to move
the metric from its ideal (the raw data against itself) by at most ``f**p`` times the metric's
*noise effect* — what one dose of counting noise does to it — where ``p`` is how the metric
scales with the error's amplitude (1 for linear metrics, 2 for quadratic ones such as χ² and
1 − CC: an error of half the noise's amplitude moves them by a quarter of the noise's
effect). The fixed range applies where no usable reference exists: none, undefined, zero (a
zero-width tolerance is never used silently) or known worse than ``target_se`` relative
standard error.

Metrics come in two kinds. A scalar metric has one value per point. A per-frame metric
(an array, one value per frame: orientation, cell, spots, profiles) is judged frame by frame:
each frame gets its own allowance — its own noise effect, or the fixed range — and the
criterion passes when at least ``frames`` (a fraction, default 1) of the judged frames are
inside theirs, so one odd frame neither sets everyone's allowance nor hides.

Every criterion reports its *use*: the damage over the allowance (0 = as raw, 1 = at the
tolerance; for a per-frame criterion the order statistic the ``frames`` rule looks at), and
``-log(use)`` as the margin the threshold search interpolates. Uses can be evaluated with the
noise-referenced allowances moved by ±1 standard error (``edge``), which is where a bound's
uncertainty comes from.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lossbound.core.errors import ConfigError

#: relative standard error a noise effect must reach to be used as a yardstick
DEFAULT_TARGET_SE = 0.15
_KEYS = {"min", "max", "noise", "frames", "why"}
_MARGIN_CAP = math.log(1e9)


@dataclasses.dataclass(frozen=True)
class NoiseLimit:
    """Where a scalar criterion's range came from: ``ideal -/+ factor**power * effect``.

    ``effect`` is the noise effect (mean ``|metric - ideal|`` over the counting-noise
    re-samplings), ``effect_sd`` its standard error, ``fixed`` the configured range it replaces.
    """

    factor: float
    effect: float
    effect_sd: float
    ideal: float
    resamples: int
    fixed: tuple[float | None, float | None] = (None, None)
    power: float = 1

    @property
    def allowance(self) -> float:
        return self.factor ** self.power * self.effect

    @property
    def relative_se(self) -> float:
        return self.effect_sd / self.effect if self.effect > 0 else math.inf


def _edge_scale(relative_se: float, edge: float) -> float:
    """An allowance's factor at ``edge`` standard errors (0: as estimated)."""
    return 1.0 + edge * relative_se if edge else 1.0


def _ratio(damage: float, allowed: float) -> float:
    if allowed > 0:
        return damage / allowed
    return math.inf if damage > 0 else 0.0


def _margin(use: float) -> float | None:
    if use is None or math.isnan(use):
        return None
    if use <= 0:
        return _MARGIN_CAP
    return max(-_MARGIN_CAP, min(_MARGIN_CAP, -math.log(use)))


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A scalar metric inside ``[min, max]`` (either may be None).

    ``ideal`` is the metric of the raw data against itself (0 for errors, 1 for Dice), known
    once the tolerances are bound to a dataset; ``noise`` says where a noise-referenced range
    came from; ``why`` is the reason a criterion is fixed (from the configuration).
    """

    metric: str
    min: float | None = None
    max: float | None = None
    noise: NoiseLimit | None = None
    ideal: float | None = None
    why: str | None = None
    kind = "scalar"

    def check(self, value: float | None) -> str | None:
        """None when ``value`` is inside the range, else a short reason."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{self.metric} is undefined"
        if self.min is not None and value < self.min:
            return f"{self.metric}={value:.4g} < {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{self.metric}={value:.4g} > {self.max:g}"
        return None

    def use(self, value: float | None, *, edge: float = 0.0) -> float:
        """Damage over allowance on the side the value moved to (NaN if undefined); ``edge``
        moves a noise-referenced allowance by that many standard errors."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.nan
        ideal = self.ideal if self.ideal is not None else (self.noise.ideal if self.noise else None)
        if ideal is None or not math.isfinite(ideal):
            m = self._margin_without_ideal(value)
            return math.nan if m is None else math.exp(-m)
        scale = _edge_scale(self.noise.relative_se, edge) if self.noise is not None else 1.0
        uses = []
        for limit, sign in ((self.max, 1.0), (self.min, -1.0)):
            if limit is None:
                continue
            allowed = sign * (limit - ideal)
            if allowed > 0:
                uses.append(_ratio(max(sign * (value - ideal), 0.0), allowed * scale))
            else:  # the raw data sit on (or beyond) this limit: only crossing it counts
                uses.append(math.inf if sign * (value - limit) > 0 else 0.0)
        return max(uses) if uses else 0.0

    def margin(self, value: float | None, *, ideal: float | None = None, edge: float = 0.0) -> float | None:
        """Signed distance inside the range (> 0 inside, < 0 outside; None if undefined):
        ``-log(use)``. Damage grows about as a power of the codec's bound, so the margin is
        about linear in log(bound), which the threshold search interpolates."""
        if ideal is not None and self.ideal is None:
            return dataclasses.replace(self, ideal=ideal).margin(value, edge=edge)
        return _margin(self.use(value, edge=edge))

    def _margin_without_ideal(self, value: float) -> float | None:
        """Unbound tolerances: ``log(max / value)`` for upper limits on positive metrics, the
        relative difference otherwise."""
        if not math.isfinite(value):
            return -_MARGIN_CAP
        margins = []
        for limit, sign in ((self.max, 1.0), (self.min, -1.0)):
            if limit is None:
                continue
            if sign > 0 and limit > 0 and value > 0:
                margins.append(math.log(limit / value))
            else:
                margins.append(sign * (limit - value) / max(abs(limit), 1e-12))
        return min(margins) if margins else None

    def relative_se(self) -> float:
        return self.noise.relative_se if self.noise is not None else 0.0

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:.4g}")
        if self.max is not None:
            parts.append(f"<= {self.max:.4g}")
        text = f"{self.metric} {' and '.join(parts)}"
        if self.noise is not None:
            pw = f"^{self.noise.power:g}" if self.noise.power != 1 else ""
            text += f" ({self.noise.factor:g}{pw} x counting-noise effect {self.noise.effect:.3g})"
        return text

    def record(self) -> dict[str, Any]:
        """Every number of this criterion (the thresholds file keeps it; :func:`from_record`)."""
        out: dict[str, Any] = {"metric": self.metric, "kind": self.kind, "min": self.min, "max": self.max,
                               "ideal": self.ideal}
        if self.noise is not None:
            out["noise"] = dataclasses.asdict(self.noise)
            out["noise"]["fixed"] = list(self.noise.fixed)
        if self.why:
            out["why"] = self.why
        return out


@dataclasses.dataclass(frozen=True)
class FrameCriterion:
    """A per-frame metric: each judged frame inside its own allowance, for at least ``frames``
    of the frames.

    Per frame ``f``: ``ideal[f]`` (raw against itself; NaN: the frame is not judged, e.g. not
    indexed on the raw data), the allowances below and above it (``allow_lo``, ``allow_hi``:
    distances, NaN where that side is not limited), their relative standard error (0 for a
    fixed allowance) and where they came from (``source``: ``noise`` or ``fixed``). A frame
    the compressed result leaves undefined (NaN) is outside.
    """

    metric: str
    min: float | None
    max: float | None
    frames: float
    ideal: tuple[float, ...]
    allow_lo: tuple[float, ...]
    allow_hi: tuple[float, ...]
    rel_se: tuple[float, ...]
    source: tuple[str, ...]
    factor: float | None = None
    power: float = 1
    effects: tuple[float, ...] = ()
    effects_sd: tuple[float, ...] = ()
    resamples: int = 0
    why: str | None = None
    kind = "frames"

    @property
    def judged(self) -> np.ndarray:
        ideal = np.asarray(self.ideal, float)
        lo, hi = np.asarray(self.allow_lo, float), np.asarray(self.allow_hi, float)
        return np.isfinite(ideal) & (np.isfinite(lo) | np.isfinite(hi))

    @property
    def noise(self) -> bool:
        return "noise" in self.source

    def ratios(self, values: Sequence[float] | None, *, edge: float = 0.0) -> np.ndarray:
        """Damage over allowance per judged frame (inf: undefined on the compressed result)."""
        judged = np.flatnonzero(self.judged)
        v = np.full(len(self.ideal), np.nan) if values is None else np.asarray(values, float)
        if v.shape != (len(self.ideal),):
            return np.full(judged.size, np.inf)
        out = np.empty(judged.size)
        for i, f in enumerate(judged):
            x, ideal, scale = v[f], self.ideal[f], _edge_scale(self.rel_se[f], edge)
            if math.isnan(x):
                out[i] = math.inf
                continue
            r = 0.0
            if math.isfinite(self.allow_hi[f]):
                r = max(r, _ratio(max(x - ideal, 0.0), self.allow_hi[f] * scale))
            if math.isfinite(self.allow_lo[f]):
                r = max(r, _ratio(max(ideal - x, 0.0), self.allow_lo[f] * scale))
            out[i] = r
        return out

    def _order(self, n: int) -> int:
        return max(1, math.ceil(self.frames * n - 1e-9))

    def use(self, values: Sequence[float] | None, *, edge: float = 0.0) -> float:
        """The ``frames`` quantile of the frames' damage over allowance: <= 1 passes."""
        r = np.sort(self.ratios(values, edge=edge))
        if r.size == 0:
            return math.nan
        return float(r[self._order(r.size) - 1])

    def inside(self, values: Sequence[float] | None) -> float:
        """Fraction of the judged frames inside their own allowance."""
        r = self.ratios(values)
        return float(np.mean(r <= 1.0)) if r.size else math.nan

    def check(self, values: Sequence[float] | None) -> str | None:
        r = self.ratios(values)
        if r.size == 0:
            return f"{self.metric}: no frame to judge"
        if float(np.sort(r)[self._order(r.size) - 1]) <= 1.0:
            return None
        judged = np.flatnonzero(self.judged)
        worst = int(judged[int(np.argmax(r))])
        v = None if values is None else np.asarray(values, float)
        shown = "undefined" if v is None or v.shape != (len(self.ideal),) or math.isnan(v[worst]) else f"{v[worst]:.4g}"
        allow = max((a for a in (self.allow_lo[worst], self.allow_hi[worst]) if math.isfinite(a)), default=math.nan)
        return (f"{self.metric}: {int(np.sum(r > 1))} of {r.size} frames outside their own allowance "
                f"(need >= {self.frames:.0%} inside; worst frame {worst}: {shown} vs {self.ideal[worst]:.4g} "
                f"+- {allow:.3g})")

    def margin(self, values: Sequence[float] | None, *, edge: float = 0.0) -> float | None:
        return _margin(self.use(values, edge=edge))

    def describe(self) -> str:
        n = int(self.judged.sum())
        noise = sum(s == "noise" for s, j in zip(self.source, self.judged) if j)
        pw = f"^{self.power:g}" if self.power != 1 else ""
        how = (f"{self.factor:g}{pw} x each frame's counting-noise effect ({noise} of {n} frames), "
               f"the fixed range for the others" if self.factor is not None and noise else "fixed range")
        rng = " and ".join(p for p in ((f">= {self.min:.4g}" if self.min is not None else ""),
                                       (f"<= {self.max:.4g}" if self.max is not None else "")) if p)
        return f"{self.metric} per frame ({how}{'; fixed ' + rng if rng else ''}), >= {self.frames:.0%} of frames"

    def relative_se(self) -> float:
        j = self.judged
        se = [s for s, ok in zip(self.rel_se, j) if ok]
        return float(max(se)) if se else 0.0

    def record(self) -> dict[str, Any]:
        out = {"metric": self.metric, "kind": self.kind, "min": self.min, "max": self.max, "frames": self.frames,
               "factor": self.factor, "power": self.power, "resamples": self.resamples,
               **{k: [None if not math.isfinite(x) else float(x) for x in getattr(self, k)]
                  for k in ("ideal", "allow_lo", "allow_hi", "rel_se", "effects", "effects_sd")},
               "source": list(self.source)}
        if self.why:
            out["why"] = self.why
        return out


AnyCriterion = Criterion | FrameCriterion


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    failures: tuple[str, ...]


def _nan_list(values: Iterable[Any]) -> tuple[float, ...]:
    return tuple(math.nan if v is None else float(v) for v in values)


def _power(value: Any) -> float:
    """A recorded power: 1 and 2 stay integers (as written before measured powers existed)."""
    p = float(value)
    return int(p) if p.is_integer() else p


def from_record(rec: Mapping[str, Any]) -> AnyCriterion:
    """The criterion a :meth:`Criterion.record` / :meth:`FrameCriterion.record` describes."""
    if rec.get("kind") == "frames":
        return FrameCriterion(
            metric=rec["metric"], min=rec.get("min"), max=rec.get("max"), frames=float(rec["frames"]),
            ideal=_nan_list(rec["ideal"]), allow_lo=_nan_list(rec["allow_lo"]), allow_hi=_nan_list(rec["allow_hi"]),
            rel_se=_nan_list(rec["rel_se"]), source=tuple(rec["source"]), factor=rec.get("factor"),
            power=_power(rec.get("power", 1)), effects=_nan_list(rec.get("effects") or []),
            effects_sd=_nan_list(rec.get("effects_sd") or []), resamples=int(rec.get("resamples") or 0),
            why=rec.get("why"))
    noise = rec.get("noise")
    limit = None
    if noise:
        limit = NoiseLimit(factor=noise["factor"], effect=noise["effect"], effect_sd=noise["effect_sd"],
                           ideal=noise["ideal"], resamples=noise["resamples"], fixed=tuple(noise.get("fixed") or (None, None)),
                           power=_power(noise.get("power", 1)))
    return Criterion(rec["metric"], rec.get("min"), rec.get("max"), noise=limit, ideal=rec.get("ideal"),
                     why=rec.get("why"))


class Tolerances:
    """A set of criteria built from ``{metric: {min, max, noise, frames, why}}``.

    Parameters
    ----------
    config : mapping
        The technique's ``tolerances`` section. Each value needs ``min``, ``max`` and/or
        ``noise``; ``frames`` (per-frame metrics only) is the fraction of frames that must be
        inside their own allowance (default 1); ``why`` says why a criterion is fixed.
    not_applicable : iterable of str
        Metrics undefined on this dataset even for the raw data against itself (skipped).
    noise : mapping, optional
        Scalar noise effects ``{metric: {effect, effect_sd, ideal, resamples}}``.
    frame_noise : mapping, optional
        Per-frame noise effects ``{metric: [{effect, effect_sd, ideal, resamples}, ...]}``.
    ideal, frame_ideal : mapping, optional
        The raw data against itself: scalar metrics, and per-frame metrics (lists).
    scaling : mapping, optional
        ``{metric: power}`` — how each metric scales with the error's amplitude (default 1).
    target_se : float
        A noise effect known worse than this relative standard error is no yardstick.
    """

    def __init__(self, config: Mapping[str, Mapping[str, Any]] | None, *,
                 not_applicable: Iterable[str] = (),
                 noise: Mapping[str, Mapping[str, float]] | None = None,
                 frame_noise: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
                 ideal: Mapping[str, float] | None = None,
                 frame_ideal: Mapping[str, Sequence[float]] | None = None,
                 scaling: Mapping[str, float] | None = None,
                 target_se: float = math.inf) -> None:
        self.config = dict(config or {})
        self.not_applicable = frozenset(not_applicable)
        self.noise = dict(noise or {})
        self.frame_noise = {k: list(v) for k, v in (frame_noise or {}).items()}
        self.ideal = dict(ideal or {})
        self.frame_ideal = {k: list(v) for k, v in (frame_ideal or {}).items()}
        self.scaling = {k: _power(v) for k, v in (scaling or {}).items()}
        self.target_se = float(target_se)
        #: metrics with a noise-referenced range but no usable reference (fixed range used), and why
        self.noise_missing: dict[str, str] = {}
        criteria: list[AnyCriterion] = []
        for metric, spec in self.config.items():
            if spec is None:  # `technique.tolerances.recon_psnr=null` switches a criterion off
                continue
            if not isinstance(spec, Mapping) or not set(spec) <= _KEYS or not set(spec) & {"min", "max", "noise"}:
                raise ConfigError(f"tolerance {metric!r}: expected a mapping with 'min', 'max' and/or 'noise' "
                                  f"(and optionally 'frames', 'why'), got {spec!r}")
            bounds = {key: _number(metric, key, spec.get(key)) for key in ("min", "max", "noise", "frames")}
            if bounds["noise"] is not None and not bounds["noise"] > 0:
                raise ConfigError(f"tolerance {metric}.noise: expected a factor > 0, got {spec['noise']!r}")
            if bounds["frames"] is not None and not 0 < bounds["frames"] <= 1:
                raise ConfigError(f"tolerance {metric}.frames: expected a fraction in (0, 1], got {spec['frames']!r}")
            if bounds["frames"] is not None and self.ideal and metric in self.ideal:
                raise ConfigError(f"tolerance {metric}.frames: {metric} is not a per-frame metric")
            why = spec.get("why")
            criterion = (self._frame_criterion(metric, bounds, why) if metric in self.frame_ideal
                         else self._criterion(metric, bounds, why))
            if criterion is not None:
                criteria.append(criterion)
        self._all: tuple[AnyCriterion, ...] = tuple(criteria)
        # Criteria whose metric is undefined on this dataset even for the raw data against
        # itself (no powder peak in an empty-beam frame): not checked, still recorded.
        self.criteria: tuple[AnyCriterion, ...] = tuple(c for c in criteria if c.metric not in self.not_applicable)

    # -- building ------------------------------------------------------------------------------
    def _unusable(self, ref: Mapping[str, float] | None) -> str | None:
        """Why a noise effect cannot serve as a yardstick (None: it can)."""
        if ref is None:
            return "no noise reference"
        effect, ideal = ref.get("effect"), ref.get("ideal", math.nan)
        if effect is None or not math.isfinite(effect) or ideal is None or not math.isfinite(ideal):
            return "undefined on the re-samplings"
        k = ref.get("resamples")
        lost = int(ref.get("lost") or 0)
        if k and lost > 0.1 * k:
            return f"counting noise alone loses the metric in {lost} of K={k} re-samplings"
        if effect == 0:
            return f"zero: counting noise never changed it in K={k} re-samplings (no zero-width tolerance)"
        sd = ref.get("effect_sd", math.inf)
        if not (sd is not None and sd <= self.target_se * effect):
            return (f"noise effect {effect:.3g} +- {sd if sd is not None else math.nan:.2g} too uncertain with "
                    f"K={k} (relative standard error {(sd or math.inf) / effect:.0%} > {self.target_se:.0%})")
        return None

    def _criterion(self, metric: str, bounds: Mapping[str, float | None], why: str | None) -> Criterion | None:
        lo, hi, factor = bounds["min"], bounds["max"], bounds["noise"]
        ideal = self.ideal.get(metric)
        if factor is None:
            return Criterion(metric, lo, hi, ideal=ideal, why=why)
        ref = self.noise.get(metric)
        reason = self._unusable(ref)
        if reason is not None:
            self.noise_missing[metric] = reason
            if lo is None and hi is None:
                return None  # noise-only criterion without a usable reference: nothing to check
            return Criterion(metric, lo, hi, ideal=ideal, why=why)
        power = self.scaling.get(metric, 1)
        limit = NoiseLimit(factor=factor, effect=float(ref["effect"]), effect_sd=float(ref.get("effect_sd", math.nan)),
                           ideal=float(ref["ideal"]), resamples=int(ref.get("resamples", 0)), fixed=(lo, hi),
                           power=power)
        two_sided = (lo is None) == (hi is None)
        centre, allowed = limit.ideal, limit.allowance
        return Criterion(metric, centre - allowed if (lo is not None or two_sided) else None,
                         centre + allowed if (hi is not None or two_sided) else None, noise=limit,
                         ideal=limit.ideal if ideal is None else ideal, why=why)

    def _frame_criterion(self, metric: str, bounds: Mapping[str, float | None], why: str | None
                         ) -> FrameCriterion | None:
        lo, hi, factor = bounds["min"], bounds["max"], bounds["noise"]
        ideal = [math.nan if v is None else float(v) for v in self.frame_ideal[metric]]
        n = len(ideal)
        refs = list(self.frame_noise.get(metric) or [None] * n)
        if len(refs) != n:
            refs = [None] * n
        power = self.scaling.get(metric, 1)
        two_sided = (lo is None) == (hi is None)
        allow_lo, allow_hi, rel_se, source, effects, sds = [], [], [], [], [], []
        reasons: dict[str, list] = {}  # first word -> [a full reason, frames]
        resamples = 0
        for f in range(n):
            ref = refs[f]
            reason = self._unusable(ref) if factor is not None else "fixed"
            effects.append(math.nan if ref is None else float(ref.get("effect", math.nan)))
            sds.append(math.nan if ref is None else float(ref.get("effect_sd", math.nan)))
            if ref is not None:
                resamples = max(resamples, int(ref.get("resamples") or 0))
            if reason is None:
                allowed = factor ** power * float(ref["effect"])
                allow_lo.append(allowed if (lo is not None or two_sided) else math.nan)
                allow_hi.append(allowed if (hi is not None or two_sided) else math.nan)
                rel_se.append(float(ref["effect_sd"]) / float(ref["effect"]))
                source.append("noise")
                continue
            if factor is not None and math.isfinite(ideal[f]):
                reasons.setdefault(reason.split()[0], [reason, 0])[1] += 1
            allow_lo.append(ideal[f] - lo if lo is not None else math.nan)
            allow_hi.append(hi - ideal[f] if hi is not None else math.nan)
            rel_se.append(0.0)
            source.append("fixed" if (lo is not None or hi is not None) else "none")
        if factor is not None and reasons:
            self.noise_missing[metric] = "; ".join(f"{why} ({n} frame{'s' if n > 1 else ''})"
                                                   for why, n in reasons.values())
        crit = FrameCriterion(metric=metric, min=lo, max=hi, frames=bounds["frames"] or 1.0, ideal=tuple(ideal),
                              allow_lo=tuple(allow_lo), allow_hi=tuple(allow_hi), rel_se=tuple(rel_se),
                              source=tuple(source), factor=factor, power=power, effects=tuple(effects),
                              effects_sd=tuple(sds), resamples=resamples, why=why)
        if not crit.judged.any() and lo is None and hi is None:
            return None  # noise-only and no frame has a usable reference
        return crit

    def _rebuild(self, **changes: Any) -> "Tolerances":
        kw = dict(not_applicable=self.not_applicable, noise=self.noise, frame_noise=self.frame_noise,
                  ideal=self.ideal, frame_ideal=self.frame_ideal, scaling=self.scaling, target_se=self.target_se)
        kw.update(changes)
        return Tolerances(self.config, **kw)

    def bind(self, *, ideal: Mapping[str, float], frame_ideal: Mapping[str, Sequence[float]] | None = None,
             scaling: Mapping[str, float] | None = None) -> "Tolerances":
        """The same tolerances on one dataset: the raw data against themselves (scalar and
        per-frame metrics) and the metrics' declared scaling."""
        return self._rebuild(ideal=ideal, frame_ideal=frame_ideal or {}, scaling=scaling or self.scaling)

    def without(self, metrics: Iterable[str]) -> "Tolerances":
        """The same tolerances with ``metrics`` marked not applicable (skipped by checks)."""
        return self._rebuild(not_applicable=self.not_applicable | set(metrics))

    def with_noise(self, noise: Mapping[str, Mapping[str, float]], *,
                   frame_noise: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
                   target_se: float = math.inf, max_relative_se: float | None = None) -> "Tolerances":
        """The same tolerances with counting-noise effects: criteria with a ``noise`` factor take
        their range from them where the effect is usable (defined, non-zero, known to
        ``target_se``)."""
        if max_relative_se is not None:
            target_se = max_relative_se
        return self._rebuild(noise=noise, frame_noise=frame_noise or {}, target_se=target_se)

    # -- what is configured -----------------------------------------------------------------------
    @property
    def noise_factors(self) -> dict[str, float]:
        """Metrics configured with a noise-referenced range, and their factor."""
        return {m: float(s["noise"]) for m, s in self.config.items() if isinstance(s, Mapping) and s.get("noise")}

    def noise_metrics(self) -> dict[str, str]:
        """Applicable noise-referenced metrics and their kind (``scalar`` or ``frames``)."""
        return {m: ("frames" if m in self.frame_ideal else "scalar") for m in self.noise_factors
                if m not in self.not_applicable}

    def fixed_reasons(self) -> dict[str, str]:
        """Criteria without a noise factor and the configured reason (``why``) where given."""
        return {m: str(s.get("why") or "") for m, s in self.config.items()
                if isinstance(s, Mapping) and not s.get("noise")}

    def noise_limits(self) -> dict[str, dict[str, Any]]:
        """Per noise-referenced criterion: the noise effect, the derived range, the fixed one."""
        out: dict[str, dict[str, Any]] = {}
        for c in self._all:
            if isinstance(c, Criterion) and c.noise is not None:
                out[c.metric] = {"factor": c.noise.factor, "power": c.noise.power, "noise_effect": c.noise.effect,
                                 "noise_effect_se": c.noise.effect_sd, "ideal": c.noise.ideal,
                                 "min": c.min, "max": c.max, "fixed_min": c.noise.fixed[0],
                                 "fixed_max": c.noise.fixed[1], "resamples": c.noise.resamples}
            elif isinstance(c, FrameCriterion) and c.factor is not None:
                judged = c.judged
                eff = [e for e, s, j in zip(c.effects, c.source, judged) if j and s == "noise"]
                out[c.metric] = {"factor": c.factor, "power": c.power, "frames": c.frames,
                                 "frames_judged": int(judged.sum()),
                                 "frames_noise": int(sum(s == "noise" for s, j in zip(c.source, judged) if j)),
                                 "noise_effect": float(np.median(eff)) if eff else None,
                                 "noise_effect_min": min(eff) if eff else None,
                                 "noise_effect_max": max(eff) if eff else None,
                                 "fixed_min": c.min, "fixed_max": c.max, "resamples": c.resamples,
                                 "per_frame": [None if not math.isfinite(e) else float(e) for e in c.effects]}
        for metric, why in self.noise_missing.items():
            if metric not in self.not_applicable:
                out.setdefault(metric, {"factor": self.noise_factors.get(metric)})["fixed_used"] = why
        return out

    # -- judging --------------------------------------------------------------------------------
    @staticmethod
    def _value(c: AnyCriterion, metrics: Mapping[str, Any], frames: Mapping[str, Any] | None):
        return (frames or {}).get(c.metric) if isinstance(c, FrameCriterion) else metrics.get(c.metric)

    def check(self, metrics: Mapping[str, float], frames: Mapping[str, Sequence[float]] | None = None) -> Verdict:
        failures = [reason for c in self.criteria if (reason := c.check(self._value(c, metrics, frames)))]
        return Verdict(not failures, tuple(failures))

    def uses(self, metrics: Mapping[str, float], frames: Mapping[str, Sequence[float]] | None = None, *,
             edge: float = 0.0) -> dict[str, float]:
        """Each criterion's use of its allowance (<= 1 inside)."""
        return {c.metric: c.use(self._value(c, metrics, frames), edge=edge) for c in self.criteria}

    def margins(self, metrics: Mapping[str, float], frames: Mapping[str, Sequence[float]] | None = None, *,
                ideal: Mapping[str, float] | None = None, edge: float = 0.0) -> dict[str, float | None]:
        """:meth:`Criterion.margin` of every criterion (``ideal``: raw-vs-raw metrics for
        unbound scalar criteria)."""
        ideal = ideal or {}
        out = {}
        for c in self.criteria:
            if isinstance(c, FrameCriterion):
                out[c.metric] = c.margin(self._value(c, metrics, frames), edge=edge)
            else:
                out[c.metric] = c.margin(metrics.get(c.metric), ideal=ideal.get(c.metric), edge=edge)
        return out

    def missing(self, metrics: Mapping[str, float], frames: Mapping[str, Any] | None = None) -> list[str]:
        """Criteria whose metric no evaluator produces (a configuration mistake)."""
        frames = frames or {}
        return [m for m, spec in self.config.items() if spec is not None and m not in metrics and m not in frames]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Every configured criterion as configured (not-applicable ones included, noise factors
        rather than the ranges derived from one dataset's noise: datasets measured under the
        same configuration combine)."""
        out = {}
        for metric, spec in self.config.items():
            if spec is None:
                continue
            out[metric] = {k: float(spec[k]) for k in ("min", "max", "noise", "frames") if spec.get(k) is not None}
        return out

    def record(self) -> list[dict[str, Any]]:
        """Every applicable criterion with its numbers on this dataset (:meth:`from_records`)."""
        return [c.record() for c in self.criteria]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "RecordedTolerances":
        return RecordedTolerances([from_record(r) for r in records])

    def __iter__(self):
        return iter(self.criteria)


class RecordedTolerances:
    """Criteria read back from a thresholds file: judge, use and margins as recorded."""

    def __init__(self, criteria: Sequence[AnyCriterion]) -> None:
        self.criteria = tuple(criteria)

    check = Tolerances.check
    uses = Tolerances.uses
    margins = Tolerances.margins
    _value = staticmethod(Tolerances._value)

    def __iter__(self):
        return iter(self.criteria)


def _number(metric: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"tolerance {metric}.{key}: expected a number, got {value!r}") from None
