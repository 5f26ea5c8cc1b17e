"""``lossbound report TECHNIQUE``: rebuild ``runs/reports/<technique>.html`` from the
thresholds file and the journal (a study writes it too; rebuild after a sign-off or to see
another technique's gains).

Options: ``--runs-dir`` (default: ``./runs``, or ``$LOSSBOUND_HOME``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lossbound.cli.parsing import OneLineParser, first_line
from lossbound.core.errors import InputError
from lossbound.core.paths import runs_dir
from lossbound.results.report import write_report


_DESCRIPTION = ("Rebuild <runs>/reports/<technique>.html from the thresholds file and the journal of points "
                "(a study writes it too; rebuild after a sign-off).")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="lossbound report", description=_DESCRIPTION)
    parser.add_argument("technique", help="technique whose thresholds file <runs-dir>/thresholds/<technique>.yaml "
                                          "is drawn (tomo, azint, sx, ...)")
    parser.add_argument("--runs-dir", type=Path, default=None, metavar="DIR",
                        help="the study outputs (default: ./runs, or $LOSSBOUND_HOME)")
    try:
        args = parser.parse_args(argv)
        args.runs_dir = args.runs_dir or runs_dir()
        path = args.runs_dir / "thresholds" / f"{args.technique}.yaml"
        out = write_report(path, journal_dir=args.runs_dir / "journal", reports_dir=args.runs_dir / "reports")
    except (InputError, OSError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
