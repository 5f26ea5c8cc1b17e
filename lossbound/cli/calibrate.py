"""``lossbound calibrate technique=sx``: the noise yardstick against the truth.

For every criterion of the technique, on its built-in simulation: the true effect of one dose
of counting noise (the true result against independent measurements) beside what the study's
estimator (Poisson re-sampling of one measurement) makes of it, one line each:

    yardstick <technique> <criterion> true=<mean±se> estimated=<mean±se> ratio=<x>
    yardstick <technique> <criterion> fixed (<reason>)

Arguments other than the options below are Hydra overrides, as for ``lossbound study``
(``technique=azint``, ``dataset.simulation.n_frames=2``, ``technique.noise_reference.max_resamples=8``).
Without ``dataset=...`` every simulation in ``technique.calibration.datasets`` is calibrated
(azint: the powder and the SAXS simulation, each for the criteria that apply to it).
The full record goes to ``runs/calibration/<technique>.json``. Exit status 1 when a
noise-referenced criterion's ratio falls outside [0.8, 1.25] (it must keep a fixed tolerance).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lossbound.cli.parsing import OneLineParser, first_line
from lossbound.core.errors import InputError
from lossbound.core.files import atomic_write_text


def compose(overrides: list[str]):
    """The project's config as ``lossbound study <overrides>`` composes it (resolved)."""
    from lossbound.cli.config import compose as _compose

    return _compose(overrides, resolve=True)


def _description() -> str:
    """The module's doc without its first line's markup (the --help page)."""
    return __doc__.replace("``", "")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="lossbound calibrate", description=_description(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. technique=sx")
    parser.add_argument("--truths", type=int, default=None,
                        help="measurements compared with the true result (default: technique.calibration.truths)")
    parser.add_argument("--estimates", type=int, default=None,
                        help="measurements the study's estimator is run on, each as the measured dataset "
                             "(default: technique.calibration.estimates)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hdf5plugin").setLevel(logging.WARNING)
    try:
        args = parser.parse_args(argv)
        from omegaconf.errors import OmegaConfBaseException

        from lossbound.study.calibrate import calibrate, format_line
        from lossbound.study.context import ContextSpec
        from lossbound.study.executor import available_cores

        def composed(overrides: list[str]):
            try:
                return compose(overrides)
            except OmegaConfBaseException as exc:
                raise InputError(first_line(exc)) from None
            except Exception as exc:  # hydra's own override errors
                raise InputError(first_line(exc)) from None

        cfg = composed(args.overrides)
        plan = dict(cfg["technique"].get("calibration") or {})
        if any(o.split("=", 1)[0].lstrip("+~") == "dataset" for o in args.overrides):
            configs = [cfg]
        else:
            configs = [composed([*args.overrides, f"dataset={d}"]) for d in plan.get("datasets") or []] or [cfg]
        truths = args.truths or int(plan.get("truths", 12))
        estimates = args.estimates or int(plan.get("estimates", 2))
        workers = args.workers or available_cores()
        runs = []
        for c in configs:
            spec = ContextSpec(technique=c["technique"], dataset=c["dataset"], cache_dir=c["paths"].get("cache_dir"))
            runs.append((c["dataset"].get("name"), calibrate(spec, truths=truths, estimates=estimates,
                                                             workers=workers, progress=not args.no_progress)))
    except (InputError, OSError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    rows = merge(runs)
    for row in rows:
        print(format_line(row))
    name = cfg["technique"]["name"]
    out = Path(cfg["paths"]["runs_dir"]) / "calibration" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"technique": name, "datasets": [r[0] for r in runs], "truths": truths,
                                       "estimates": estimates, "criteria": [r.as_dict() for r in rows]},
                                      indent=1, default=str))
    print(f"record: {out}")
    return 1 if any(r.fixed is None and not r.inside for r in rows) else 0


def merge(runs):
    """One line per criterion and dataset it was calibrated on; a criterion calibrated on none
    keeps the first dataset's reason for being fixed."""
    by_criterion: dict[str, list] = {}
    for dataset, rows in runs:
        for r in rows:
            if len(runs) > 1:
                r.dataset = dataset
            by_criterion.setdefault(r.criterion, []).append(r)
    out = []
    for rows in by_criterion.values():
        calibrated = [r for r in rows if r.fixed is None]
        out += calibrated or rows[:1]
    return out


if __name__ == "__main__":
    sys.exit(main())
