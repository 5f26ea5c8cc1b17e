"""The MLflow UI on 127.0.0.1 for a store, and the link that opens a technique's runs."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

from lossbound.tracking.tracker import runs_link


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_link(uri: str, experiment: str) -> str:
    """The link to ``experiment``'s runs on a tracking server (which serves its own UI)."""
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if exp is None:
        return f"MLflow UI at {uri} (no experiment {experiment!r} yet)"
    return f"MLflow UI: {runs_link(uri, exp.experiment_id)}"


def serve(store: str, *, port: int = 0, experiment: str = "tomo") -> int:
    """Start ``mlflow ui`` on ``store``, print the runs link, wait until it ends (Ctrl-C)."""
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=store).get_experiment_by_name(experiment)
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                             "--host", "127.0.0.1", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    time.sleep(1.0)
    if exp is None:
        print(f"MLflow UI at {base} (no experiment {experiment!r} yet)")
    else:
        print(f"MLflow UI: {runs_link(base, exp.experiment_id)}")
    print("Ctrl-C stops it.")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return 0
