"""``lossbound ui``: start the MLflow UI on 127.0.0.1 for the study store and print the link
that opens a technique's runs.

MLflow 3 opens new browsers on its empty GenAI page unless the link says
``workflowType=machine_learning``; the printed link does.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lossbound.core.paths import runs_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lossbound ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=None, metavar="URI",
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<runs>/mlflow.db "
                             "with <runs> = ./runs or $LOSSBOUND_HOME)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "tomo"),
                        help="experiment whose runs the link opens, with its prefix on a shared server "
                             "(e.g. beamline-id/tomo; default: $MLFLOW_EXPERIMENT_NAME, else tomo)")
    args = parser.parse_args(argv)
    store = args.store or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_dir() / 'mlflow.db'}"
    if store.startswith(("http://", "https://")):
        from lossbound.tracking.ui import server_link

        print(server_link(store, args.experiment))  # a tracking server serves its own UI
        return 0
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists():
        print(f"error: no MLflow store at {store}; run a study first (lossbound study)", file=sys.stderr)
        return 1
    from lossbound.tracking.ui import serve

    return serve(store, port=args.port, experiment=args.experiment)


if __name__ == "__main__":
    sys.exit(main())
