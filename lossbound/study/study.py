"""A study: one technique on one dataset, searched per codec, journaled, tracked, thresholded.

``Study(cfg).run()`` does, in order:

1. build the context (dataset, raw result and counting-noise reference from the cache,
   evaluator references);
2. read the journal: finished points of this context are reused, never recomputed;
3. drive the searches (one per codec curve, plus the lossless baselines) with up to
   ``sweep.workers`` points in flight, logging each point to MLflow and the journal;
4. derive this dataset's thresholds from every recorded point of the context and merge
   them into ``runs/thresholds/<technique>.yaml``;
5. log figures, summary and thresholds to the study's MLflow run, write the expert report
   (``runs/reports/<technique>.html``, also an artifact) and print the summary.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lossbound.codecs import CodecSetting, settings_from_config
from lossbound.core.errors import ConfigError, InputError
from lossbound.core.types import PointResult
from lossbound.core.gates import gate_settings
from lossbound.study.context import ContextSpec, RawPart, StudyContext, context_for, raw_part
from lossbound.study.gates import GateReport, check_gates
from lossbound.study.executor import PointRunner, WorkerPool, available_cores, is_broken_pool
from lossbound.results.journal import Journal
from lossbound.results.plots import sweep_figure
from lossbound.results.report import write_report
from lossbound.study.point import judge, point_seconds, render_figure, share_result
from lossbound.search import Search, make_search
from lossbound.results.summary import format_summary
from lossbound.results.thresholds import derive_thresholds, feasibility, resolve_dataset_name, update_thresholds
from lossbound.tracking.tracker import FIGURE_POLICIES, make_tracker
from lossbound.pipelines import TECHNIQUES

log = logging.getLogger(__name__)
# hdf5plugin logs every filter construction at INFO; one line per point drowns the summary.
logging.getLogger("hdf5plugin").setLevel(logging.WARNING)

_VERSIONED = ("lossbound", "numpy", "h5py", "hdf5plugin", "scikit-image", "algotom", "tomopy", "pyFAI", "mlflow")


def library_versions() -> dict[str, str]:
    out = {}
    for dist in _VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    import h5py

    out["HDF5"] = h5py.version.hdf5_version
    return out


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


@dataclasses.dataclass
class StudyResult:
    points: list[PointResult]           # this study's points (reused ones flagged)
    codecs: dict[str, Any]              # this dataset's thresholds
    baselines: dict[str, Any]
    thresholds_path: Path | None
    thresholds: dict[str, Any] | None   # the whole merged file
    raw_seconds: float
    raw_cached: bool
    wall_seconds: float
    work_seconds: float                 # data, raw result and references + the points' own work
    reused: int
    run_id: str | None
    experiment_id: str | None


def resolve_workers(value: Any, *, parallel_jobs: int = 1) -> int:
    """``sweep.workers``: an integer, or 'auto' = the cores available to this job (divided
    among the jobs a local joblib launcher runs side by side)."""
    if value in (None, "auto"):
        return max(1, available_cores() // max(1, parallel_jobs))
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"sweep.workers must be a positive integer or 'auto', got {value!r}") from None
    if n < 1:
        raise ConfigError(f"sweep.workers must be a positive integer or 'auto', got {value!r}")
    return n


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
            settings[0].validate(ctx.data.payload_array.dtype, has_geometry=ctx.data.meta.get("geometry") is not None)
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


def _select_figures(points: list[PointResult], codecs: Mapping[str, Any], policy: str) -> list[PointResult]:
    """The points whose figure the ``tracking.figures`` policy asks for."""
    if policy == "none":
        return []
    if policy == "all":
        return [p for p in points if p.lossy]
    wanted = set()
    for e in codecs.values():
        wanted.add(e.get("mlflow_run_id"))
        wanted.add((e.get("first_failure") or {}).get("mlflow_run_id"))
    chosen = [p for p in points if p.run_id and p.run_id in wanted]
    if policy == "failures":
        chosen += [p for p in points if p.lossy and not p.passed and p not in chosen]
    return chosen


class Study:
    """A configured study for one technique and dataset (build once, then ``run()``).

    Parameters
    ----------
    cfg : mapping
        The resolved config as plain containers (technique, dataset, codec, sweep, search,
        tracking, paths).
    runtime : mapping, optional
        What the launcher knows: ``parallel_jobs`` (jobs side by side on this machine),
        ``parent_run`` (a callable returning the multirun's MLflow run id for an
        experiment, or None).
    """

    def __init__(self, cfg: Mapping[str, Any], runtime: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.runtime = dict(runtime or {})
        tcfg = cfg["technique"]
        paths = cfg.get("paths") or {}
        self.spec = ContextSpec(technique=tcfg, dataset=cfg["dataset"], cache_dir=paths.get("cache_dir"))
        self.sweep = cfg["sweep"]
        self.workers = resolve_workers(self.sweep.get("workers", 1), parallel_jobs=self.runtime.get("parallel_jobs", 1))
        self.thresholds_dir = Path(paths["thresholds_dir"]) if paths.get("thresholds_dir") else None
        journal_dir = paths.get("journal_dir")
        self.journal = Journal(Path(journal_dir) / f"{tcfg['name']}.jsonl" if journal_dir else None)
        self.rates = _rates(cfg.get("acquisition") or {})  # checked before any work, like needed_ratio
        self.needed_ratio = _positive_number(tcfg.get("needed_ratio", 10.0), "technique.needed_ratio")
        gate_settings(TECHNIQUES.get(tcfg["name"]).gate_defaults, tcfg.get("gates"), technique=tcfg["name"])
        self.gates = GateReport({}, [], 0.0)
        self.figures = str((cfg.get("tracking") or {}).get("figures", "thresholds"))
        if self.figures not in FIGURE_POLICIES:
            raise ConfigError(f"tracking.figures must be one of {', '.join(FIGURE_POLICIES)}, got {self.figures!r}")

    # -- the study -----------------------------------------------------------------------------
    def run(self) -> StudyResult:
        part = self._name_dataset()
        # quality gates on the raw result: a wrong setup stops here, before any noise
        # reference or search is spent on it
        self.gates = check_gates(part, self.cfg["technique"].get("gates"), cache_dir=self.spec.cache_dir)
        # One pool of processes for the whole study: they share the counting-noise re-samplings,
        # then evaluate the points (one start-up each).
        pool = WorkerPool(self.spec, workers=self.workers, isolate=bool(self.sweep.get("isolate", True)),
                          timeout=self.sweep.get("timeout_s")) if self.workers > 1 else None
        if pool is None:
            return self._run(None)
        with pool:
            return self._run(pool)

    def _name_dataset(self) -> RawPart:
        """A dataset named from its file's stem is made unique by content against the
        thresholds file (``scan``, ``scan-2``): its spec then carries that name (the raw part
        is read here first; a renamed spec reads it once more). Returns the raw part."""
        part = raw_part(self.spec, processes=self.workers)
        data = part.raw.data
        path = self.thresholds_dir / f"{self.tname}.yaml" if self.thresholds_dir is not None else None
        name = resolve_dataset_name(path, name=data.name, given=bool(data.meta.get("name_given", True)),
                                    sha256=data.checksum, source=data.source)
        if name != data.name:
            log.info("dataset %s from %s is named %s (another %s with other content is in %s)", data.name,
                     data.source, name, data.name, path)
            self.spec = dataclasses.replace(self.spec, dataset={**self.spec.dataset, "name": name})
        return part

    def _run(self, pool: WorkerPool | None) -> StudyResult:
        t_start = time.perf_counter()
        ctx = context_for(self.spec, pool=pool)
        data = ctx.data
        log.info("dataset %s from %s: payload %s %s %s, sha256 %s", data.name, data.source, data.payload,
                 data.payload_array.shape, data.payload_array.dtype, data.checksum[:12])
        log.info("raw result %s in %.1f s (computed once, reused for every point)",
                 "from cache" if ctx.raw_cached else "computed", ctx.raw_seconds)
        self.skipped: dict[str, str] = {}
        self.noise = _noise_summary(ctx)
        curves = build_curves(self.cfg, ctx, self.skipped)
        tracker = make_tracker({**(self.cfg.get("tracking") or {"enabled": False}),
                                "experiment": (self.cfg.get("tracking") or {}).get("experiment") or self.tname})
        tracker.close_stale()
        versions = library_versions()
        run_id = self._open_run(tracker, ctx, curves, versions)
        try:
            points, reused = self._drive(ctx, curves, tracker, run_id, pool)
            # the science: reading the data, the raw result and references, the counting-noise
            # reference where this run computed it, and every point
            noise_s = 0.0 if ctx.noise.get("cached", True) else float(ctx.noise.get("seconds", 0.0))
            work = point_seconds(points) + ctx.raw_seconds + noise_s
            recorded, codecs, baselines, path, doc = self._thresholds(ctx, points, curves, versions, tracker, run_id)
            summary = self._report(ctx, points, recorded, codecs, baselines, tracker, run_id)
            report = self._expert_report(path, tracker, run_id)
            wall = time.perf_counter() - t_start
            tracker.log(run_id, metrics={
                "raw_seconds": ctx.raw_seconds, "n_points": len(points), "n_evaluated": len(points) - reused,
                "n_reused": reused, "n_failed_points": sum(p.status != "ok" for p in points),
                "n_passed_points": sum(p.passed for p in points), "wall_seconds": wall, "work_seconds": work,
            })
        except BaseException as exc:
            tracker.end_run(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        tracker.end_run(run_id, "FINISHED")
        log.info("\n%s", summary)
        for warning in self.gates.warnings:
            log.warning("%s: %s", ctx.data.name, warning)
        if path is not None:
            log.info("thresholds written to %s", path)
        if report is not None:
            log.info("expert report written to %s", report)
        if hint := tracker.ui_hint():
            log.info("%s", hint)
        return StudyResult(points, codecs, baselines, path, doc, ctx.raw_seconds, ctx.raw_cached, wall, work,
                           reused, run_id, tracker.experiment_id)

    @property
    def tname(self) -> str:
        return self.cfg["technique"]["name"]

    def _open_run(self, tracker, ctx: StudyContext, curves: list[Curve], versions: Mapping[str, str]) -> str | None:
        """The study's MLflow run (nested under the multirun's), with everything logged once."""
        data = ctx.data
        parent = self.runtime["parent_run"](tracker) if tracker.enabled and self.runtime.get("parent_run") else None
        run_id = tracker.start_run(f"{self.tname} · {Path(data.source).stem} · study", parent=parent,
                                   tags={"lossbound.role": "study", "lossbound.dataset": data.name,
                                         "lossbound.context": ctx.key})
        tracker.log(run_id, params={
            "technique": self.tname, "dataset": data.name, "dataset_sha256": data.checksum,
            "dataset_source": data.source, "pipeline": ctx.technique.describe(),
            "search": (self.cfg.get("search") or {}).get("strategy", "grid"), "workers": self.workers,
            "codecs": ", ".join(c.name for c in curves), **{f"version.{k}": v for k, v in versions.items()},
            # what the pipeline derived from the raw data (rotation centre, defect counts, ...)
            **{f"prepared.{k}": v for k, v in ctx.prepared.items() if not isinstance(v, (list, tuple, dict))},
        })
        # figures the pipeline derived once (e.g. what storing only a reduced result gives)
        tracker.log(run_id, metrics={f"{k}_{kk}": vv for k, v in ctx.prepared.items() if isinstance(v, dict)
                                     for kk, vv in v.items() if isinstance(vv, (int, float))})
        # the counting-noise reference: each criterion's noise effect and the range derived from it
        noise = self.noise
        tracker.log(run_id, params={"noise_model": noise.get("model") or f"unavailable: {noise.get('unavailable')}"},
                    metrics={"noise_reference_seconds": noise.get("seconds"), **{
                        f"noise.{m}.{k}": v for m, d in (noise.get("limits") or {}).items()
                        for k, v in d.items() if k in ("noise_effect", "min", "max") and v is not None}})
        # the quality gates: each one's value and status, and the warnings
        gates = self.gates.records
        tracker.log(run_id, params={f"gate.{n}": r["status"] for n, r in gates.items()},
                    metrics={f"gate.{n}.value": r["value"] for n, r in gates.items() if r["value"] is not None},
                    tags={"lossbound.gate_warnings": "; ".join(self.gates.warnings)} if self.gates.warnings else None)
        tracker.log_dataset(run_id, name=data.name, digest=data.checksum, source=data.source, context="raw")
        tracker.log_bytes(run_id, yaml.safe_dump(dict(self.cfg), sort_keys=False), "config.yaml")
        return run_id

    def _thresholds(self, ctx: StudyContext, points: list[PointResult], curves: list[Curve],
                    versions: Mapping[str, str], tracker, run_id: str | None):
        """This dataset's thresholds from every recorded point of the context (other jobs'
        included), merged into the thresholds file."""
        data = ctx.data
        recorded = {p.point_id: judge(p, ctx.tolerances) for p in self.journal.read(context=ctx.key).values()}
        recorded.update({p.point_id: p for p in points})
        codecs, baselines = derive_thresholds(recorded.values(), criteria=[c.metric for c in ctx.tolerances],
                                              tolerances=ctx.tolerances)
        searches = {c.name: c.search.describe() for c in curves if c.search is not None}
        rates = self.rates
        for e in (*codecs.values(), *baselines.values()):
            if (f := feasibility(e.get("compress_mbps"), rates)) is not None:
                e["feasibility"] = f
        by_name = {c.name: c for c in curves}
        for name, e in codecs.items():
            e["search"] = searches.get(name, {"strategy": "recorded points"})
            curve = by_name.get(name)
            if e.get("bound") is None and e.get("tested_values") and curve is not None \
                    and hasattr(curve.search, "at_limit"):
                least = min(e["tested_values"], key=curve.search.t)
                e["none_passed"] = (f"down to {least:g}, the least lossy value the codec takes on these data"
                                    if curve.search.at_limit(least) else
                                    f"down to {least:g}; the search stopped there (search.max_evaluations)")
            if e.get("bound") is not None and not e.get("confirmed"):
                log.warning("%s on %s: threshold %s not confirmed (less lossy passes: %s; needs two, one at most "
                            "half as lossy)", name, data.name, e["bound"], e.get("confirmed_by"))
            if e.get("passed_above_first_failure"):
                log.warning("%s on %s: passes above the first failure at %s (non-monotonic; not trusted)",
                            name, data.name, e["passed_above_first_failure"])
                tracker.log(run_id, tags={f"non_monotonic.{name}": e["passed_above_first_failure"]})
        # each threshold, its uncertainty and whether it is confirmed, on the study run
        metrics, tags = {}, {}
        for name, e in codecs.items():
            if e.get("bound") is None:
                continue
            lo, hi = (e.get("bound_range") or [None, None])[:2]
            metrics.update({f"threshold.{name}": e["bound"], f"threshold.{name}.range_lo": lo,
                            f"threshold.{name}.range_hi": hi})
            tags[f"threshold.{name}.confirmed"] = bool(e.get("confirmed"))
            tags[f"threshold.{name}.limiting"] = str(e.get("limiting_criterion"))
        tracker.log(run_id, metrics={k: v for k, v in metrics.items() if v is not None}, tags=tags)
        path = doc = None
        if self.thresholds_dir is not None:
            path = self.thresholds_dir / f"{self.tname}.yaml"
            entry = {
                "dataset": {"name": data.name, "source": data.source, "sha256": data.checksum},
                "pipeline": ctx.technique.describe(), "tolerances": ctx.tolerances.as_dict(),
                # what a threshold means: datasets combine only under the same spec
                "verdict_spec": {"tolerances": ctx.tolerances.as_dict(), "pipeline": ctx.technique.describe(),
                                 "noise": {**ctx.noise_settings.describe(), "mode": ctx.noise_settings.mode,
                                           "used": "values" in ctx.noise}},
                "versions": dict(versions), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "mlflow_study_run_id": run_id, "mlflow_tracking_uri": getattr(tracker, "uri", None),
                "context": ctx.key,
                # what the report draws: each criterion's range on this dataset, raw-vs-raw values
                "limits": {c.metric: ({"min": None, "max": 1.0, "kind": "frames"} if c.kind == "frames"
                                      else {"min": c.min, "max": c.max}) for c in ctx.tolerances},
                "ideal": {c.metric: ctx.raw_metrics.get(c.metric) for c in ctx.tolerances if c.kind == "scalar"},
                # every criterion with its numbers on this dataset (per-frame allowances included)
                "criteria_record": ctx.tolerances.record(),
                "noise_reference": self.noise,
                # how well the raw data fit the declared setup (quality gates)
                "gates": self.gates.records,
                "codecs": codecs, "baselines": baselines,
            }
            if self.skipped:
                entry["codecs_not_applicable"] = dict(self.skipped)
            if ctx.tolerances.not_applicable:
                entry["criteria_not_applicable"] = sorted(ctx.tolerances.not_applicable)
            if "reduction" in ctx.prepared:
                entry["reduction"] = ctx.prepared["reduction"]
            doc = update_thresholds(path, technique=self.tname, dataset_name=data.name, entry=entry, extra={
                "needed_ratio": self.needed_ratio,
                "acquisition": {f"{k}_gbps": v for k, v in rates.items()}})
            tracker.log_file(run_id, path)
        return list(recorded.values()), codecs, baselines, path, doc

    def _expert_report(self, path: Path | None, tracker, run_id: str | None) -> Path | None:
        """``runs/reports/<technique>.html`` from the merged thresholds file, also an artifact."""
        paths = self.cfg.get("paths") or {}
        if path is None or not paths.get("reports_dir"):
            return None
        try:
            report = write_report(path, journal_dir=paths.get("journal_dir"), reports_dir=Path(paths["reports_dir"]))
        except (InputError, OSError) as exc:  # the thresholds are written; a report problem must not undo the study
            log.error("expert report not written: %s", str(exc).splitlines()[0])
            return None
        tracker.log_file(run_id, report)
        return report

    def _report(self, ctx: StudyContext, points: list[PointResult], recorded: list[PointResult],
                codecs: Mapping[str, Any], baselines: Mapping[str, Any], tracker, run_id: str | None) -> str:
        """Figures (per the policy), the criteria-vs-value figure, summary and points."""
        for p in _select_figures(points, codecs, self.figures):
            tracker.log_bytes(p.run_id, render_figure(ctx, p), "comparison.png")
        fig = sweep_figure(recorded, ctx.tolerances, title=f"{self.tname} on {ctx.data.name}")
        tracker.log_bytes(run_id, _png(fig), "sweep.png")
        summary = format_summary(points, codecs, baselines, metrics=[c.metric for c in ctx.tolerances],
                                 per_frame={c.metric for c in ctx.tolerances if c.kind == "frames"})
        tracker.log_bytes(run_id, summary, "summary.txt")
        tracker.log_bytes(run_id, json.dumps([p.to_dict() for p in points], indent=1, default=str), "points.json")
        return summary

    # -- pieces --------------------------------------------------------------------------------
    def _drive(self, ctx: StudyContext, curves: list[Curve], tracker, parent: str | None,
               pool: WorkerPool | None) -> tuple[list[PointResult], int]:
        """Run every curve's search to its end, ``self.workers`` points at a time."""
        journal = {p.point_id: judge(p, ctx.tolerances) for p in self.journal.read(context=ctx.key).values()}
        known: dict[str, dict[Any, PointResult]] = {c.name: {} for c in curves}
        pending: dict[str, set] = {c.name: set() for c in curves}
        points: list[PointResult] = []
        reused = 0
        for c in curves:  # every recorded evaluation of a curve informs its search
            for p in journal.values():
                if p.lossy == c.template.spec.lossy and p.group == _group_of(c.template) and \
                        (c.search is not None or p.value == c.template.value):
                    p.reused = True
                    known[c.name][p.value] = p
                    points.append(p)
                    reused += 1
        if reused:
            log.info("reused %d finished points from %s", reused, self.journal.path)
        # decompressed payloads already run through the pipeline: one evaluated point per output
        outputs: dict[str, PointResult] = {}
        for p in points:
            _remember_output(outputs, p)
        in_flight: dict[concurrent.futures.Future, tuple[Curve, Any, str | None]] = {}
        lost: dict[tuple[str, Any], int] = {}
        tname, stem = self.tname, Path(ctx.data.source).stem
        bar = tqdm(desc=f"{tname} study on {ctx.data.name}", unit="pt", disable=not self.sweep.get("progress", True))
        with PointRunner(ctx, pool=pool, isolate=bool(self.sweep.get("isolate", True)),
                         timeout=self.sweep.get("timeout_s")) as runner, logging_redirect_tqdm():
            while True:
                # Fill the free slots with the curves' proposals.
                progressed = True
                while len(in_flight) < runner.workers and progressed:
                    progressed = False
                    # the longest remaining search first, so no worker ends up idle behind it
                    # (stable: ties keep the configured order)
                    for c in sorted(curves, key=lambda c: -c.steps_left(known[c.name], pending[c.name])):
                        if len(in_flight) >= runner.workers:
                            break
                        proposals = c.propose(known[c.name], pending[c.name])
                        if not proposals:
                            continue
                        value = proposals[0]
                        setting = c.setting(value)
                        rid = tracker.start_run(f"{tname} · {stem} · {setting.label}", parent=parent, tags={
                            "lossbound.role": "point", "point_id": ctx.point_id(setting),
                            "lossbound.dataset": ctx.data.name, "lossbound.context": ctx.key})
                        bar.set_postfix_str(setting.label)
                        known_outputs = {digest: p.point_id for digest, p in outputs.items()}
                        in_flight[runner.submit(setting, known_outputs=known_outputs)] = (c, value, rid)
                        pending[c.name].add(value)
                        progressed = True
                if not in_flight:
                    break
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                if any(is_broken_pool(f.exception()) for f in done):
                    # A worker process died (codec crashes are isolated, so this is rare): every
                    # point in flight is lost with the pool. Each is tried again once; a point
                    # lost twice is recorded failed, so a deterministic crash cannot loop.
                    for fut, (c, value, rid) in list(in_flight.items()):
                        pending[c.name].discard(value)
                        lost[(c.name, value)] = lost.get((c.name, value), 0) + 1
                        if lost[(c.name, value)] < 2:
                            tracker.end_run(rid, "KILLED")
                            continue
                        point = self._failed_point(ctx, c.setting(value), RuntimeError("worker process died twice"))
                        point.run_id = rid
                        self._record(tracker, point)
                        known[c.name][value] = point
                        points.append(point)
                    in_flight.clear()
                    runner.restart()
                    continue
                for fut in done:
                    c, value, rid = in_flight.pop(fut)
                    pending[c.name].discard(value)
                    exc = fut.exception()
                    point = fut.result() if exc is None else self._failed_point(ctx, c.setting(value), exc)
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
                    self._record(tracker, point)
                    known[c.name][value] = point
                    points.append(point)
                    bar.update(1)
        bar.close()
        return points, reused

    @staticmethod
    def _failed_point(ctx: StudyContext, setting: CodecSetting, exc: BaseException) -> PointResult:
        return PointResult(point_id=ctx.point_id(setting), label=setting.label, setting=setting.as_dict(),
                           lossy=setting.spec.lossy, status="failed", context=ctx.key, dataset=ctx.data.name,
                           reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])

    def _record(self, tracker, point: PointResult) -> None:
        """One batch to MLflow, the run ended, then the journal line (the point is finished)."""
        s = point.setting
        tags = {"passed": point.passed, "failures": "; ".join(point.failures) or "none"}
        if point.same_output_as:
            tags["same_output_as"] = point.same_output_as  # metrics of that point's identical output
        if point.status != "ok":
            tags["failure_reason"] = point.reason
        tracker.log(point.run_id, params={
            "codec": s["codec"], "mode": s.get("mode"), "bound": s.get("value"), "input_dtype": s.get("input_dtype"),
            "chunks": s.get("chunks"), "lossy": point.lossy, "dataset": point.dataset,
        }, metrics={**_codec_metrics(point.codec), **point.metrics, "passed": point.passed,
                    "point_seconds": point.seconds, **{f"use.{m}": u for m, u in point.uses.items()}}, tags=tags)
        tracker.end_run(point.run_id, "FINISHED" if point.status == "ok" else "FAILED")
        self.journal.append(point)


def _noise_summary(ctx: StudyContext) -> dict[str, Any]:
    """The counting-noise reference as recorded: model, estimator, K policy and the K used,
    its cost, and per criterion the noise effect beside the fixed and the derived range."""
    noise = ctx.noise
    if "values" not in noise:
        return {"unavailable": noise.get("unavailable"), "checks": noise.get("checks") or {}}
    effects = {c.metric: noise["effects"][c.metric] for c in ctx.tolerances if c.metric in noise["effects"]}
    frames = noise.get("frame_effects") or {}
    return {"model": noise["model"], "estimator": noise.get("estimator"), "resamples": noise["resamples"],
            "resamples_needed": noise.get("resamples_needed"), "policy": ctx.noise_settings.describe(),
            "seed": noise["seed"], "seconds": noise["seconds"], "cached": noise.get("cached", False),
            # whether the data behave as the noise model assumes (gain, photon dispersion)
            "checks": noise.get("checks") or {},
            "limits": ctx.tolerances.noise_limits(),
            # every criterion's change from counting noise alone (noise-referenced or not)
            "effects": {m: {"effect": e["effect"], "se": e["effect_sd"]} for m, e in effects.items()},
            "frame_effects": {c.metric: [{"effect": e["effect"], "se": e["effect_sd"]} for e in frames[c.metric]]
                              for c in ctx.tolerances if c.metric in frames}}


def _positive_number(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0:
        raise ConfigError(f"{key} must be a number > 0, got {value!r}")
    return number


def _rates(acquisition: Mapping[str, Any]) -> dict[str, float]:
    """Detector rates (GB/s) the feasibility table answers for: ``peak`` and ``detector``."""
    rates = {"peak": acquisition.get("peak_rate_gbps", 16.0), "detector": acquisition.get("detector_rate_gbps")}
    return {name: _positive_number(v, f"acquisition.{name}_rate_gbps") for name, v in rates.items() if v is not None}


def _remember_output(outputs: dict[str, PointResult], point: PointResult) -> None:
    """Keep ``point`` as the point of its decompressed output (the first ok one; a point that
    shared another's result has the same metrics)."""
    if point.status == "ok" and point.output_sha256:
        outputs.setdefault(point.output_sha256, point)


def _group_of(setting: CodecSetting) -> tuple:
    chunks = setting.chunks
    return (setting.codec, setting.mode, setting.input_dtype, tuple(chunks) if isinstance(chunks, (list, tuple)) else chunks)


def _codec_metrics(codec: Mapping[str, Any]) -> dict[str, float]:
    keys = ("ratio", "ratio_vs_input", "raw_nbytes", "stored_nbytes", "compress_mbps", "decompress_mbps",
            "compress_s", "decompress_s", "max_abs_error", "skipped_chunks", "bound_held",
            "masked_pixels", "masked_pixels_changed", "max_error_sigma", "mask_nbytes")
    return {k: float(codec[k]) for k in keys if codec.get(k) is not None}


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
