"""The sweep: raw result once, then one evaluation point per (codec, error bound).

An evaluation point is a pure function of (dataset, codec setting, pipeline config); its
``point_id`` is a stable hash of those, logged with every MLflow run.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from compressors import CodecSetting, CodecWorker, settings_from_config
from evaluators import EVALUATORS
from evaluators.base import Evaluator, Outcome
from lossbound.cache import ResultCache
from lossbound.errors import ConfigError
from lossbound.hashing import stable_hash
from lossbound.plots import sweep_figure
from lossbound.points import PointResult
from lossbound.thresholds import accumulate_points, derive_thresholds, write_thresholds
from lossbound.tolerance import Tolerances
from lossbound.tracking import RunHandle, Tracker
from pipelines import TECHNIQUES
from pipelines.base import Dataset, Technique

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
class SweepResult:
    points: list[PointResult]
    codecs: dict[str, Any]
    baselines: dict[str, Any]
    thresholds_path: Path | None
    raw_seconds: float
    raw_cached: bool


def build_settings(codec_cfg: Mapping[str, Any], sweep_cfg: Mapping[str, Any]) -> list[CodecSetting]:
    """Lossless baselines first, then every lossy codec at every bound."""
    settings: list[CodecSetting] = []
    for name in sweep_cfg.get("baselines") or []:
        settings += settings_from_config(name, {"codec": name})
    default_bounds = sweep_cfg.get("bounds")
    for name, entry in (codec_cfg or {}).items():
        entry = dict(entry)
        if entry.get("bounds") is None:
            entry["bounds"] = default_bounds
        settings += settings_from_config(name, entry)
    if not settings:
        raise ConfigError("no codec settings to sweep: codec and sweep.baselines are both empty")
    return settings


class Sweep:
    """A configured sweep for one technique and dataset (build once, then ``run()``).

    Parameters
    ----------
    cfg : mapping
        The resolved Hydra config as plain containers (technique, dataset, codec, sweep,
        tracking, paths).
    """

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        tcfg = cfg["technique"]
        self.technique: Technique = TECHNIQUES.get(tcfg["name"])(tcfg.get("pipeline") or {})
        self.evaluators: list[Evaluator] = [
            EVALUATORS.get(name)(**(params or {})) for name, params in (tcfg.get("evaluators") or {}).items()
        ]
        self.tolerances = Tolerances(tcfg.get("tolerances"))
        self.settings = build_settings(cfg.get("codec") or {}, cfg["sweep"])
        paths = cfg.get("paths") or {}
        self.cache = ResultCache(paths.get("cache_dir"))
        self.thresholds_dir = Path(paths["thresholds_dir"]) if paths.get("thresholds_dir") else None

    # -- pieces ------------------------------------------------------------------------------
    def evaluate(self, raw: Outcome, comp: Outcome, references: Mapping[str, Any]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for ev in self.evaluators:
            metrics.update({k: float(v) for k, v in ev.compare(raw, comp, references[ev.name]).items()})
        return metrics

    def point_id(self, data: Dataset, setting: CodecSetting) -> str:
        return stable_hash({
            "dataset": data.checksum,
            "codec": setting.as_dict(),
            "pipeline": self.technique.describe(),
            "evaluators": self.cfg["technique"].get("evaluators"),
        })

    def _raw_outcome(self, data: Dataset) -> tuple[Outcome, dict[str, Any], float, bool]:
        key = {"dataset": data.checksum, "pipeline": self.technique.describe()}
        t0 = time.perf_counter()

        def compute():
            prepared = self.technique.prepare(data)
            return prepared, self.technique.run(data, prepared)

        prepared, result, hit = self.cache.get_or_compute(key, compute)
        return Outcome(data, result), prepared, time.perf_counter() - t0, hit

    def _run_point(
        self, setting: CodecSetting, raw: Outcome, prepared, references, worker: CodecWorker,
        handle: RunHandle,
    ) -> PointResult:
        data = raw.data
        point = PointResult(
            point_id=self.point_id(data, setting), label=setting.label, setting=setting.as_dict(),
            lossy=setting.spec.lossy,
        )
        t0 = time.perf_counter()
        try:
            rt = worker.roundtrip(data.payload_array, setting, timeout=self.cfg["sweep"].get("timeout_s"))
            point.codec = rt.summary()
            handle.log_metrics(rt.metrics())
            comp_data = data.with_payload(rt.decompressed)
            comp = Outcome(comp_data, self.technique.run(comp_data, prepared))
            point.metrics = self.evaluate(raw, comp, references)
        except Exception as exc:  # CodecCrash included: one failed point never ends the sweep
            point.status = "failed"
            point.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            log.warning("point %s failed: %s", setting.label, point.reason)
            handle.fail(point.reason)
            point.seconds = time.perf_counter() - t0
            return point
        verdict = self.tolerances.check(point.metrics)
        point.failures = list(verdict.failures)
        if rt.bound_held is False:
            point.failures.insert(0, f"codec broke its bound: max error {rt.max_abs_error:.4g} > {setting.value:g}")
        point.passed = not point.failures
        point.seconds = time.perf_counter() - t0
        handle.log_metrics(point.metrics | {"passed": point.passed, "point_seconds": point.seconds})
        handle.set_tags({"passed": point.passed, "failures": "; ".join(point.failures) or "none"})
        if self.cfg["tracking"].get("log_figures", True):
            fig = self.technique.figure(raw.result, comp.result, title=f"{data.name}: {setting.label}")
            handle.log_figure(fig, "comparison.png")
        return point

    def _warm_up(self, worker: CodecWorker, data: Dataset) -> None:
        """Load each codec's plugin in the worker on one frame, so the first measured point's
        throughput is not the plugin's start-up time. A crash here is left to the real point."""
        seen: set[str] = set()
        frame = data.payload_array[:1]
        for setting in self.settings:
            if setting.codec in seen:
                continue
            seen.add(setting.codec)
            try:
                worker.roundtrip(frame, setting, timeout=self.cfg["sweep"].get("timeout_s"))
            except Exception as exc:  # noqa: BLE001 - reported when the real point runs
                log.debug("warm-up of %s failed: %s", setting.label, exc)

    # -- the sweep ---------------------------------------------------------------------------
    def run(self) -> SweepResult:
        cfg = self.cfg
        tname = cfg["technique"]["name"]
        data = self.technique.load(cfg["dataset"])
        log.info("dataset %s from %s: payload %s %s %s, sha256 %s", data.name, data.source, data.payload,
                 data.payload_array.shape, data.payload_array.dtype, data.checksum[:12])
        raw, prepared, raw_seconds, hit = self._raw_outcome(data)
        log.info("raw result %s in %.1f s (computed once, reused for every bound)",
                 "from cache" if hit else "computed", raw_seconds)
        references = {ev.name: ev.reference(raw) for ev in self.evaluators}

        # Raw against itself must produce every tolerance metric and pass: checks the config.
        self_metrics = self.evaluate(raw, raw, references)
        if missing := self.tolerances.missing(self_metrics):
            raise ConfigError(
                f"technique.tolerances: no evaluator produces {', '.join(missing)}; "
                f"available metrics: {', '.join(sorted(self_metrics))}"
            )
        if not (v := self.tolerances.check(self_metrics)).passed:
            log.warning("raw data compared with itself fails the tolerances (%s)", "; ".join(v.failures))

        tracker = Tracker(cfg["tracking"] | {"experiment": cfg["tracking"].get("experiment") or tname})
        versions = library_versions()
        pipeline = self.technique.describe()
        common = {
            "technique": tname, "dataset": data.name, "dataset_sha256": data.checksum,
            "dataset_source": data.source, "pipeline": pipeline, **{f"version.{k}": v for k, v in versions.items()},
        }
        config_text = yaml.safe_dump(dict(cfg), sort_keys=False)
        points: list[PointResult] = []
        with tracker.run(f"{tname} sweep on {data.name}") as parent:
            parent.log_params(common | {"n_points": len(self.settings), "raw_cached": hit})
            parent.log_metrics({"raw_seconds": raw_seconds})
            parent.log_text(config_text, "config.yaml")
            bar = tqdm(self.settings, desc=f"{tname} sweep", unit="pt", disable=not cfg["sweep"].get("progress", True))
            with CodecWorker(isolate=bool(cfg["sweep"].get("isolate", True))) as worker, logging_redirect_tqdm():
                self._warm_up(worker, data)
                for setting in bar:
                    bar.set_postfix_str(setting.label)
                    with tracker.run(setting.label, nested=True) as handle:
                        s = setting.as_dict()
                        handle.log_params(common | {
                            "codec": s["codec"], "mode": s.get("mode"), "bound": s.get("value"),
                            "input_dtype": s.get("input_dtype"), "chunks": s.get("chunks"),
                            "lossy": setting.spec.lossy,
                        })
                        handle.log_text(config_text, "config.yaml")
                        point = self._run_point(setting, raw, prepared, references, worker, handle)
                        point.run_id = handle.run_id
                        handle.set_tags({"point_id": point.point_id})
                    points.append(point)
            criteria = [c.metric for c in self.tolerances]
            dataset_info = {"name": data.name, "source": data.source, "sha256": data.checksum}
            recorded = points
            path = None
            if self.thresholds_dir is not None:
                path = self.thresholds_dir / f"{tname}.yaml"
                context = {"technique": tname, "dataset": data.checksum, "pipeline": pipeline,
                           "evaluators": self.cfg["technique"].get("evaluators"),
                           "tolerances": self.tolerances.as_dict()}
                recorded = accumulate_points(path.with_suffix(".points.json"), context, points)
            codecs, baselines = derive_thresholds(recorded, criteria=criteria)
            if path is not None:
                write_thresholds(
                    path, technique=tname, dataset=dataset_info, pipeline=pipeline,
                    tolerances=self.tolerances.as_dict(), codecs=codecs, baselines=baselines,
                )
                parent.log_artifact(path)
            parent.log_figure(sweep_figure(points, self.tolerances, title=f"{tname} on {data.name}"), "sweep.png")
            summary = format_summary(points, codecs, baselines, metrics=criteria)
            parent.log_text(summary, "summary.txt")
            parent.log_text(json.dumps([dataclasses.asdict(p) for p in points], indent=1, default=str), "points.json")
            n_failed = sum(p.status != "ok" for p in points)
            parent.log_metrics({"n_failed_points": n_failed, "n_passed_points": sum(p.passed for p in points)})
        log.info("\n%s", summary)
        if path is not None:
            log.info("thresholds written to %s", path)
        return SweepResult(points, codecs, baselines, path, raw_seconds, hit)


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def format_summary(points: list[PointResult], codecs: Mapping[str, Any], baselines: Mapping[str, Any],
                   *, metrics: list[str]) -> str:
    """A console table: every point with the tolerance ``metrics``, then the threshold per codec."""
    metric_names = list(metrics)
    widths = [max(len(m), 9) + 2 for m in metric_names]
    head = (f"{'codec setting':<28}{'ratio':>8}{'MB/s c/d':>14}  {'max err':>8}"
            + "".join(f"{m:>{w}}" for m, w in zip(metric_names, widths)) + "  verdict")
    lines = [head, "-" * len(head)]
    for p in points:
        c = p.codec
        speeds = f"{_fmt(c.get('compress_mbps'), '.0f')}/{_fmt(c.get('decompress_mbps'), '.0f')}"
        if p.status != "ok":
            verdict = f"FAILED ({p.reason})"
        elif not p.lossy:
            verdict = "baseline"
        else:
            verdict = "pass" if p.passed else "fail: " + "; ".join(p.failures)
        lines.append(
            f"{p.label:<28}{_fmt(c.get('ratio'), '.2f'):>8}{speeds:>14}  {_fmt(c.get('max_abs_error')):>8}"
            + "".join(f"{_fmt(p.metrics.get(m), '.4g'):>{w}}" for m, w in zip(metric_names, widths)) + f"  {verdict}"
        )
    lines += ["", "Thresholds (largest bound with it and all smaller bounds inside tolerance):"]
    for name, e in codecs.items():
        if e.get("bound") is None:
            lines.append(f"  {name:<12} none of {e.get('tested_bounds')} passed")
        else:
            lines.append(f"  {name:<12} {e['mode']}={_fmt(e['bound'], 'g'):<8} ratio {_fmt(e.get('compression_ratio'), '.2f')}"
                         f"  ({e['hdf5plugin']['class']}(**{e['hdf5plugin']['kwargs']}))")
    for name, e in baselines.items():
        lines.append(f"  {name:<12} lossless ratio {_fmt(e.get('compression_ratio'), '.2f')}")
    return "\n".join(lines)
