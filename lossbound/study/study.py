"""A study: one technique on one dataset, searched per codec, journaled, tracked, thresholded.

``Study(cfg).run()`` wires the floors together, in order:

1. the context (:mod:`~lossbound.study.context`: dataset, raw result and counting-noise
   reference from the cache, evaluator references), after the quality gates
   (:mod:`~lossbound.study.gates`) passed on the raw result;
2. the searches (:mod:`~lossbound.study.scheduler`: one per codec curve, plus the lossless
   baselines), reusing every finished point of the journal;
3. each point recorded as it ends: MLflow (:mod:`~lossbound.tracking.study_log`), then the
   journal (:mod:`~lossbound.results.journal`);
4. this dataset's thresholds from every recorded point of the context, merged into
   ``<runs>/thresholds/<technique>.yaml`` (:mod:`~lossbound.results.thresholds`);
5. figures, summary and thresholds on the study's MLflow run, the expert report
   (``<runs>/reports/<technique>.html``, also an artifact) and the printed summary.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

from lossbound.codecs import CodecSetting
from lossbound.core.errors import ConfigError, InputError
from lossbound.core.gates import gate_settings
from lossbound.core.png import figure_png
from lossbound.core.types import PointResult
from lossbound.pipelines import TECHNIQUES
from lossbound.results.journal import Journal
from lossbound.results.plots import sweep_figure
from lossbound.results.report import write_report
from lossbound.results.summary import format_summary
from lossbound.results.thresholds import (annotate_codecs, dataset_entry, derive_thresholds, resolve_dataset_name,
                                          update_thresholds)
from lossbound.study.context import ContextSpec, RawPart, StudyContext, context_for, raw_part
from lossbound.study.executor import PointRunner, WorkerPool, available_cores
from lossbound.study.gates import GateReport, check_gates
from lossbound.study.point import judge, point_seconds, render_figure
from lossbound.study.quiet import QuietCoreOptions, time_thresholds
from lossbound.study.scheduler import Curve, build_curves, drive
from lossbound.tracking.study_log import StudyLog
from lossbound.tracking.tracker import FIGURE_POLICIES

log = logging.getLogger(__name__)
# hdf5plugin logs every filter construction at INFO; one line per point drowns the summary.
logging.getLogger("hdf5plugin").setLevel(logging.WARNING)

_VERSIONED = ("lossbound", "numpy", "h5py", "hdf5plugin", "scikit-image", "algotom", "tomopy", "pyFAI", "mlflow")

__all__ = ["Curve", "Study", "StudyResult", "build_curves", "library_versions", "resolve_workers"]


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


class _Record:
    """Each point as it starts and ends: its MLflow run, then the journal line (finished)."""

    def __init__(self, study_log: StudyLog, journal: Journal) -> None:
        self.study_log, self.journal = study_log, journal

    def started(self, setting: CodecSetting, point_id: str) -> str | None:
        return self.study_log.point_started(setting.label, point_id)

    def lost(self, run_id: str | None) -> None:
        self.study_log.point_lost(run_id)

    def finished(self, point: PointResult) -> None:
        self.study_log.point_finished(point)
        self.journal.append(point)


class Study:
    """A configured study for one technique and dataset (build once, then ``run()``).

    Parameters
    ----------
    cfg : mapping
        The resolved config as plain containers (technique, dataset, codec, sweep, search,
        tracking, paths).
    runtime : mapping, optional
        What the launcher knows: ``parallel_jobs`` (jobs side by side on this machine),
        ``parent_run`` (a callable returning the multirun's MLflow run id for a tracker, or
        None), ``overrides`` (the Hydra overrides, logged with the study).
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
        self.quiet_core = QuietCoreOptions((cfg.get("acquisition") or {}).get("quiet_core"))
        self.needed_ratio = _positive_number(tcfg.get("needed_ratio", 10.0), "technique.needed_ratio")
        gate_settings(TECHNIQUES.get(tcfg["name"]).gate_defaults, tcfg.get("gates"), technique=tcfg["name"])
        self.gates = GateReport({}, [], 0.0)
        self.merge_seconds = 0.0
        self.figures = str((cfg.get("tracking") or {}).get("figures", "thresholds"))
        if self.figures not in FIGURE_POLICIES:
            raise ConfigError(f"tracking.figures must be one of {', '.join(FIGURE_POLICIES)}, got {self.figures!r}")

    @property
    def tname(self) -> str:
        return self.cfg["technique"]["name"]

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
        part = raw_part(self.spec, processes=self.workers, progress=bool(self.sweep.get("progress", True)))
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
        ctx = context_for(self.spec, pool=pool, progress=bool(self.sweep.get("progress", True)))
        data = ctx.data
        log.info("dataset %s from %s: payload %s %s %s, sha256 %s", data.name, data.source, data.payload,
                 data.payload_array.shape, data.payload_array.dtype, data.checksum[:12])
        log.info("raw result %s in %.1f s (computed once, reused for every point)",
                 "from cache" if ctx.raw_cached else "computed", ctx.raw_seconds)
        self.skipped: dict[str, str] = {}
        self.noise = ctx.noise.summary(ctx.tolerances, ctx.noise_settings)
        curves = build_curves(self.cfg, ctx, self.skipped)
        tracking = dict(self.cfg.get("tracking") or {"enabled": False})
        study_log = StudyLog({**tracking, "experiment": tracking.get("experiment") or self.tname},
                             technique=self.tname, dataset=data.name, context=ctx.key, stem=Path(data.source).stem)
        versions = library_versions()
        run_id = study_log.open(
            parent=self.runtime.get("parent_run"), prepared=ctx.prepared, noise=self.noise,
            gates=self.gates.records, gate_warnings=self.gates.warnings, digest=data.checksum, source=data.source,
            config=self.cfg, overrides=self.runtime.get("overrides") or (),
            params={"technique": self.tname, "dataset": data.name, "dataset_sha256": data.checksum,
                    "dataset_source": data.source, "pipeline": ctx.technique.describe(),
                    "search": (self.cfg.get("search") or {}).get("strategy", "grid"), "workers": self.workers,
                    "codecs": ", ".join(c.name for c in curves), **{f"version.{k}": v for k, v in versions.items()}})
        try:
            recorded = {p.point_id: judge(p, ctx.tolerances) for p in self.journal.read(context=ctx.key).values()}
            if recorded:
                log.info("reusing the %d finished points of this context in %s", len(recorded), self.journal.path)
            with PointRunner(ctx, pool=pool, isolate=bool(self.sweep.get("isolate", True)),
                             timeout=self.sweep.get("timeout_s")) as runner:
                points, reused = drive(ctx, curves, runner, recorded=recorded, hooks=_Record(study_log, self.journal),
                                       progress=bool(self.sweep.get("progress", True)),
                                       label=f"{self.tname} study on {data.name}")
            # the science: reading the data, the raw result and references, the counting-noise
            # reference where this run computed it, and every point
            noise_s = 0.0 if ctx.noise.cached else ctx.noise.seconds
            work = point_seconds(points) + ctx.raw_seconds + noise_s
            recorded, codecs, baselines, path, doc = self._thresholds(ctx, points, curves, versions, study_log)
            summary = self._report(ctx, points, recorded, codecs, baselines, study_log)
            report = self._expert_report(path, study_log)
            wall = time.perf_counter() - t_start
            study_log.metrics({
                "raw_seconds": ctx.raw_seconds, "n_points": len(points), "n_evaluated": len(points) - reused,
                "n_reused": reused, "n_failed_points": sum(p.status != "ok" for p in points),
                "n_passed_points": sum(p.passed for p in points), "wall_seconds": wall, "work_seconds": work,
                # what a shared tracking server and thresholds file cost (a campaign's scale)
                "tracking_seconds": study_log.seconds, "thresholds_merge_seconds": self.merge_seconds,
            })
        except BaseException as exc:
            study_log.close("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        study_log.close("FINISHED")
        log.info("\n%s", summary)
        for warning in self.gates.warnings:
            log.warning("%s: %s", ctx.data.name, warning)
        if path is not None:
            log.info("thresholds written to %s", path)
        if report is not None:
            log.info("expert report written to %s", report)
        if hint := study_log.hint():
            log.info("%s", hint)
        return StudyResult(points, codecs, baselines, path, doc, ctx.raw_seconds, ctx.raw_cached, wall, work,
                           reused, run_id, study_log.experiment_id)

    def _thresholds(self, ctx: StudyContext, points: list[PointResult], curves: list[Curve],
                    versions: Mapping[str, str], study_log: StudyLog):
        """This dataset's thresholds from every recorded point of the context (other jobs'
        included), merged into the thresholds file."""
        data = ctx.data
        recorded = {p.point_id: judge(p, ctx.tolerances) for p in self.journal.read(context=ctx.key).values()}
        recorded.update({p.point_id: p for p in points})
        codecs, baselines = derive_thresholds(recorded.values(), criteria=[c.metric for c in ctx.tolerances],
                                              tolerances=ctx.tolerances)
        # the search is over: each threshold and baseline timed on a core nothing else of the study uses
        time_thresholds(ctx, codecs, baselines, recorded.values(), options=self.quiet_core,
                        isolate=bool(self.sweep.get("isolate", True)))
        annotate_codecs(codecs, baselines, searches={c.name: c.search for c in curves if c.search is not None},
                        rates=self.rates, dataset=data.name)
        study_log.thresholds(codecs)
        path = doc = None
        if self.thresholds_dir is not None:
            path = self.thresholds_dir / f"{self.tname}.yaml"
            declared = {k: self.spec.dataset[k] for k in ("group", "notes") if self.spec.dataset.get(k) is not None}
            entry = dataset_entry(
                dataset={"name": data.name, "source": data.source, "sha256": data.checksum, **declared},
                pipeline=ctx.technique.describe(), tolerances=ctx.tolerances,
                noise={**ctx.noise_settings.describe(), "mode": ctx.noise_settings.mode,
                       "used": ctx.noise.available},
                noise_summary=self.noise, versions=versions, run_id=study_log.run_id, tracking_uri=study_log.uri,
                context=ctx.key, ideal=ctx.raw_metrics, gates=self.gates.records, codecs=codecs,
                baselines=baselines, skipped=self.skipped, extras=ctx.technique.report_extras(ctx.prepared))
            if (campaign := self.cfg.get("campaign") or {}).get("entry"):
                # what `lossbound campaign run` checks to skip a dataset already done
                entry["campaign"] = {k: campaign.get(k) for k in ("file", "entry", "entry_key", "run_key")}
            t0 = time.perf_counter()
            doc = update_thresholds(path, technique=self.tname, dataset_name=data.name, entry=entry, extra={
                "needed_ratio": self.needed_ratio,
                "acquisition": {f"{k}_gbps": v for k, v in self.rates.items()}})
            self.merge_seconds = time.perf_counter() - t0
            study_log.file(path)
        return list(recorded.values()), codecs, baselines, path, doc

    def _expert_report(self, path: Path | None, study_log: StudyLog) -> Path | None:
        """``<runs>/reports/<technique>.html`` from the merged thresholds file, also an artifact."""
        paths = self.cfg.get("paths") or {}
        if path is None or not paths.get("reports_dir"):
            return None
        try:
            report = write_report(path, journal_dir=paths.get("journal_dir"), reports_dir=Path(paths["reports_dir"]))
        except (InputError, OSError) as exc:  # the thresholds are written; a report problem must not undo the study
            log.error("expert report not written: %s", str(exc).splitlines()[0])
            return None
        study_log.file(report)
        return report

    def _report(self, ctx: StudyContext, points: list[PointResult], recorded: list[PointResult],
                codecs: Mapping[str, Any], baselines: Mapping[str, Any], study_log: StudyLog) -> str:
        """Figures (per the policy), the criteria-vs-value figure, summary and points."""
        for p in _select_figures(points, codecs, self.figures):
            study_log.artifact(render_figure(ctx, p), "comparison.png", run_id=p.run_id)
        try:
            fig = sweep_figure(recorded, ctx.tolerances, title=f"{self.tname} on {ctx.data.name}")
            study_log.artifact(figure_png(fig), "sweep.png")
        except (ValueError, OverflowError) as exc:  # a figure must not undo a finished study
            log.warning("sweep figure not drawn: %s", str(exc).splitlines()[0])
        summary = format_summary(points, codecs, baselines, metrics=[c.metric for c in ctx.tolerances],
                                 per_frame={c.metric for c in ctx.tolerances if c.kind == "frames"})
        study_log.artifact(summary, "summary.txt")
        study_log.points(points)
        return summary


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
    if unknown := sorted(set(acquisition) - {"peak_rate_gbps", "detector_rate_gbps", "quiet_core"}):
        raise ConfigError(f"acquisition: unknown key(s) {', '.join(unknown)}; expected peak_rate_gbps, "
                          "detector_rate_gbps, quiet_core")
    rates = {"peak": acquisition.get("peak_rate_gbps", 16.0), "detector": acquisition.get("detector_rate_gbps")}
    return {name: _positive_number(v, f"acquisition.{name}_rate_gbps") for name, v in rates.items() if v is not None}
