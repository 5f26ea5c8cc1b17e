"""Scheduling: every codec curve's search run to its end, a few points at a time.

A :class:`Curve` is one codec setting template and the search over its value (None: a
lossless baseline, one point). :func:`drive` fills the runner's free slots with the curves'
proposals (the longest remaining search first, so no worker ends idle behind it), judges each
finished point under this process's tolerances, shares the result of a decompressed output
already seen, and retries once the points a dead worker pool took with it. What happens to a
point when it starts and ends (MLflow, journal) is the caller's, through :class:`PointHooks`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Any, Mapping, Protocol

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lossbound.codecs import CodecSetting, settings_from_config
from lossbound.core.errors import ConfigError
from lossbound.core.types import PointResult
from lossbound.search import Search, make_search
from lossbound.study.context import StudyContext
from lossbound.study.executor import PointRunner, is_broken_pool
from lossbound.study.point import judge, share_result

log = logging.getLogger(__name__)

__all__ = ["Curve", "PointHooks", "build_curves", "drive", "failed_point"]


@dataclasses.dataclass
class Curve:
    """One codec curve: a setting template and the search over its value (None: lossless)."""

    name: str
    template: CodecSetting
    search: Search | None

    def setting(self, value: float | None) -> CodecSetting:
        return dataclasses.replace(self.template, value=value)

    def propose(self, known: Mapping[Any, PointResult], pending: set) -> list:
        if self.search is None:
            return [] if (None in known or None in pending) else [None]
        return self.search.propose(known, pending)

    def steps_left(self, known: Mapping[Any, PointResult], pending: set) -> float:
        """Evaluations still needed one after another (a lossless baseline: its one point)."""
        if self.search is None:
            return 0.0 if (None in known or None in pending) else 1.0
        return self.search.steps_left(known, pending)

    def points_left(self, known: Mapping[Any, PointResult], pending: set) -> float:
        """Evaluations still needed in all (the progress bar's total)."""
        if self.search is None:
            return 0.0 if (None in known or None in pending) else 1.0
        return self.search.points_left(known, pending)

    @property
    def group(self) -> tuple:
        """What a recorded point must share with this curve to belong to it."""
        s = self.template
        chunks = tuple(s.chunks) if isinstance(s.chunks, (list, tuple)) else s.chunks
        return (s.codec, s.mode, s.input_dtype, chunks)


def build_curves(cfg: Mapping[str, Any], ctx: StudyContext, skipped: dict[str, str] | None = None) -> list[Curve]:
    """Lossless baselines first, then one searched curve per lossy codec config; codecs the
    dataset's dtype rules out go to ``skipped`` (name -> reason) instead."""
    skipped = {} if skipped is None else skipped
    sweep, search_cfg = cfg["sweep"], cfg.get("search") or {"strategy": "grid"}
    curves: list[Curve] = []
    for name in sweep.get("baselines") or []:
        (setting,) = settings_from_config(name, {"codec": name})
        curves.append(Curve(name, setting, None))
    for name, entry in (cfg.get("codec") or {}).items():
        entry = dict(entry or {})
        bounds = entry.get("bounds") if entry.get("bounds") is not None else sweep.get("bounds")
        bracket = entry.get("bracket")
        settings = settings_from_config(name, {**entry, "bounds": bounds})
        template = dataclasses.replace(settings[0], value=None)
        try:  # a codec that cannot take this dataset (the quantiser on float data) is skipped
            settings[0].validate(ctx.data.payload_array.dtype, has_geometry=ctx.data.geometry is not None)
        except ConfigError as exc:
            log.warning("codec %s skipped on %s: %s", name, ctx.data.name, exc)
            skipped[name] = str(exc)
            continue
        if not template.spec.lossy:
            curves += [Curve(f"{name}={s.value:g}" if s.value is not None else name, s, None) for s in settings]
            continue
        # Integer data (kept integer by the codec) take integer errors only: a fractional
        # absolute bound is no tighter than its integer part, and SZ rounds it up. So search
        # integers there.
        stored = ctx.data.payload_array.dtype if template.input_dtype is None else np.dtype(template.input_dtype)
        integer = template.integer_valued or (template.bounded and stored.kind in "iu")
        search = make_search(search_cfg, grows=template.loss_grows_with_value, integer=integer,
                             tolerances=ctx.tolerances, grid_values=bounds, bracket=bracket,
                             limits=entry.get("limits"), ideal=ctx.raw_metrics)
        curves.append(Curve(name, template, search))
    if not curves:
        raise ConfigError("nothing to evaluate: codec and sweep.baselines are both empty")
    return curves


class PointHooks(Protocol):
    """What the caller does when a point starts, is lost with a dead pool, or finishes."""

    def started(self, setting: CodecSetting, point_id: str) -> str | None:
        """The point's run id (its MLflow run), or None."""

    def lost(self, run_id: str | None) -> None:
        """The point died with the worker pool and will be tried again."""

    def finished(self, point: PointResult) -> None:
        """The point is judged and final: record it."""


def failed_point(ctx: StudyContext, setting: CodecSetting, exc: BaseException) -> PointResult:
    """A point whose codec, pipeline or worker failed: recorded failed with a one-line reason."""
    return PointResult(point_id=ctx.point_id(setting), label=setting.label, setting=setting.as_dict(),
                       lossy=setting.spec.lossy, status="failed", context=ctx.key, dataset=ctx.data.name,
                       reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])


def drive(ctx: StudyContext, curves: list[Curve], runner: PointRunner, *, recorded: Mapping[str, PointResult],
          hooks: PointHooks, progress: bool = True, label: str = "study") -> tuple[list[PointResult], int]:
    """Run every curve's search to its end, ``runner.workers`` points at a time.

    ``recorded``: judged points of this context from the journal (earlier runs, other jobs);
    each informs its curve's search and is reused, never recomputed. Returns this study's
    points (reused ones flagged) and how many were reused.
    """
    known: dict[str, dict[Any, PointResult]] = {c.name: {} for c in curves}
    pending: dict[str, set] = {c.name: set() for c in curves}
    points: list[PointResult] = []
    reused = 0
    for c in curves:  # every recorded evaluation of a curve informs its search
        for p in recorded.values():
            if p.lossy == c.template.spec.lossy and p.group == c.group and \
                    (c.search is not None or p.value == c.template.value):
                p.reused = True
                known[c.name][p.value] = p
                points.append(p)
                reused += 1
    # decompressed payloads already run through the pipeline: one evaluated point per output
    outputs: dict[str, PointResult] = {}
    for p in points:
        _remember_output(outputs, p)
    in_flight: dict[concurrent.futures.Future, tuple[Curve, Any, str | None]] = {}
    lost: dict[tuple[str, Any], int] = {}
    done_count = 0

    def remaining() -> float:
        return sum(c.points_left(known[c.name], pending[c.name]) for c in curves) + len(in_flight)

    bar = tqdm(desc=label, unit="pt", total=int(round(remaining())), disable=not progress)
    with logging_redirect_tqdm():
        while True:
            # Fill the free slots with the curves' proposals.
            progressed = True
            while len(in_flight) < runner.workers and progressed:
                progressed = False
                # the longest remaining search first (stable: ties keep the configured order)
                for c in sorted(curves, key=lambda c: -c.steps_left(known[c.name], pending[c.name])):
                    if len(in_flight) >= runner.workers:
                        break
                    proposals = c.propose(known[c.name], pending[c.name])
                    if not proposals:
                        continue
                    value = proposals[0]
                    setting = c.setting(value)
                    rid = hooks.started(setting, ctx.point_id(setting))
                    bar.set_postfix_str(setting.label)
                    known_outputs = {digest: p.point_id for digest, p in outputs.items()}
                    in_flight[runner.submit(setting, known_outputs=known_outputs)] = (c, value, rid)
                    pending[c.name].add(value)
                    progressed = True
            if not in_flight:
                break
            # a search's length is known only as it goes: the total follows it (and the ETA)
            bar.total = done_count + int(round(remaining()))
            bar.refresh()
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            if any(is_broken_pool(f.exception()) for f in done):
                # A worker process died (codec crashes are isolated, so this is rare): every
                # point in flight is lost with the pool. Each is tried again once; a point lost
                # twice is recorded failed, so a deterministic crash cannot loop.
                for fut, (c, value, rid) in list(in_flight.items()):
                    pending[c.name].discard(value)
                    lost[(c.name, value)] = lost.get((c.name, value), 0) + 1
                    if lost[(c.name, value)] < 2:
                        hooks.lost(rid)
                        continue
                    point = failed_point(ctx, c.setting(value), RuntimeError("worker process died twice"))
                    point.run_id = rid
                    hooks.finished(point)
                    known[c.name][value] = point
                    points.append(point)
                in_flight.clear()
                runner.restart()
                continue
            for fut in done:
                c, value, rid = in_flight.pop(fut)
                pending[c.name].discard(value)
                exc = fut.exception()
                point = fut.result() if exc is None else failed_point(ctx, c.setting(value), exc)
                # judged under this process's tolerances, wherever the point ran
                if point.same_output_as is not None and point.status == "ok":
                    source = outputs[point.output_sha256]
                    point = share_result(point, source, ctx.tolerances)
                    log.info("%s: decompressed data bit-identical to %s's; its pipeline result is reused",
                             point.label, source.label)
                else:
                    judge(point, ctx.tolerances)
                _remember_output(outputs, point)
                point.run_id = rid
                hooks.finished(point)
                known[c.name][value] = point
                points.append(point)
                done_count += 1
                bar.update(1)
    bar.total = bar.n
    bar.close()
    return points, reused


def _remember_output(outputs: dict[str, PointResult], point: PointResult) -> None:
    """Keep ``point`` as the point of its decompressed output (the first ok one; a point that
    shared another's result has the same metrics)."""
    if point.status == "ok" and point.output_sha256:
        outputs.setdefault(point.output_sha256, point)
