"""``python -m lossbound.ui``: start the MLflow UI on 127.0.0.1 for the project's store and
print the link that opens a technique's runs (MLflow 3 opens new browsers on its empty GenAI
page unless the link says ``workflowType=machine_learning``).

Options: ``--store sqlite:///runs/mlflow.db`` (default: the project's store), ``--port`` (a
free one by default), ``--experiment tomo``.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from lossbound.study.tracking import runs_link

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossbound.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'runs' / 'mlflow.db'}")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--experiment", default="tomo")
    args = parser.parse_args(argv)
    if args.store.startswith("sqlite:///") and not Path(args.store[len("sqlite:///"):]).exists():
        print(f"error: no MLflow store at {args.store}; run a study first (python -m evaluate)", file=sys.stderr)
        return 1
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=args.store).get_experiment_by_name(args.experiment)
    port = args.port or _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.store,
                             "--host", "127.0.0.1", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    time.sleep(1.0)
    if exp is None:
        print(f"MLflow UI at {base} (no experiment {args.experiment!r} yet)")
    else:
        print(f"MLflow UI: {runs_link(base, exp.experiment_id)}")
    print("Ctrl-C stops it.")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return 0


if __name__ == "__main__":
    sys.exit(main())
