"""MLflow logging: one experiment per technique, a parent run per sweep, a child run per point.

Store: sqlite (``runs/mlflow.db``; MLflow 3 disables the ``./mlruns`` file store by default),
artifacts under ``runs/mlartifacts/<experiment>``. Review with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

_PARAM_MAX = 6000  # MLflow's limit on a param value


def split_finite(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Finite metrics to log, and the rest (inf/NaN) to tag: MLflow's SQL store would turn
    inf into 1.8e308, a number nobody should read as a measurement."""
    finite, other = {}, {}
    for k, v in metrics.items():
        if v is None or isinstance(v, bool):
            v = float(v) if isinstance(v, bool) else v
        if v is None:
            continue
        v = float(v)
        (finite if math.isfinite(v) else other)[k] = v
    return finite, other


class RunHandle:
    """What a point (or sweep) may log into its open run."""

    def __init__(self, mlflow_module, run) -> None:
        self._m = mlflow_module
        self.run_id: str | None = run.info.run_id if run is not None else None
        self.status = "FINISHED"

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self._m:
            self._m.log_params({k: str(v)[:_PARAM_MAX] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        finite, other = split_finite(metrics)
        if self._m:
            if finite:
                self._m.log_metrics(finite)
            if other:
                self._m.set_tag("non_finite_metrics", ", ".join(f"{k}={v}" for k, v in other.items()))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._m:
            self._m.set_tags({k: str(v)[:5000] for k, v in tags.items()})

    def log_text(self, text: str, name: str) -> None:
        if self._m:
            self._m.log_text(text, name)

    def log_figure(self, fig, name: str) -> None:
        if self._m and fig is not None:
            self._m.log_figure(fig, name)

    def log_artifact(self, path: Path) -> None:
        if self._m:
            self._m.log_artifact(str(path))

    def fail(self, reason: str) -> None:
        """Mark the run FAILED with its reason (kept as tag ``failure_reason``)."""
        self.status = "FAILED"
        self.set_tags({"failure_reason": reason})


class Tracker:
    """Opens runs in the configured MLflow store (or does nothing when disabled).

    Parameters
    ----------
    config : mapping
        ``tracking`` section: enabled, tracking_uri, artifact_root, experiment.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.enabled = bool(config.get("enabled", True))
        self._m = None
        if not self.enabled:
            return
        import mlflow

        uri = str(config["tracking_uri"])
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        name = str(config["experiment"])
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            root = Path(str(config["artifact_root"])) / name
            root.mkdir(parents=True, exist_ok=True)
            mlflow.create_experiment(name, artifact_location=root.resolve().as_uri())
        mlflow.set_experiment(name)
        self._m = mlflow
        self.uri = uri

    @contextlib.contextmanager
    def run(self, name: str, *, nested: bool = False) -> Iterator[RunHandle]:
        """An MLflow run that ends FINISHED, or FAILED when the body raises or calls ``fail``."""
        if self._m is None:
            yield RunHandle(None, None)
            return
        active = self._m.start_run(run_name=name, nested=nested)
        handle = RunHandle(self._m, active)
        try:
            yield handle
        except BaseException as exc:
            handle.fail(f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            self._m.end_run(status="FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
            raise
        self._m.end_run(status=handle.status)
