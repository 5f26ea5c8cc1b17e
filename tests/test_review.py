"""Expert sign-off (``lossbound review``): tags on the real MLflow runs behind a
threshold, the decision in the thresholds file, staleness, and — against a real basic-auth
tracking server on 127.0.0.1 — the reviewer is the logged-in user and READ cannot sign off."""
from __future__ import annotations

import itertools

import pytest
from mlflow import MlflowClient

from lossbound.core.errors import InputError
from lossbound.core.types import PointResult
from lossbound.cli.review import TAG_PREFIX, main
from lossbound.results import signoff
from lossbound.results.thresholds import derive_thresholds, update_thresholds
from lossbound.tracking.tracker import Tracker
from servers import mlflow_server

TOL = {"ssim": {"min": 0.9}}
BOUNDS = (2, 4, 8, 16, 32)
_names = itertools.count()


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch):
    """The user's own MLflow settings must not leak into these tests."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)


def _point(value, passed, *, codec, run_id):
    return PointResult(
        point_id=f"{codec}{value}", label=f"{codec} absolute={value}",
        setting={"codec": codec, "mode": "absolute", "value": value, "input_dtype": None, "chunks": None},
        lossy=True, codec={"plugin_class": "SZ3", "plugin_kwargs": {"absolute": value}, "filter_id": 32024,
                           "cd_values": [0, 1], "ratio": value * 2.0, "bound_held": True},
        metrics={"ssim": 0.99 if passed else 0.5}, passed=passed, failures=[] if passed else ["ssim=0.5 < 0.9"],
        run_id=run_id,
    )


def make_study(tracker: Tracker, path, *, dataset="sim", sha="a" * 64, limits=None, tolerances=TOL,
               bounds=BOUNDS) -> dict:
    """Real MLflow runs (a study run, nested point runs) and the thresholds entry that points at
    them, merged into ``path`` the way a study does. ``limits``: codec -> largest passing bound
    (0: nothing passes)."""
    limits = limits or {"sz3": 8, "zfp": 0}
    study = tracker.start_run(f"tomo · {dataset} · study", tags={"lossbound.role": "study"})
    points = []
    for codec, limit in limits.items():
        for b in bounds:
            rid = tracker.start_run(f"tomo · {dataset} · {codec} absolute={b}", parent=study,
                                    tags={"lossbound.role": "point", "point_id": f"{codec}{b}"})
            tracker.end_run(rid)
            points.append(_point(b, b <= limit, codec=codec, run_id=rid))
    tracker.end_run(study)
    codecs, baselines = derive_thresholds(points, criteria=["ssim"])
    entry = {"dataset": {"name": dataset, "source": f"/d/{dataset}.h5", "sha256": sha}, "pipeline": {"rows": [0, 4]},
             "tolerances": tolerances, "mlflow_study_run_id": study, "mlflow_tracking_uri": tracker.uri,
             "codecs": codecs, "baselines": baselines}
    return update_thresholds(path, technique="tomo", dataset_name=dataset, entry=entry)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite MLflow store for the module (its schema migrations take seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def study(store, tmp_path):
    """A fresh experiment in ``store`` and a thresholds file (sz3 bound 8; zfp: nothing passed)."""
    tracker = Tracker({"tracking_uri": store, "experiment": f"tomo-{next(_names)}"})
    tdir = tmp_path / "runs" / "thresholds"
    make_study(tracker, tdir / "tomo.yaml")
    return tracker, tdir


def _review(*argv, capsys=None):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr() if capsys is not None else None
    return rc, out


def _one_line_error(out, *needles):
    err = out.err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def _review_tags(uri, run_ids):
    client = MlflowClient(tracking_uri=uri)
    return {rid: {k: v for k, v in client.get_run(rid).data.tags.items() if k.startswith(TAG_PREFIX)}
            for rid in run_ids}


# -- local store (sqlite) --------------------------------------------------------------------------
def test_approve_tags_every_run_behind_the_threshold_and_records_the_decision(study, capsys):
    tracker, tdir = study
    path = tdir / "tomo.yaml"
    rc, out = _review("approve", "tomo", "sz3", "--by", "carol", "--note", "recon within noise",
                      "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 0, out.err
    assert "approved sz3" in out.out and "carol" in out.out
    doc = signoff.load_document(path)
    runs = signoff.runs_behind(doc, "sz3")
    assert len(runs) == 2 and doc["datasets"]["sim"]["mlflow_study_run_id"] in runs
    assert doc["datasets"]["sim"]["codecs"]["sz3"]["mlflow_run_id"] in runs
    fp = signoff.fingerprint(doc, "sz3")
    for rid, tags in _review_tags(tracker.uri, runs).items():
        assert tags[TAG_PREFIX + "decision"] == "approve"
        assert tags[TAG_PREFIX + "reviewer"] == "carol"
        assert tags[TAG_PREFIX + "authenticated"] == "false"
        assert tags[TAG_PREFIX + "note"] == "recon within noise"
        assert tags[TAG_PREFIX + "codec"] == "sz3"
        assert tags[TAG_PREFIX + "fingerprint"] == fp
        assert tags[TAG_PREFIX + "date"].endswith("+00:00")
    status = signoff.review_status(doc, "sz3")
    assert status["status"] == "approved" and status["reviewer"] == "carol" and status["authenticated"] is False
    assert doc["codecs"]["sz3"]["review"]["status"] == "approved"  # written with the decision
    assert doc["reviews"]["sz3"]["mlflow_runs"] == runs
    signoff.require_approved(doc, "sz3", allow_unreviewed=False)
    # the other runs of the study are untouched
    client = MlflowClient(tracking_uri=tracker.uri)
    others = [r for r in client.search_runs([tracker.experiment_id], max_results=100) if r.info.run_id not in runs]
    assert others and not any(k.startswith(TAG_PREFIX) for r in others for k in r.data.tags)


def test_the_next_study_update_keeps_the_decision_and_shows_it(study):
    tracker, tdir = study
    assert main(["approve", "tomo", "sz3", "--by", "carol", "--thresholds-dir", str(tdir)]) == 0
    doc = make_study(tracker, tdir / "tomo.yaml")  # the same dataset and tolerances, measured again
    assert doc["codecs"]["sz3"]["review"]["status"] == "approved"
    on_disk = signoff.load_document(tdir / "tomo.yaml")
    assert on_disk["reviews"]["sz3"]["reviewer"] == "carol"
    assert on_disk["codecs"]["sz3"]["review"]["status"] == "approved"


def test_reject_blocks_export_unless_unreviewed_is_allowed(study, capsys):
    tracker, tdir = study
    rc, out = _review("reject", "tomo", "sz3", "--by", "dave", "--note", "ring artefacts",
                      "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 0, out.err
    doc = signoff.load_document(tdir / "tomo.yaml")
    assert signoff.review_status(doc, "sz3")["status"] == "rejected"
    with pytest.raises(InputError, match="rejected by dave"):
        signoff.require_approved(doc, "sz3", allow_unreviewed=False)
    assert signoff.require_approved(doc, "sz3", allow_unreviewed=True)["status"] == "rejected"
    tags = _review_tags(tracker.uri, signoff.runs_behind(doc, "sz3"))
    assert {t[TAG_PREFIX + "decision"] for t in tags.values()} == {"reject"}
    # a later approval replaces the rejection, in the file and on the runs
    assert main(["approve", "tomo", "sz3", "--by", "dave", "--thresholds-dir", str(tdir)]) == 0
    doc = signoff.load_document(tdir / "tomo.yaml")
    assert signoff.review_status(doc, "sz3")["status"] == "approved"
    tags = _review_tags(tracker.uri, signoff.runs_behind(doc, "sz3"))
    assert {t[TAG_PREFIX + "decision"] for t in tags.values()} == {"approve"}


@pytest.mark.parametrize("change", ["tolerance", "dataset content", "nothing"])
def test_a_changed_tolerance_or_dataset_makes_an_approval_stale(study, change, capsys):
    tracker, tdir = study
    path = tdir / "tomo.yaml"
    assert main(["approve", "tomo", "sz3", "--by", "carol", "--thresholds-dir", str(tdir)]) == 0
    reviews = signoff.load_document(path)["reviews"]
    kwargs = {"tolerance": {"tolerances": {"ssim": {"min": 0.95}}}, "dataset content": {"sha": "c" * 64},
              "nothing": {}}[change]
    make_study(tracker, path, **kwargs)
    expected = "approved" if change == "nothing" else "stale"
    doc = signoff.load_document(path)
    assert doc["reviews"] == reviews  # update_thresholds keeps the decision...
    assert doc["codecs"]["sz3"]["review"]["status"] == expected  # ...and shows what it is worth now
    assert signoff.review_status(doc, "sz3")["status"] == expected
    if change != "nothing":
        with pytest.raises(InputError, match="stale"):
            signoff.require_approved(doc, "sz3", allow_unreviewed=False)
        capsys.readouterr()
        assert main(["status", "tomo", "--thresholds-dir", str(tdir)]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("sz3 "))
        assert "stale (was approved)" in line and "carol (--by)" in line


def test_by_is_required_without_a_login(study, capsys):
    tracker, tdir = study
    before = (tdir / "tomo.yaml").read_text()
    rc, out = _review("approve", "tomo", "sz3", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "--by NAME is required", "sqlite:///")
    assert (tdir / "tomo.yaml").read_text() == before
    doc = signoff.load_document(tdir / "tomo.yaml")
    assert not any(_review_tags(tracker.uri, signoff.runs_behind(doc, "sz3")).values())


def test_a_failed_write_leaves_the_runs_and_the_file_as_they_were(study, monkeypatch, capsys):
    """A refusal on the second run puts the first run's tags back; a thresholds file that cannot be
    written takes every tag back: MLflow never says what the file does not."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    tracker, tdir = study
    path = tdir / "tomo.yaml"
    assert main(["approve", "tomo", "sz3", "--by", "carol", "--thresholds-dir", str(tdir)]) == 0
    runs = signoff.runs_behind(signoff.load_document(path), "sz3")
    before, tags_before = path.read_text(), _review_tags(tracker.uri, runs)
    capsys.readouterr()
    real = MlflowClient.log_batch

    def refuse_second(self, run_id, *a, **k):
        if run_id == runs[1]:
            raise MlflowException("API request failed with error code 403 != 200", error_code=PERMISSION_DENIED)
        return real(self, run_id, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_batch", refuse_second)
    rc, out = _review("reject", "tomo", "sz3", "--by", "dave", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "'dave'", runs[1], "EDIT permission")
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    assert path.read_text() == before and _review_tags(tracker.uri, runs) == tags_before

    def unwritable(*a, **k):
        raise InputError(f"{path}: read-only file system")

    monkeypatch.setattr(signoff, "record_review", unwritable)
    rc, out = _review("reject", "tomo", "sz3", "--by", "dave", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "read-only file system", "taken back")
    assert path.read_text() == before and _review_tags(tracker.uri, runs) == tags_before


def test_status_lists_every_codec(study, capsys):
    tracker, tdir = study
    assert main(["approve", "tomo", "sz3", "--by", "carol", "--note", "fine", "--thresholds-dir", str(tdir)]) == 0
    capsys.readouterr()
    assert main(["status", "tomo", "--thresholds-dir", str(tdir)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(ln for ln in out if ln.startswith("codec"))
    for col in ("bound", "limiting dataset", "status", "reviewer", "date", "note"):
        assert col in header
    sz3 = next(ln for ln in out if ln.startswith("sz3 "))
    zfp = next(ln for ln in out if ln.startswith("zfp "))
    assert " 8 " in sz3 and "sim" in sz3 and "approved" in sz3 and "carol" in sz3 and "fine" in sz3
    assert "none" in zfp and "unreviewed" in zfp


def test_bad_input_is_one_line(study, tmp_path, capsys):
    tracker, tdir = study
    cases = [
        (["approve", "azint", "sz3", "--by", "x"], ["azint.yaml", "no such thresholds file"]),
        (["approve", "tomo", "sz9", "--by", "x"], ["no codec 'sz9'", "sz3, zfp"]),
        (["status", "tomo", "sz9"], ["no codec 'sz9'", "sz3, zfp"]),
        (["approve", "tomo", "zfp", "--by", "x"], ["'zfp' has no threshold"]),
        (["approve", "tomo", "sz3", "--by", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
         ["no MLflow store there"]),
        (["approve", "tomo", "sz3", "--by", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}"],
         ["not in sqlite:///", "--tracking-uri"]),
        (["bless", "tomo", "sz3"], ["invalid choice"]),
        (["approve", "tomo"], ["codec"]),
    ]
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}").search_experiments()  # an empty store
    capsys.readouterr()
    before = (tdir / "tomo.yaml").read_text()
    for argv, needles in cases:
        rc, out = _review(*argv, "--thresholds-dir", tdir, capsys=capsys) if argv[0] != "bless" else \
            _review(*argv, capsys=capsys)
        assert rc != 0, argv
        _one_line_error(out, *needles)
    (tdir / "broken.yaml").write_text("codecs: [")
    rc, out = _review("status", "broken", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "unreadable thresholds file")
    assert (tdir / "tomo.yaml").read_text() == before


# -- multi-user: a real basic-auth tracking server ------------------------------------------------
USERS = {"alice": "alice-password-1234", "bob": "bob-password-12345"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``mlflow server --app-name basic-auth`` on 127.0.0.1 with users alice and bob."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app is not installed (pip install 'lossbound[server]')")
    with mlflow_server(tmp_path_factory.mktemp("auth-server"), auth=True) as server:
        for name, password in USERS.items():
            server.create_user(name, password)
        yield server


def _login(monkeypatch, user, password=None):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or USERS[user])


@pytest.fixture
def alice_study(auth_server, tmp_path, monkeypatch):
    """Alice's experiment and runs on the server; bob may only READ it."""
    _login(monkeypatch, "alice")
    tracker = Tracker({"tracking_uri": auth_server.uri, "experiment": f"tomo-{next(_names)}"})
    tdir = tmp_path / "thresholds"
    make_study(tracker, tdir / "tomo.yaml", limits={"sz3": 8}, bounds=(4, 8, 16))
    auth_server.grant("bob", tracker.experiment_id, "READ")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    return tracker, tdir


def test_server_refuses_anonymous_requests(auth_server):
    status, _ = auth_server.request("/api/2.0/mlflow/experiments/search?max_results=1")
    assert status == 401
    status, text = auth_server.request("/api/2.0/mlflow/users/current", auth=("alice", USERS["alice"]))
    assert status == 200 and '"username":"alice"' in text.replace(" ", "")


def test_reviewer_is_the_logged_in_user_not_a_free_text_name(alice_study, monkeypatch, capsys):
    tracker, tdir = alice_study
    path = tdir / "tomo.yaml"
    runs = signoff.runs_behind(signoff.load_document(path), "sz3")
    before = path.read_text()
    # nobody logged in: refused (the server requires a login), nothing written
    rc, out = _review("approve", "tomo", "sz3", "--by", "alice", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "requires a login", "MLFLOW_TRACKING_USERNAME")
    _login(monkeypatch, "alice")
    rc, out = _review("approve", "tomo", "sz3", "--by", "mallory", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "'mallory'", "'alice'")
    assert path.read_text() == before and not any(_review_tags(tracker.uri, runs).values())
    # the tracking URI comes from the thresholds file (datasets.sim.mlflow_tracking_uri)
    rc, out = _review("approve", "tomo", "sz3", "--note", "checked the slices", "--thresholds-dir", tdir,
                      capsys=capsys)
    assert rc == 0, out.err
    status = signoff.review_status(signoff.load_document(path), "sz3")
    assert status["status"] == "approved" and status["reviewer"] == "alice" and status["authenticated"] is True
    tags = _review_tags(tracker.uri, runs)
    assert len(tags) == 2
    for t in tags.values():
        assert t[TAG_PREFIX + "reviewer"] == "alice" and t[TAG_PREFIX + "authenticated"] == "true"
        assert t[TAG_PREFIX + "decision"] == "approve"


def test_a_read_only_user_cannot_sign_off(alice_study, auth_server, monkeypatch, capsys):
    tracker, tdir = alice_study
    path = tdir / "tomo.yaml"
    _login(monkeypatch, "alice")
    assert main(["approve", "tomo", "sz3", "--thresholds-dir", str(tdir)]) == 0
    runs = signoff.runs_behind(signoff.load_document(path), "sz3")
    before, tags_before = path.read_text(), _review_tags(tracker.uri, runs)
    capsys.readouterr()
    _login(monkeypatch, "bob")
    rc, out = _review("reject", "tomo", "sz3", "--note", "mine", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "'bob'", "EDIT permission", runs[0], tracker.experiment_name, "403")
    assert path.read_text() == before
    assert _review_tags(tracker.uri, runs) == tags_before
    # a wrong password: refused before anything is touched
    _login(monkeypatch, "alice", "not-alices-password")
    rc, out = _review("reject", "tomo", "sz3", "--thresholds-dir", tdir, capsys=capsys)
    assert rc == 1
    _one_line_error(out, "'alice'", "401", "EDIT permission", runs[0])
    assert path.read_text() == before
    _login(monkeypatch, "alice")
    assert _review_tags(tracker.uri, runs) == tags_before


@pytest.mark.slow
def test_a_server_without_auth_needs_by_and_records_it_unauthenticated(tmp_path, monkeypatch, capsys):
    with mlflow_server(tmp_path / "server") as server:
        tracker = Tracker({"tracking_uri": server.uri, "experiment": "tomo"})
        tdir = tmp_path / "thresholds"
        make_study(tracker, tdir / "tomo.yaml", limits={"sz3": 8}, bounds=(4, 8, 16))
        _login(monkeypatch, "alice")  # credentials a server without auth ignores: nobody is logged in
        rc, out = _review("approve", "tomo", "sz3", "--thresholds-dir", tdir, capsys=capsys)
        assert rc == 1
        _one_line_error(out, "--by NAME is required", "without authentication")
        assert main(["approve", "tomo", "sz3", "--by", "carol", "--thresholds-dir", str(tdir)]) == 0
        doc = signoff.load_document(tdir / "tomo.yaml")
        assert signoff.review_status(doc, "sz3") | {"date": None} == {
            "status": "approved", "decision": "approve", "reviewer": "carol", "authenticated": False,
            "note": "", "date": None}
        tags = _review_tags(server.uri, signoff.runs_behind(doc, "sz3"))
        assert {t[TAG_PREFIX + "authenticated"] for t in tags.values()} == {"false"}
