"""``lossbound review``: experts approve or reject a threshold where they look — MLflow.

    lossbound review approve tomo sz3 [--by NAME] [--note TEXT]
    lossbound review reject  tomo sz3 --by NAME --note "ring artefacts on the tooth"
    lossbound review status  tomo [sz3]
    lossbound review approve azint sz3 --group powder   # one group's (sample type's) threshold

``approve``/``reject`` tag every MLflow run behind the codec's combined threshold (per
contributing dataset: the point at the threshold and the study run) with
``lossbound.review.{decision,reviewer,date,note,authenticated,codec,fingerprint}`` (a group's:
``lossbound.review.group.<group>.*``) and, only when
every run is tagged, record the decision in ``<thresholds-dir>/<technique>.yaml`` (``reviews``).
A changed dataset or tolerance makes the decision *stale* (``status`` shows it).

Who signs: on a tracking server running MLflow's basic-auth app, the user logged in through
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (asked of the server, never taken
from the command line; ``--by`` must match it), and that user needs EDIT permission on the
experiment. Elsewhere (sqlite, a server without auth) ``--by NAME`` is required and recorded
as not authenticated.

Tracking store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the store the thresholds
file records for the datasets behind the threshold (``datasets.<name>.mlflow_tracking_uri``),
else ``mlflow.db`` beside the thresholds folder (the study's ``runs/``), else
``sqlite:///<runs>/mlflow.db`` (``./runs`` or ``$LOSSBOUND_HOME``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from lossbound.cli.parsing import OneLineParser, UsageError, first_line
from lossbound.core.errors import InputError
from lossbound.core.paths import runs_dir
from lossbound.results import signoff
from lossbound.results.report import write_report
from lossbound.tracking.review import reviewer, tag_runs
from lossbound.tracking.tracker import TAG_MAX, TrackingError

TAG_PREFIX = "lossbound.review."
_TAG_KEYS = ("decision", "reviewer", "date", "note", "authenticated", "codec", "fingerprint")
_PAST = {"approve": "approved", "reject": "rejected"}


_WHO_SIGNS = """Who signs: on a tracking server running MLflow's basic-auth app, the user logged in through
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (--by must match it), with EDIT permission
on the experiment; elsewhere (sqlite, a server without auth) --by NAME is required and recorded
as not authenticated. A changed dataset or tolerance makes a decision stale (status shows it)."""


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lossbound review",
                     description="Approve or reject a codec's threshold (tags its MLflow runs, records it in the "
                                 "thresholds file), or show every codec's review status.",
                     epilog=_WHO_SIGNS, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    for action in ("approve", "reject", "status"):
        p = sub.add_parser(action, help={"approve": "approve a codec's threshold",
                                         "reject": "reject a codec's threshold",
                                         "status": "review status of every codec"}[action])
        p.add_argument("technique", help="technique (thresholds file <thresholds-dir>/<technique>.yaml)")
        p.add_argument("codec", nargs="?" if action == "status" else None, help="codec name in the thresholds file")
        p.add_argument("--group", metavar="NAME", help="a group's (sample type's) threshold rather than the "
                                                       "overall one (thresholds file: groups.<NAME>)")
        p.add_argument("--thresholds-dir", type=Path, default=None, metavar="DIR",
                       help="folder of the thresholds files (default: <runs>/thresholds, <runs> = ./runs or "
                            "$LOSSBOUND_HOME)")
        if action != "status":
            p.add_argument("--by", metavar="NAME", help="reviewer's name: required without a login; on a "
                                                        "basic-auth server it must be the logged-in user")
            p.add_argument("--note", default="", metavar="TEXT",
                           help="why (kept in MLflow and in the thresholds file)")
            p.add_argument("--tracking-uri", metavar="URI",
                           help="MLflow store holding the runs (default: $MLFLOW_TRACKING_URI, else the store the "
                                "thresholds file records, else <runs>/mlflow.db)")
    return parser


# -- where ---------------------------------------------------------------------------------------
def tracking_uri(doc: Mapping[str, Any], codec: str | None, thresholds_dir: Path, given: str | None = None) -> str:
    """The MLflow store of the runs behind ``codec`` (see the module docstring for the order)."""
    if given:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    datasets = doc.get("datasets") or {}
    names = sorted(((doc.get("codecs") or {}).get(codec) or {}).get("per_dataset") or {}) if codec else sorted(datasets)
    recorded = sorted({str((datasets.get(n) or {}).get("mlflow_tracking_uri")) for n in names
                       if (datasets.get(n) or {}).get("mlflow_tracking_uri")})
    if len(recorded) > 1:
        raise InputError(f"the datasets behind codec {codec!r} were logged to several MLflow stores "
                         f"({', '.join(recorded)}); pass --tracking-uri")
    if recorded:
        return recorded[0]
    beside = Path(thresholds_dir).resolve().parent / "mlflow.db"
    if beside.exists():
        return f"sqlite:///{beside}"
    return f"sqlite:///{runs_dir() / 'mlflow.db'}"


# -- actions -------------------------------------------------------------------------------------
def _thresholds_path(args: argparse.Namespace) -> Path:
    if not args.technique or "/" in args.technique or args.technique.startswith("."):
        raise InputError(f"technique {args.technique!r}: expected a technique name such as tomo, azint or sx")
    return Path(args.thresholds_dir) / f"{args.technique}.yaml"


def _check_codec(doc: Mapping[str, Any], codec: str, path: Path) -> Mapping[str, Any]:
    codecs = doc.get("codecs") or {}
    if codec not in codecs:
        raise InputError(f"{path}: no codec {codec!r}; expected one of {', '.join(codecs) or '(none)'}")
    return codecs[codec]


def decide(args: argparse.Namespace) -> int:
    decision = args.action
    path = _thresholds_path(args)
    doc = signoff.scope(signoff.load_document(path), args.group, path=path)
    entry = _check_codec(doc, args.codec, path)
    if entry.get("bound") is None:
        raise InputError(f"{path}: codec {args.codec!r} has no threshold (nothing passed on "
                         f"{entry.get('limiting_dataset')}); there is nothing to {decision}")
    runs = signoff.runs_behind(doc, args.codec)
    if not runs:
        raise InputError(f"{path}: codec {args.codec!r} names no MLflow run behind its threshold "
                         f"(mlflow_run_id / mlflow_study_run_id); re-run the study with tracking enabled")
    uri = tracking_uri(doc, args.codec, args.thresholds_dir, args.tracking_uri)
    name, authenticated = reviewer(uri, args.by, what=f" codec {args.codec} (run(s) {', '.join(runs)})")
    fp = signoff.fingerprint(doc, args.codec)
    values = {
        "decision": decision, "reviewer": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "note": args.note or "", "authenticated": "true" if authenticated else "false",
        "codec": args.codec, "fingerprint": fp,
    }
    # a group's decision has its own tags: a run behind both keeps the overall decision's
    prefix = TAG_PREFIX + (f"group.{args.group}." if args.group else "")
    undo = tag_runs(uri, runs, {prefix + k: str(values[k])[:TAG_MAX] for k in _TAG_KEYS}, user=name)
    try:
        signoff.record_review(path, args.codec, decision=decision, reviewer=name, note=args.note or "",
                              authenticated=authenticated, runs=runs, expected_fingerprint=fp, date=values["date"],
                              group=args.group)
    except BaseException as exc:  # not recorded: the runs must not say otherwise
        failed = undo()
        if isinstance(exc, (InputError, OSError)):
            raise InputError(f"{exc}; the MLflow tags were {'not all ' if failed else ''}taken back"
                             f"{' (run(s) ' + ', '.join(failed) + ' still tagged)' if failed else ''}") from None
        raise
    who = f"{name} (logged in to {uri})" if authenticated else f"{name} (not authenticated: --by on {uri})"
    what = f"{args.codec} of group {args.group}" if args.group else args.codec
    print(f"{_PAST[decision]} {what} (bound {entry.get('bound')}, limiting dataset "
          f"{entry.get('limiting_dataset')}) by {who}; tagged {len(runs)} MLflow run(s); recorded in {path}")
    _rebuild_report(path)
    return 0


def _rebuild_report(path: Path) -> None:
    """The technique's report shows review statuses: rebuild it where the study wrote one."""
    runs_dir = path.parent.parent
    if (runs_dir / "reports" / f"{path.stem}.html").exists():
        try:
            out = write_report(path, journal_dir=runs_dir / "journal", reports_dir=runs_dir / "reports")
        except (InputError, OSError) as exc:  # the decision is recorded; the report can be rebuilt later
            print(f"warning: report not updated ({first_line(exc)}); lossbound report {path.stem}",
                  file=sys.stderr)
            return
        print(f"report updated: {out}")


def status_rows(doc: Mapping[str, Any], codecs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for codec, entry in (doc.get("codecs") or {}).items():
        if codecs and codec not in codecs:
            continue
        st = signoff.review_status(doc, codec)
        shown = st["status"]
        if shown == "stale" and st.get("decision"):
            shown = f"stale (was {_PAST.get(st['decision'], st['decision'])})"
        reviewer_ = st.get("reviewer") or ""
        if reviewer_ and st.get("authenticated") is False:
            reviewer_ += " (--by)"
        rows.append({"codec": codec, "bound": entry.get("bound"), "limiting dataset": entry.get("limiting_dataset"),
                     "status": shown, "reviewer": reviewer_, "date": st.get("date") or "",
                     "note": st.get("note") or ""})
    return rows


def show_status(args: argparse.Namespace) -> int:
    path = _thresholds_path(args)
    doc = signoff.scope(signoff.load_document(path), args.group, path=path)
    if args.codec:
        _check_codec(doc, args.codec, path)
    rows = status_rows(doc, [args.codec] if args.codec else None)
    if not rows:
        print(f"{path}: no codec thresholds yet")
        return 0
    cols = list(rows[0])
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"Review status of {path}{f' (group {args.group})' if args.group else ''}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return "none"
    text = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        args.thresholds_dir = args.thresholds_dir or runs_dir() / "thresholds"
        return show_status(args) if args.action == "status" else decide(args)
    except (InputError, TrackingError, OSError) as exc:
        prefix = "MLflow: " if isinstance(exc, TrackingError) else ""
        print(f"error: {prefix}{first_line(exc)[:300]}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
