"""``python -m lossbound.report TECHNIQUE``: rebuild ``runs/reports/<technique>.html`` from the
thresholds file and the journal (a study writes it too; rebuild after a sign-off or to see
another technique's gains).

Options: ``--runs-dir`` (default: the project's ``runs``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lossbound.core.cli import OneLineParser, first_line
from lossbound.core.errors import InputError
from lossbound.study.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m lossbound.report", description=__doc__.splitlines()[0])
    parser.add_argument("technique")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    try:
        args = parser.parse_args(argv)
        path = args.runs_dir / "thresholds" / f"{args.technique}.yaml"
        out = write_report(path, journal_dir=args.runs_dir / "journal", reports_dir=args.runs_dir / "reports")
    except (InputError, OSError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
