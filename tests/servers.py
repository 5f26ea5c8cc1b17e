"""Real MLflow tracking servers on 127.0.0.1 for tests (the multi-user set-up).

``mlflow_server(tmp_path)`` starts ``mlflow server`` with a sqlite backend under ``tmp_path``;
``auth=True`` starts MLflow's basic-auth app (``--app-name basic-auth``) with its user store,
config file and secrets under ``tmp_path`` too — nothing is written to the working directory.
The server runs in its own process group, is waited for (``/health``, with a timeout; a server
that dies or never answers fails the test with the end of its log), and is stopped with its
workers on exit.

How the basic-auth app is configured (mlflow.server.auth.config.read_auth_config): an ini file
named by ``MLFLOW_AUTH_CONFIG_PATH`` (default: the packaged ``basic_auth.ini``, whose user store
is ``sqlite:///basic_auth.db`` in the working directory); the admin's name and password come
from ``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` (or ``admin_username`` /
``admin_password`` in the ini), read only when the user store has no admin yet; passwords need
at least 12 characters. ``MLFLOW_FLASK_SERVER_SECRET_KEY`` is required.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ADMIN = ("admin", "admin-password-for-tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str
    proc: subprocess.Popen
    log: Path
    admin: tuple[str, str] | None = None
    users: dict[str, str] = field(default_factory=dict)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def request(self, path: str, *, method: str = "GET", auth: tuple[str, str] | None = None,
                body: dict | None = None) -> tuple[int, str]:
        """HTTP status and body of one request (``auth``: basic-auth user and password)."""
        import base64

        req = urllib.request.Request(f"{self.uri}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if auth is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def create_user(self, username: str, password: str) -> None:
        """A basic-auth user, created by the admin."""
        assert self.admin is not None, "not a basic-auth server"
        status, text = self.request("/api/2.0/mlflow/users/create", method="POST", auth=self.admin,
                                    body={"username": username, "password": password})
        assert status == 200, (status, text)
        self.users[username] = password

    def grant(self, username: str, experiment_id: str, permission: str) -> None:
        """``permission`` (READ, USE, EDIT, MANAGE) on an experiment, granted by the admin."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="starlette")  # the auth app imports a deprecated module
            from mlflow.server import get_app_client

            client = get_app_client("basic-auth", tracking_uri=self.uri)
        with credentials(*self.admin):
            client.grant_user_permission(username, "experiment", experiment_id, permission)


@contextlib.contextmanager
def credentials(username: str | None, password: str | None = None) -> Iterator[None]:
    """``MLFLOW_TRACKING_USERNAME/PASSWORD`` for the MLflow client inside the block (None: none)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    old = {k: os.environ.get(k) for k in keys}
    try:
        for k, v in zip(keys, (username, password)):
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers: its own process group, SIGTERM then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)  # uvicorn waits for the clients' keep-alive connections
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # workers left behind by a dead supervisor
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(tmp_path: Path, *, auth: bool = False, workers: int = 1, timeout: float = 120,
                  admin: tuple[str, str] = ADMIN, default_permission: str = "READ",
                  auth_cache_seconds: int = 300) -> Iterator[MlflowServer]:
    """A started ``mlflow server`` on 127.0.0.1 and a free port; stopped on exit.

    ``auth_cache_seconds``: the basic-auth app's cache of accepted logins (``auth_cache_ttl_seconds``;
    0 = off, MLflow's default). Each uncached request costs a PBKDF2 password check — about a
    second on a busy 2-core machine; refused logins are never cached.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_"))}
    if auth:
        ini = tmp_path / "basic_auth.ini"
        ini.write_text("[mlflow]\n"
                       f"default_permission = {default_permission}\n"
                       f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       f"auth_cache_ttl_seconds = {auth_cache_seconds}\n")
        cmd += ["--app-name", "basic-auth"]
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY="lossbound-tests-secret",
                   MLFLOW_AUTH_ADMIN_USERNAME=admin[0], MLFLOW_AUTH_ADMIN_PASSWORD=admin[1])
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp_path, env=env, start_new_session=True)
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", proc=proc, log=log, admin=admin if auth else None)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow server exited ({proc.returncode}) before answering:\n{server.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not answer /health within {timeout:.0f} s:\n{server.log_tail()}")
                time.sleep(0.3)
        yield server
    finally:
        _stop(proc)
