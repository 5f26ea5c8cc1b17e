"""``python -m lossbound.review``: experts approve or reject a threshold where they look — MLflow.

    python -m lossbound.review approve tomo sz3 [--by NAME] [--note TEXT]
    python -m lossbound.review reject  tomo sz3 --by NAME --note "ring artefacts on the tooth"
    python -m lossbound.review status  tomo [sz3]

``approve``/``reject`` tag every MLflow run behind the codec's combined threshold (per
contributing dataset: the point at the threshold and the study run) with
``lossbound.review.{decision,reviewer,date,note,authenticated,codec,fingerprint}`` and, only when
every run is tagged, record the decision in ``<thresholds-dir>/<technique>.yaml`` (``reviews``).
A changed dataset or tolerance makes the decision *stale* (``status`` shows it).

Who signs: on a tracking server running MLflow's basic-auth app, the user logged in through
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (asked of the server, never taken
from the command line; ``--by`` must match it), and that user needs EDIT permission on the
experiment. Elsewhere (sqlite, a server without auth) ``--by NAME`` is required and recorded
as not authenticated.

Tracking store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the store the thresholds
file records for the datasets behind the threshold (``datasets.<name>.mlflow_tracking_uri``),
else ``mlflow.db`` beside the thresholds folder (the study's ``runs/``), else the project's
``sqlite:///runs/mlflow.db``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lossbound.core.cli import OneLineParser, UsageError, first_line
from lossbound.core.errors import InputError
from lossbound.study import signoff
from lossbound.study.tracking import TAG_MAX, retry
from lossbound.study.report import write_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_THRESHOLDS_DIR = ROOT / "runs" / "thresholds"
TAG_PREFIX = "lossbound.review."
_TAG_KEYS = ("decision", "reviewer", "date", "note", "authenticated", "codec", "fingerprint")
_PAST = {"approve": "approved", "reject": "rejected"}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m lossbound.review",
                     description="Approve or reject a codec's threshold (tags its MLflow runs, records it in the "
                                 "thresholds file), or show every codec's review status.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    for action in ("approve", "reject", "status"):
        p = sub.add_parser(action, help={"approve": "approve a codec's threshold",
                                         "reject": "reject a codec's threshold",
                                         "status": "review status of every codec"}[action])
        p.add_argument("technique", help="technique (thresholds file <thresholds-dir>/<technique>.yaml)")
        p.add_argument("codec", nargs="?" if action == "status" else None, help="codec name in the thresholds file")
        p.add_argument("--thresholds-dir", type=Path, default=DEFAULT_THRESHOLDS_DIR, metavar="DIR",
                       help="folder of the thresholds files (default: %(default)s)")
        if action != "status":
            p.add_argument("--by", metavar="NAME", help="reviewer's name: required without a login; on a "
                                                        "basic-auth server it must be the logged-in user")
            p.add_argument("--note", default="", metavar="TEXT",
                           help="why (kept in MLflow and in the thresholds file)")
            p.add_argument("--tracking-uri", metavar="URI",
                           help="MLflow store holding the runs (default: see the module doc)")
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
    return f"sqlite:///{ROOT / 'runs' / 'mlflow.db'}"


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


# -- who -----------------------------------------------------------------------------------------
def authenticated_user(uri: str, *, what: str = "") -> str | None:
    """The user the MLflow client is logged in as on ``uri`` (basic-auth app), or None when the
    store does not authenticate (sqlite, a server without the auth app).

    Asks the auth app's ``GET /api/2.0/mlflow/users/current`` (MLflow >= 3.x); older auth apps
    lack it, so ``GET /api/2.0/mlflow/users/get?username=<login>`` is asked next: a non-admin may
    only read their own record, and any 200 there means the login was accepted. ``what``: the
    runs being signed off, named in the refusals.
    """
    if not _is_http(uri):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)

    def ask(endpoint: str, **params: str):
        try:
            return http_request(creds, endpoint, "GET", params=params or None, max_retries=2,
                                backoff_factor=0.5, timeout=30)
        except MlflowException as exc:
            raise InputError(f"{uri}: MLflow tracking server unreachable ({str(exc).splitlines()[0][:200]})") from None

    resp = ask("/api/2.0/mlflow/users/current")
    if resp.status_code == 404 and creds.username:
        resp = ask("/api/2.0/mlflow/users/get", username=creds.username)
    if resp.status_code == 401:
        if not creds.username:
            raise InputError(f"{uri}: this tracking server requires a login; set MLFLOW_TRACKING_USERNAME and "
                             f"MLFLOW_TRACKING_PASSWORD (signing off{what} needs EDIT permission on their experiment)")
        raise InputError(f"{uri}: user {creds.username!r} was refused (HTTP 401: wrong MLFLOW_TRACKING_PASSWORD?); "
                         f"signing off{what} needs a valid login with EDIT permission on their experiment")
    if resp.status_code == 404:
        return None  # no auth app: nobody is authenticated
    if resp.status_code != 200:
        raise InputError(f"{uri}: asking who is logged in failed (HTTP {resp.status_code}: "
                         f"{resp.text.strip().splitlines()[0][:200] if resp.text.strip() else 'no body'})")
    try:
        user = (resp.json().get("user") or {}).get("username")
    except (ValueError, AttributeError):
        user = None
    return str(user) if user else None  # an answer naming nobody is not the auth app: nobody logged in


def reviewer(uri: str, by: str | None, *, what: str = "") -> tuple[str, bool]:
    """``(name, authenticated)`` of who signs."""
    user = authenticated_user(uri, what=what)
    if user is not None:
        if by and by != user:
            raise InputError(f"--by {by!r} is not the user logged in to {uri} ({user!r}); the reviewer recorded is "
                             f"the authenticated user: drop --by or log in as {by!r}")
        return user, True
    if not by or not by.strip():
        where = "a tracking server without authentication" if _is_http(uri) else "a local store"
        raise InputError(f"--by NAME is required: {uri} is {where}, so nobody is logged in to record")
    return by.strip(), False


# -- MLflow tags -----------------------------------------------------------------------------------
def _describe_failure(exc: Exception, *, user: str, run_id: str, experiment: str, uri: str,
                      doing: str = "tagging") -> str:
    code = getattr(exc, "error_code", "") or ""
    text = str(exc)
    if code == "PERMISSION_DENIED" or "403" in text.split("Response body")[0]:
        return (f"user {user!r} may not sign off on {uri}: {doing} run {run_id} of experiment {experiment} was "
                f"refused (HTTP 403); signing off needs EDIT permission on the experiment")
    if code == "UNAUTHENTICATED" or "401" in text.split("Response body")[0]:
        return (f"user {user!r} was refused by {uri} (HTTP 401) {doing} run {run_id} of experiment {experiment}; "
                f"signing off needs a valid login with EDIT permission on the experiment")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return (f"run {run_id} behind the threshold is not in {uri}; pass --tracking-uri of the store "
                f"the study logged to")
    return f"{uri}: run {run_id} of experiment {experiment}: {text.splitlines()[0][:300]}"


def tag_runs(uri: str, run_ids: Sequence[str], tags: Mapping[str, str], *, user: str) -> Callable[[], list[str]]:
    """Set ``tags`` on every run, or on none: every run is read first (it exists, it is
    readable), and when a write is refused the runs already tagged get their old tags back.
    Returns the undo (puts every run's old tags back; returns the runs where that failed)."""
    from mlflow import MlflowClient
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    if not _is_http(uri):
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if path is not None and not path.exists():
            raise InputError(f"{uri}: no MLflow store there; pass --tracking-uri of the store the study logged to")
    client = MlflowClient(tracking_uri=uri)
    experiments: dict[str, str] = {}
    previous: dict[str, dict[str, str]] = {}
    for rid in run_ids:
        try:
            run = retry(client.get_run, rid)
        except MlflowException as exc:
            raise InputError(_describe_failure(exc, user=user, run_id=rid, experiment="(unknown)", uri=uri,
                                              doing="reading")) from None
        eid = run.info.experiment_id
        if eid not in experiments:
            try:
                experiments[eid] = f"{retry(client.get_experiment, eid).name!r} (id {eid})"
            except MlflowException:
                experiments[eid] = f"id {eid}"
        previous[rid] = {k: run.data.tags.get(k) for k in tags}
        previous[rid]["_experiment"] = eid
    done: list[str] = []
    for rid in run_ids:
        try:
            retry(client.log_batch, rid, tags=[RunTag(k, v) for k, v in tags.items()])
        except MlflowException as exc:
            msg = _describe_failure(exc, user=user, run_id=rid, experiment=experiments[previous[rid]["_experiment"]],
                                    uri=uri)
            undone = _restore(client, {r: previous[r] for r in done})
            if undone:
                msg += f" (and restoring the tags already set on run(s) {', '.join(undone)} failed)"
            raise InputError(msg) from None
        done.append(rid)
    return lambda: _restore(client, previous)


def _restore(client, previous: Mapping[str, Mapping[str, str | None]]) -> list[str]:
    """Put back the review tags of runs tagged before a failure; the run ids that could not be."""
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    failed = []
    for rid, old in previous.items():
        try:
            back = [RunTag(k, v) for k, v in old.items() if not k.startswith("_") and v is not None]
            if back:
                retry(client.log_batch, rid, tags=back)
            for k, v in old.items():
                if not k.startswith("_") and v is None:
                    retry(client.delete_tag, rid, k)
        except MlflowException:
            failed.append(rid)
    return failed


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
    doc = signoff.load_document(path)
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
    undo = tag_runs(uri, runs, {TAG_PREFIX + k: str(values[k])[:TAG_MAX] for k in _TAG_KEYS}, user=name)
    try:
        signoff.record_review(path, args.codec, decision=decision, reviewer=name, note=args.note or "",
                              authenticated=authenticated, runs=runs, expected_fingerprint=fp, date=values["date"])
    except BaseException as exc:  # not recorded: the runs must not say otherwise
        failed = undo()
        if isinstance(exc, (InputError, OSError)):
            raise InputError(f"{exc}; the MLflow tags were {'not all ' if failed else ''}taken back"
                             f"{' (run(s) ' + ', '.join(failed) + ' still tagged)' if failed else ''}") from None
        raise
    who = f"{name} (logged in to {uri})" if authenticated else f"{name} (not authenticated: --by on {uri})"
    print(f"{_PAST[decision]} {args.codec} (bound {entry.get('bound')}, limiting dataset "
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
            print(f"warning: report not updated ({first_line(exc)}); python -m lossbound.report {path.stem}",
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
    doc = signoff.load_document(path)
    if args.codec:
        _check_codec(doc, args.codec, path)
    rows = status_rows(doc, [args.codec] if args.codec else None)
    if not rows:
        print(f"{path}: no codec thresholds yet")
        return 0
    cols = list(rows[0])
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"Review status of {path}")
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
    from mlflow.exceptions import MlflowException

    try:
        args = _parser().parse_args(argv)
        return show_status(args) if args.action == "status" else decide(args)
    except (InputError, MlflowException, OSError) as exc:
        prefix = "MLflow: " if isinstance(exc, MlflowException) else ""
        print(f"error: {prefix}{first_line(exc)[:300]}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
