"""Sign-off in MLflow: who is logged in to a tracking server, and review tags set on every run
behind a threshold or on none (public MLflow client API and the auth app's REST API)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lossbound.core.errors import InputError
from lossbound.tracking.tracker import retry


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def client_login() -> dict[str, Any]:
    """The login MLflow's client uses, from its documented sources: ``MLFLOW_TRACKING_USERNAME``
    / ``MLFLOW_TRACKING_PASSWORD`` (else the ``[mlflow]`` section of ``~/.mlflow/credentials``),
    ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_INSECURE_TLS``, and the server and client
    certificate paths."""
    import configparser

    creds = configparser.ConfigParser()
    creds.read(Path(os.environ.get("MLFLOW_CREDENTIALS_FILE", "~/.mlflow/credentials")).expanduser())
    section = creds["mlflow"] if creds.has_section("mlflow") else {}
    username = os.environ.get("MLFLOW_TRACKING_USERNAME") or section.get("mlflow_tracking_username") or None
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or section.get("mlflow_tracking_password") or ""
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
    verify: bool | str = False if insecure else (os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True)
    return {"username": username, "password": password, "token": os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
            "verify": verify, "cert": os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None}


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
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    login = client_login()
    username = login["username"]
    session = requests.Session()
    session.mount(uri, HTTPAdapter(max_retries=Retry(total=3, backoff_factor=0.5, status_forcelist=(502, 503, 504),
                                                     allowed_methods=("GET",))))
    session.verify = login["verify"]
    session.cert = login["cert"]
    if login["token"]:
        session.headers["Authorization"] = f"Bearer {login['token']}"
    elif username:
        session.auth = (username, login["password"])

    def ask(endpoint: str, **params: str):
        try:
            return session.get(uri.rstrip("/") + endpoint, params=params or None, timeout=30)
        except requests.RequestException as exc:
            raise InputError(f"{uri}: MLflow tracking server unreachable ({str(exc).splitlines()[0][:200]})") from None

    resp = ask("/api/2.0/mlflow/users/current")
    if resp.status_code == 404 and username:
        resp = ask("/api/2.0/mlflow/users/get", username=username)
    if resp.status_code == 401:
        if not username:
            raise InputError(f"{uri}: this tracking server requires a login; set MLFLOW_TRACKING_USERNAME and "
                             f"MLFLOW_TRACKING_PASSWORD (signing off{what} needs EDIT permission on their experiment)")
        raise InputError(f"{uri}: user {username!r} was refused (HTTP 401: wrong MLFLOW_TRACKING_PASSWORD?); "
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
