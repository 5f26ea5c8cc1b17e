"""Expert sign-off of thresholds: what was approved, by whom, and whether it still holds.

A decision is kept in the thresholds file under ``reviews.<codec>`` (decision, reviewer, date,
note, the MLflow runs tagged, and a fingerprint of what was reviewed). The fingerprint covers
the combined bound, the codec chain, and every contributing dataset's content checksum,
tolerances and bound, so a changed dataset, an added dataset or a changed tolerance makes an
earlier decision *stale*: it is shown, and it no longer counts as approval.

With groups (sample types, ``groups.<g>.codecs``), each group's threshold is reviewed on its
own (``group_reviews.<g>.<codec>``): its fingerprint covers only that group's datasets, so a
group's approval stays when another group's dataset is added (the overall threshold, which
covers every group, turns stale then, as it should).

Status of a codec's threshold: ``approved``, ``rejected``, ``stale`` (decided on something
else) or ``unreviewed``. Exporting or applying anything but ``approved`` needs an explicit
override (``--allow-unreviewed``).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Mapping

import yaml
from filelock import FileLock

from lossbound.core.errors import InputError
from lossbound.core.files import atomic_write_text, dump_yaml, load_yaml
from lossbound.core.hashing import stable_hash

__all__ = ["DECISIONS", "STATUSES", "fingerprint", "load_document", "record_review", "require_approved",
           "review_status", "runs_behind", "scope", "with_statuses"]

DECISIONS = ("approve", "reject")
STATUSES = ("approved", "rejected", "stale", "unreviewed")
_CHAIN_KEYS = ("codec", "mode", "bound", "hdf5plugin", "filter_id", "cd_values", "chunks_setting", "input_dtype",
               "transform", "transform_params", "bound_kind")


def scope(doc: Mapping[str, Any], group: str | None = None, *, path: Any = "") -> dict[str, Any]:
    """The part of a thresholds file a decision is about: the whole file (``group=None``:
    ``codecs`` and ``reviews``), or one group's ``codecs`` with its ``group_reviews`` (an
    InputError names the groups there are). Every function here takes either."""
    if group is None:
        return doc  # type: ignore[return-value]
    groups = doc.get("groups") or {}
    if group not in groups:
        raise InputError(f"{path}: no group {group!r} in the thresholds file; expected one of "
                         f"{', '.join(sorted(groups)) or '(none: no dataset declares a group)'}")
    return {"codecs": groups[group].get("codecs") or {}, "datasets": doc.get("datasets") or {},
            "reviews": (doc.get("group_reviews") or {}).get(group) or {}, "group": group}


def fingerprint(doc: Mapping[str, Any], codec: str) -> str:
    """What a reviewer signs: the combined entry's chain and, per contributing dataset, its
    checksum, pipeline and evaluators (the context key), tolerances, noise model and own bound."""
    combined = (doc.get("codecs") or {}).get(codec) or {}
    datasets = doc.get("datasets") or {}
    contributing = {}
    for name in sorted(combined.get("per_dataset") or {}):
        d = datasets.get(name) or {}
        noise = d.get("noise_reference") or {}
        contributing[name] = {
            "sha256": (d.get("dataset") or {}).get("sha256"),
            "context": d.get("context"),  # pipeline and evaluator parameters
            "tolerances": d.get("tolerances"),
            # what determines the noise-derived ranges (not their Monte-Carlo digits)
            "noise_reference": {k: noise.get(k) for k in ("model", "resamples", "seed", "unavailable")},
            "bound": ((d.get("codecs") or {}).get(codec) or {}).get("bound"),
        }
    return stable_hash({"chain": {k: combined.get(k) for k in _CHAIN_KEYS}, "datasets": contributing}, length=24)


def review_status(doc: Mapping[str, Any], codec: str) -> dict[str, Any]:
    """``{status, decision?, reviewer?, date?, note?}`` of ``codec``'s combined threshold."""
    review = (doc.get("reviews") or {}).get(codec)
    if not review:
        return {"status": "unreviewed"}
    out = {k: review.get(k) for k in ("decision", "reviewer", "authenticated", "date", "note")}
    if review.get("fingerprint") != fingerprint(doc, codec):
        out["status"] = "stale"
    else:
        out["status"] = "approved" if review.get("decision") == "approve" else "rejected"
    return out


def with_statuses(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``codecs.<codec>.review`` filled in from ``reviews``, and each group's
    from ``group_reviews`` (written on every update)."""
    for codec, entry in (doc.get("codecs") or {}).items():
        entry["review"] = review_status(doc, codec)
    for group, g in (doc.get("groups") or {}).items():
        view = scope(doc, group)
        for codec, entry in (g.get("codecs") or {}).items():
            entry["review"] = review_status(view, codec)
    return doc


def runs_behind(doc: Mapping[str, Any], codec: str) -> list[str]:
    """MLflow run ids behind a combined threshold: per contributing dataset, the point at the
    threshold and the study run."""
    combined = (doc.get("codecs") or {}).get(codec) or {}
    out: list[str] = []
    for name in sorted(combined.get("per_dataset") or {}):
        d = (doc.get("datasets") or {}).get(name) or {}
        for rid in (((d.get("codecs") or {}).get(codec) or {}).get("mlflow_run_id"), d.get("mlflow_study_run_id")):
            if rid and rid not in out:
                out.append(rid)
    return out


def require_approved(doc: Mapping[str, Any], codec: str, *, allow_unreviewed: bool, path: Any = "") -> dict:
    """The review status, or an InputError unless it is ``approved`` or the override is given."""
    status = review_status(doc, codec)
    if status["status"] != "approved" and not allow_unreviewed:
        who = f" by {status['reviewer']}" if status.get("reviewer") else ""
        raise InputError(f"{path}: threshold of codec {codec!r} is {status['status']}{who}; expected approved "
                         f"(lossbound review approve ...), or pass --allow-unreviewed")
    return status


def record_review(path: Path, codec: str, *, decision: str, reviewer: str, note: str,
                  authenticated: bool, runs: list[str], expected_fingerprint: str | None = None,
                  date: str | None = None, group: str | None = None) -> dict[str, Any]:
    """Write the decision into the thresholds file (under its lock) and return its status.

    ``expected_fingerprint``: what the reviewer saw (and tagged in MLflow); if a study changed
    the threshold since, nothing is recorded (InputError). ``date``: the one the tags carry.
    ``group``: decide on that group's threshold rather than the overall one."""
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    path = Path(path)
    with FileLock(str(path) + ".lock"):
        doc = load_document(path)
        view = scope(doc, group, path=path)
        if codec not in (view.get("codecs") or {}):
            raise InputError(f"{path}: no codec {codec!r}{f' in group {group!r}' if group else ''}; expected one "
                             f"of {', '.join(view.get('codecs') or {})}")
        current = fingerprint(view, codec)
        if expected_fingerprint is not None and current != expected_fingerprint:
            raise InputError(f"{path}: the threshold of {codec!r} changed while it was being reviewed (a study "
                             f"updated it); review it again")
        reviews = dict(view.get("reviews") or {})
        reviews[codec] = {
            "decision": decision, "reviewer": reviewer, "authenticated": authenticated, "note": note,
            "date": date or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "fingerprint": current, "mlflow_runs": runs,
        }
        if group is None:
            doc["reviews"] = reviews
        else:
            doc["group_reviews"] = {**(doc.get("group_reviews") or {}), group: reviews}
        with_statuses(doc)
        atomic_write_text(path, dump_yaml(doc))
    return review_status(scope(doc, group), codec)


def load_document(path: Path) -> dict[str, Any]:
    """A thresholds file, or an InputError naming it."""
    path = Path(path)
    try:
        # libyaml's loader where present: files of several datasets load ~10x faster
        doc = load_yaml(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such thresholds file; expected <runs>/thresholds/<technique>.yaml, <runs> = ./runs or $LOSSBOUND_HOME") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: unreadable thresholds file ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or "codecs" not in doc or "datasets" not in doc:
        raise InputError(f"{path}: not a LossBound thresholds file (expected keys 'codecs' and 'datasets')")
    for key in ("codecs", "datasets", "reviews"):
        section = doc.get(key) or {}
        if not isinstance(section, dict):
            raise InputError(f"{path}: {key} is not a mapping; expected a LossBound thresholds file")
        if bad := [name for name, v in section.items() if not isinstance(v, dict)]:
            raise InputError(f"{path}: {key}.{bad[0]} is not a mapping; expected a LossBound thresholds file")
    return doc
