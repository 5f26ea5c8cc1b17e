"""MLflow logging through ``MlflowClient`` with explicit run ids.

One experiment per technique; a parent run per study job (nested under the multirun's run
when launched with ``-m``), one child run per evaluated point. Each point costs three store
calls: ``create_run`` when it starts (so a killed study leaves it RUNNING, and the next run
closes it KILLED), one ``log_batch`` and ``set_terminated`` when it ends. The resolved config
is logged once per study; figures only for the points the ``figures`` policy selects.

Store: sqlite (``<runs>/mlflow.db``) by default, ``$MLFLOW_TRACKING_URI`` when set, or a
tracking server (``http://host:port``), which is the multi-user set-up. "database is locked" is
retried, never dropped. Every run carries MLflow's standard tags (``mlflow.user``,
``mlflow.source.name``, ``mlflow.source.git.commit`` when LossBound runs from a git checkout)
and ``lossbound.version``. Only MLflow's public client API is used; this package is the only
one that imports ``mlflow`` (an import-linter contract).
"""
from __future__ import annotations

import contextlib
import functools
import getpass
import logging
import math
import os
import socket
import tempfile
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mlflow.exceptions import MlflowException as TrackingError

from lossbound import __version__
from lossbound.core.paths import checkout_root

log = logging.getLogger(__name__)

T = TypeVar("T")
_PARAM_MAX = 6000  # MLflow's limit on a param value
TAG_MAX = 5000
FIGURE_POLICIES = ("none", "thresholds", "failures", "all")

__all__ = ["FIGURE_POLICIES", "NullTracker", "TAG_MAX", "Tracker", "TrackingError", "client_seconds", "make_tracker",
           "retry",
           "runs_link", "standard_tags"]


@functools.lru_cache(maxsize=1)
def standard_tags() -> dict[str, str]:
    """MLflow's standard run tags that apply (user, source, git commit of a checkout) and the
    LossBound version. The user is the tracking server's login where there is one
    (``MLFLOW_TRACKING_USERNAME``: on a shared server, jobs run by a service account on a
    cluster still name who ran them), else the operating-system user."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = os.environ.get("USER", "unknown")
    tags = {"mlflow.user": user, "mlflow.source.type": "LOCAL",
            "mlflow.source.name": Path(sys.argv[0]).name or "lossbound", "lossbound.version": __version__}
    root = checkout_root()
    if root is not None:
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                tags["mlflow.source.git.commit"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return tags


def split_finite(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Finite metrics to log, and the rest (inf/NaN) to tag: MLflow's SQL store would turn
    inf into 1.8e308, a number nobody should read as a measurement."""
    finite, other = {}, {}
    for k, v in metrics.items():
        if v is None:
            continue
        v = float(v)
        (finite if math.isfinite(v) else other)[k] = v
    return finite, other


_CLIENT_SECONDS = [0.0]


def client_seconds() -> float:
    """Seconds this process has spent in MLflow client calls (:func:`retry`), retries included:
    what the tracking store costs a study."""
    return _CLIENT_SECONDS[0]


def retry(fn: Callable[..., T], *args: Any, tries: int = 8, also: tuple[str, ...] = (), **kwargs: Any) -> T:
    """Call an MLflow client method, retrying transient store errors (sqlite locks, 5xx, and
    the error texts in ``also``)."""
    t0 = time.perf_counter()
    try:
        return _retry(fn, *args, tries=tries, also=also, **kwargs)
    finally:
        _CLIENT_SECONDS[0] += time.perf_counter() - t0


def _retry(fn: Callable[..., T], *args: Any, tries: int, also: tuple[str, ...], **kwargs: Any) -> T:
    from mlflow.exceptions import MlflowException

    delay = 0.1
    for attempt in range(tries):
        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            text = str(exc).lower()
            transient = any(t in text for t in ("locked", "temporarily", "503", "500", *also))
            if not transient or attempt == tries - 1:
                raise
            log.debug("MLflow store busy (%s); retrying in %.1f s", text.splitlines()[0], delay)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


def ui_command(tracking_uri: str) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def runs_link(base_url: str, experiment_id: str) -> str:
    """Deep link to the experiment's runs in the "Model training" view of MLflow 3's UI
    (without ``workflowType`` a new browser opens on the empty GenAI page)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class Tracker:
    """Runs in the configured MLflow store.

    Parameters
    ----------
    config : mapping
        ``tracking`` section: ``tracking_uri``, ``artifact_root`` (local stores only),
        ``experiment``.
    """

    enabled = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        from mlflow import MlflowClient

        uri = str(config["tracking_uri"])
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.uri = uri
        # a facility's shared server: ``tracking.experiment_prefix`` (e.g. "beamline-id/")
        self.experiment_name = f"{config.get('experiment_prefix') or ''}{config['experiment']}"
        # Jobs starting together on a new sqlite store would race through its schema
        # migrations ("Online migration expected to match one row"): one at a time.
        lock = contextlib.nullcontext()
        if uri.startswith("sqlite:///"):
            from filelock import FileLock

            lock = FileLock(uri[len("sqlite:///"):] + ".lock")
        with lock:
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(config)

    def _experiment(self, config: Mapping[str, Any]) -> str:
        name = self.experiment_name
        exp = retry(self.client.get_experiment_by_name, name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if not self.uri.startswith(("http://", "https://")) and config.get("artifact_root"):
            root = Path(str(config["artifact_root"])) / name
            root.mkdir(parents=True, exist_ok=True)
            location = root.resolve().as_uri()
        try:
            return retry(self.client.create_experiment, name, artifact_location=location)
        except TrackingError:  # another job created it meanwhile
            return retry(self.client.get_experiment_by_name, name).experiment_id

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, name: str, *, parent: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
        all_tags = {**standard_tags(), "lossbound.host": socket.gethostname(), "lossbound.pid": str(os.getpid())}
        all_tags.update({k: str(v)[:TAG_MAX] for k, v in (tags or {}).items()})
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = retry(self.client.create_run, self.experiment_id, tags=all_tags, run_name=name)
        return run.info.run_id

    def log(self, run_id: str | None, *, params: Mapping[str, Any] | None = None,
            metrics: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Params, metrics and tags in one ``log_batch`` (non-finite metrics become a tag)."""
        if run_id is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        finite, other = split_finite(metrics or {})
        tags = dict(tags or {})
        if other:
            tags["non_finite_metrics"] = ", ".join(f"{k}={v}" for k, v in other.items())
        now = int(time.time() * 1000)
        retry(
            self.client.log_batch, run_id,
            metrics=[Metric(k, v, now, 0) for k, v in finite.items()],
            params=[Param(k, str(v)[:_PARAM_MAX]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)[:TAG_MAX]) for k, v in tags.items()],
        )

    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id is not None:
            retry(self.client.set_terminated, run_id, status)

    def log_bytes(self, run_id: str | None, data: bytes | str, name: str) -> None:
        """An artifact file ``name`` holding ``data``."""
        if run_id is None or data is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data.encode() if isinstance(data, str) else data)
            retry(self.client.log_artifact, run_id, str(path))

    def log_file(self, run_id: str | None, path: Path) -> None:
        if run_id is not None:
            retry(self.client.log_artifact, run_id, str(path))

    def log_dataset(self, run_id: str | None, *, name: str, digest: str, source: str, context: str) -> None:
        """The dataset as an MLflow dataset input (name, sha256 digest, source)."""
        if run_id is None:
            return
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        kind = "http" if str(source).startswith(("http://", "https://")) else "local"
        entity = Dataset(name=name, digest=digest[:36], source_type=kind, source=json.dumps({"uri": str(source)}))
        # Jobs of a multirun log the same dataset at once; the store checks for it, then
        # inserts, so the slower job hits the unique constraint. Its retry finds the row.
        retry(self.client.log_inputs, run_id, also=("unique constraint failed: datasets",),
               datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])

    def close_stale(self) -> int:
        """Runs this host left RUNNING from a process that is gone (kill -9): set KILLED."""
        host = socket.gethostname()
        runs = retry(self.client.search_runs, [self.experiment_id],
                      filter_string="attributes.status = 'RUNNING'", max_results=5000)
        closed = 0
        for run in runs:
            tags = run.data.tags
            if tags.get("lossbound.host") != host:
                continue
            try:
                pid = int(tags.get("lossbound.pid", "0"))
            except ValueError:
                continue
            if pid and not _alive(pid):
                retry(self.client.set_terminated, run.info.run_id, "KILLED")
                closed += 1
        if closed:
            log.info("closed %d run(s) left RUNNING by a killed study as KILLED", closed)
        return closed

    def ui_hint(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"MLflow runs: {runs_link(self.uri, self.experiment_id)}"
        return (f"review in MLflow: {ui_command(self.uri)}\n"
                f"  then open {runs_link('http://127.0.0.1:5000', self.experiment_id)}\n"
                f"  (or: lossbound ui, which starts it and prints the link)")


class NullTracker:
    """``tracking.enabled=false``: the same calls, nothing stored."""

    enabled = False
    experiment_id = None

    def start_run(self, *a: Any, **k: Any) -> None:
        return None

    def log(self, *a: Any, **k: Any) -> None: ...
    def end_run(self, *a: Any, **k: Any) -> None: ...
    def log_bytes(self, *a: Any, **k: Any) -> None: ...
    def log_file(self, *a: Any, **k: Any) -> None: ...
    def log_dataset(self, *a: Any, **k: Any) -> None: ...

    def close_stale(self) -> int:
        return 0

    def ui_hint(self) -> str:
        return ""


def make_tracker(config: Mapping[str, Any]) -> Tracker | NullTracker:
    return Tracker(config) if config.get("enabled", True) else NullTracker()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
