"""What a study records in MLflow: one study run, and one run per evaluated point under it.

The study run holds everything logged once (dataset identity, pipeline, library versions,
the Hydra overrides, what the pipeline derived, the counting-noise reference, the quality
gates, the resolved config), then the thresholds with their ranges, the figures, the
summary and the points. A point run holds its codec setting (``bound`` as a param *and* a
metric, so the UI sorts and plots it as a number), the codec figures, every criterion's
metric and use, and the verdict.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lossbound.core.types import PointResult
from lossbound.tracking.tracker import NullTracker, Tracker, client_seconds, make_tracker

__all__ = ["StudyLog", "codec_metrics"]

_CODEC_KEYS = ("ratio", "ratio_vs_input", "raw_nbytes", "stored_nbytes", "compress_mbps", "decompress_mbps",
               "compress_s", "decompress_s", "max_abs_error", "skipped_chunks", "bound_held",
               "masked_pixels", "masked_pixels_changed", "max_error_sigma", "mask_nbytes")


def codec_metrics(codec: Mapping[str, Any]) -> dict[str, float]:
    """A round trip's figures that MLflow can plot."""
    return {k: float(codec[k]) for k in _CODEC_KEYS if codec.get(k) is not None}


class StudyLog:
    """One study's MLflow runs (a no-op with ``tracking.enabled=false``).

    Parameters
    ----------
    tracking : mapping
        The ``tracking`` config section (``enabled``, ``tracking_uri``, ``experiment``,
        ``experiment_prefix``, ...).
    technique, dataset, context, stem : str
        Names the runs carry: technique, dataset name, study context key, the file stem.
    """

    def __init__(self, tracking: Mapping[str, Any], *, technique: str, dataset: str, context: str,
                 stem: str) -> None:
        self._t0 = client_seconds()
        self.tracker: Tracker | NullTracker = make_tracker(tracking)
        self.tracker.close_stale()
        self.technique, self.dataset, self.context, self.stem = technique, dataset, context, stem
        self.run_id: str | None = None

    @property
    def experiment_id(self) -> str | None:
        return self.tracker.experiment_id

    @property
    def enabled(self) -> bool:
        return self.tracker.enabled

    # -- the study run ---------------------------------------------------------------------------
    def open(self, *, parent: Any = None, params: Mapping[str, Any], prepared: Mapping[str, Any],
             noise: Mapping[str, Any], gates: Mapping[str, Mapping[str, Any]], gate_warnings: Sequence[str],
             digest: str, source: str, config: Mapping[str, Any], overrides: Sequence[str] = ()) -> str | None:
        """Start the study run (nested under the multirun's when ``parent`` gives one) and log
        what is logged once. ``parent``: a callable ``tracker -> run id``, or None."""
        t = self.tracker
        parent_id = parent(t) if t.enabled and parent is not None else None
        self.run_id = rid = t.start_run(f"{self.technique} · {self.stem} · study", parent=parent_id,
                                        tags={"lossbound.role": "study", "lossbound.dataset": self.dataset,
                                              "lossbound.context": self.context})
        t.log(rid, params={**params, "hydra_overrides": " ".join(overrides) or "(none)",
                           # what the pipeline derived from the raw data (rotation centre, defect counts, ...)
                           **{f"prepared.{k}": v for k, v in prepared.items()
                              if not isinstance(v, (list, tuple, dict))}},
              tags={"lossbound.overrides": json.dumps(list(overrides))})
        # figures the pipeline derived once (e.g. what storing only a reduced result gives)
        t.log(rid, metrics={f"{k}_{kk}": vv for k, v in prepared.items() if isinstance(v, dict)
                            for kk, vv in v.items() if isinstance(vv, (int, float))})
        # the counting-noise reference: each criterion's noise effect and the range derived from it
        t.log(rid, params={"noise_model": noise.get("model") or f"unavailable: {noise.get('unavailable')}"},
              metrics={"noise_reference_seconds": noise.get("seconds"), **{
                  f"noise.{m}.{k}": v for m, d in (noise.get("limits") or {}).items()
                  for k, v in d.items() if k in ("noise_effect", "min", "max") and v is not None}})
        # the quality gates: each one's value and status, and the warnings
        t.log(rid, params={f"gate.{n}": r["status"] for n, r in gates.items()},
              metrics={f"gate.{n}.value": r["value"] for n, r in gates.items() if r["value"] is not None},
              tags={"lossbound.gate_warnings": "; ".join(gate_warnings)} if gate_warnings else None)
        t.log_dataset(rid, name=self.dataset, digest=digest, source=source, context="raw")
        t.log_bytes(rid, yaml.safe_dump(dict(config), sort_keys=False), "config.yaml")
        return rid

    def thresholds(self, codecs: Mapping[str, Mapping[str, Any]]) -> None:
        """Each threshold, its range and whether it is confirmed, on the study run."""
        metrics: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        for name, e in codecs.items():
            if e.get("passed_above_first_failure"):
                tags[f"non_monotonic.{name}"] = e["passed_above_first_failure"]
            if e.get("bound") is None:
                continue
            lo, hi = (e.get("bound_range") or [None, None])[:2]
            metrics.update({f"threshold.{name}": e["bound"], f"threshold.{name}.range_lo": lo,
                            f"threshold.{name}.range_hi": hi})
            tags[f"threshold.{name}.confirmed"] = bool(e.get("confirmed"))
            tags[f"threshold.{name}.limiting"] = str(e.get("limiting_criterion"))
        self.tracker.log(self.run_id, metrics={k: v for k, v in metrics.items() if v is not None}, tags=tags)

    def metrics(self, values: Mapping[str, Any]) -> None:
        self.tracker.log(self.run_id, metrics=values)

    @property
    def seconds(self) -> float:
        """Seconds this study has spent in the tracking store so far."""
        return client_seconds() - self._t0

    def artifact(self, data: bytes | str | None, name: str, *, run_id: str | None = None) -> None:
        self.tracker.log_bytes(run_id or self.run_id, data, name)

    def file(self, path: Path | None) -> None:
        if path is not None:
            self.tracker.log_file(self.run_id, path)

    def points(self, points: Sequence[PointResult]) -> None:
        self.artifact(json.dumps([p.to_dict() for p in points], indent=1, default=str), "points.json")

    def close(self, status: str = "FINISHED") -> None:
        self.tracker.end_run(self.run_id, status)

    def hint(self) -> str:
        return self.tracker.ui_hint()

    @property
    def uri(self) -> str | None:
        return getattr(self.tracker, "uri", None)

    # -- point runs ------------------------------------------------------------------------------
    def point_started(self, label: str, point_id: str) -> str | None:
        return self.tracker.start_run(f"{self.technique} · {self.stem} · {label}", parent=self.run_id, tags={
            "lossbound.role": "point", "point_id": point_id, "lossbound.dataset": self.dataset,
            "lossbound.context": self.context})

    def point_lost(self, run_id: str | None) -> None:
        self.tracker.end_run(run_id, "KILLED")

    def point_finished(self, point: PointResult) -> None:
        """One batch (params, metrics, tags), then the run ended."""
        s = point.setting
        tags = {"passed": point.passed, "failures": "; ".join(point.failures) or "none"}
        if point.same_output_as:
            tags["same_output_as"] = point.same_output_as  # metrics of that point's identical output
        if point.status != "ok":
            tags["failure_reason"] = point.reason
        bound = s.get("value")
        self.tracker.log(point.run_id, params={
            "codec": s["codec"], "mode": s.get("mode"), "bound": bound, "input_dtype": s.get("input_dtype"),
            "chunks": s.get("chunks"), "lossy": point.lossy, "dataset": point.dataset,
        }, metrics={**codec_metrics(point.codec), **point.metrics, "passed": point.passed,
                    "point_seconds": point.seconds, **{f"use.{m}": u for m, u in point.uses.items()},
                    **({"bound": float(bound)} if bound is not None else {})}, tags=tags)
        self.tracker.end_run(point.run_id, "FINISHED" if point.status == "ok" else "FAILED")
