"""``lossbound <command>``: one console script for every LossBound command.

    lossbound study technique=tomo          a study (Hydra overrides; the same as python -m evaluate)
    lossbound campaign run azint.yaml       many datasets, one job each (joblib here, or hydra/launcher=slurm)
    lossbound report tomo                   rebuild the expert report from the thresholds file
    lossbound review approve tomo sz3 ...   sign a threshold off in MLflow
    lossbound apply THRESHOLDS --codec ...  apply an approved threshold to a file, or export it
    lossbound ui                            the MLflow UI and the link to the runs
    lossbound calibrate technique=sx        the noise yardstick against a simulation's truth

``lossbound <command> --help`` describes each one.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

#: command -> (module with ``main``, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "study": ("lossbound.cli.evaluate", "run a study: search each codec's error bound on a dataset (Hydra overrides)"),
    "campaign": ("lossbound.cli.campaign", "run many datasets (a campaign file) through a Hydra launcher, one job each"),
    "report": ("lossbound.cli.report", "rebuild a technique's expert report from its thresholds file and journal"),
    "review": ("lossbound.cli.review", "approve or reject a codec's threshold (MLflow tags), or show review status"),
    "apply": ("lossbound.cli.apply", "write a file with an approved threshold's codec chain, or export the config"),
    "ui": ("lossbound.cli.ui", "start the MLflow UI on 127.0.0.1 and print the link to a technique's runs"),
    "calibrate": ("lossbound.cli.calibrate", "check the noise yardstick against a simulation whose truth is known"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lossbound <command> [arguments]", "",
             "How much lossy compression can a synchrotron technique take?", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "lossbound <command> --help describes a command; `lossbound study --help` lists the config groups.",
              "Outputs go to ./runs, or to $LOSSBOUND_HOME; MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME are honoured."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from lossbound import __version__

        print(f"lossbound {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; expected one of: {', '.join(COMMANDS)} (lossbound --help)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name == "study":
        # Hydra reads sys.argv itself
        sys.argv = [f"lossbound {name}", *rest]
        module.main()
        return 0
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
