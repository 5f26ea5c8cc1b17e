"""Campaigns: a file of datasets with groups, one Hydra job each, thresholds per group and over
all groups, group reviews that survive another group's dataset, and a report for many datasets.

Real studies (tiny simulated Pilatus 300k frames: powder and SAXS, written by the project's own
simulation with its detector defects) run through the joblib launcher."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from browser import inspect_page, require_browser
from conftest import ROOT

RUN_ARGS = ["codec=[sz3]", "search=grid", "sweep.bounds=[2,8]", "sweep.progress=false"]


def _write_scans(folder: Path, specs: list[tuple[str, str, int]]) -> None:
    from lossbound.pipelines.azint.simulate import write_simulation

    for group, name, seed in specs:
        d = folder / group
        d.mkdir(parents=True, exist_ok=True)
        write_simulation(d / f"{name}.h5", d / f"{name}.poni", detector="Pilatus300k", poni_px=[300.0, 240.0],
                         distance_mm=120.0 if group == "powder" else 900.0, seed=seed,
                         pattern="powder" if group == "powder" else "saxs")


def _campaign(path: Path, scans: Path, names: list[tuple[str, str]], **extra) -> Path:
    datasets = []
    for group, name in names:
        e = {"name": name, "group": group, "path": str(scans / group / f"{name}.h5"),
             "poni": str(scans / group / f"{name}.poni"), "sample": group}
        if group == "powder":
            e["calibrant"] = "CeO2"
        datasets.append({**e, **extra.get(name, {})})
    path.write_text(yaml.safe_dump({"technique": "azint", "datasets": datasets}, sort_keys=False))
    return path


def _lossbound(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOSSBOUND_HOME": str(cwd / "runs")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "lossbound", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("campaign")
    scans = tmp / "scans"
    # "1.50": a name Hydra would read as a float unless the job's override quotes it
    _write_scans(scans, [("powder", "p0", 0), ("powder", "p1", 1), ("saxs", "s0", 2), ("saxs", "1.50", 3)])
    path = _campaign(tmp / "azint.yaml", scans, [("powder", "p0"), ("powder", "p1"), ("saxs", "s0"), ("saxs", "1.50")])
    proc = _lossbound("campaign", "run", str(path), *RUN_ARGS, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, scans, path, proc


def _doc(tmp: Path) -> dict:
    return yaml.safe_load((tmp / "runs" / "thresholds" / "azint.yaml").read_text())


def test_every_dataset_lands_with_its_group_and_the_thresholds_combine_per_group_and_overall(campaign):
    tmp, _, _, proc = campaign
    doc = _doc(tmp)
    assert set(doc["datasets"]) == {"p0", "p1", "s0", "1.50"}
    assert {n: d["dataset"]["group"] for n, d in doc["datasets"].items()} == {
        "p0": "powder", "p1": "powder", "s0": "saxs", "1.50": "saxs"}
    assert set(doc["groups"]) == {"powder", "saxs"}
    assert doc["groups"]["powder"]["datasets"] == ["p0", "p1"]
    overall = doc["codecs"]["sz3"]
    per_group = {g: doc["groups"][g]["codecs"]["sz3"] for g in ("powder", "saxs")}
    # each group combines only its own datasets; the overall bound is the least lossy group's
    assert set(per_group["powder"]["per_dataset"]) == {"p0", "p1"}
    assert set(per_group["saxs"]["per_dataset"]) == {"s0", "1.50"}
    assert set(overall["per_dataset"]) == {"p0", "p1", "s0", "1.50"}
    bounds = {g: e["bound"] for g, e in per_group.items()}
    if None in bounds.values():
        assert overall["bound"] is None and bounds[overall["limiting_group"]] is None
    else:
        assert overall["bound"] == min(bounds.values())
        assert overall["limiting_dataset"] == per_group[overall["limiting_group"]]["limiting_dataset"]
    own = {n: d["codecs"]["sz3"]["bound"] for n, d in doc["datasets"].items()}
    for g, e in per_group.items():
        members = [own[n] for n in doc["groups"][g]["datasets"]]
        assert e["bound"] == (None if None in members else min(members))
    assert "4 of 4 dataset(s) done" in proc.stdout and (tmp / "runs" / "reports" / "azint.html").exists()


def test_a_rerun_starts_no_job_and_an_added_dataset_runs_only_its_own(campaign):
    tmp, scans, path, _ = campaign
    proc = _lossbound("campaign", "run", str(path), *RUN_ARGS, cwd=tmp)
    assert proc.returncode == 0 and "4 done, 0 to run" in proc.stdout, proc.stdout + proc.stderr
    # a saxs approval before a powder dataset is added
    doc = _doc(tmp)
    assert doc["groups"]["saxs"]["codecs"]["sz3"]["bound"] is not None, "saxs should pass sz3 at 2 counts"
    rc = _lossbound("review", "approve", "azint", "sz3", "--group", "saxs", "--by", "ada", "--note", "SAXS ok",
                    cwd=tmp)
    assert rc.returncode == 0, rc.stderr
    assert _doc(tmp)["groups"]["saxs"]["codecs"]["sz3"]["review"]["status"] == "approved"
    assert _doc(tmp)["codecs"]["sz3"]["review"]["status"] == "unreviewed"  # the overall one is its own
    _write_scans(scans, [("powder", "p2", 7)])
    bigger = _campaign(tmp / "azint.yaml", scans,
                       [("powder", "p0"), ("powder", "p1"), ("saxs", "s0"), ("saxs", "1.50"), ("powder", "p2")])
    proc = _lossbound("campaign", "run", str(bigger), *RUN_ARGS, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "4 done, 1 to run" in proc.stdout
    doc = _doc(tmp)
    assert set(doc["groups"]["powder"]["datasets"]) == {"p0", "p1", "p2"}
    assert doc["groups"]["saxs"]["codecs"]["sz3"]["review"]["status"] == "approved"
    # the group's threshold can be exported and applied with --group; the overall one is not approved
    out = _lossbound("apply", str(tmp / "runs" / "thresholds" / "azint.yaml"), "--codec", "sz3", "--group", "saxs",
                     "--export", cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout.split("# note")[0])["review"] == "approved"
    out = _lossbound("apply", str(tmp / "runs" / "thresholds" / "azint.yaml"), "--codec", "sz3", "--group", "nosuch",
                     "--export", cwd=tmp)
    assert out.returncode == 2 and "no group 'nosuch'" in out.stderr and "powder, saxs" in out.stderr


def test_a_dataset_that_cannot_be_measured_is_recorded_failed_and_the_others_go_on(campaign, tmp_path):
    tmp, scans, _, _ = campaign
    # one entry names a file that is not HDF5: that job fails, the other's goes on
    path = _campaign(tmp_path / "c.yaml", scans, [("powder", "p0"), ("saxs", "s0")],
                     s0={"name": "s0_broken", "path": str(tmp_path / "broken.h5")})
    (tmp_path / "broken.h5").write_bytes(b"not an HDF5 file at all")
    proc = _lossbound("campaign", "run", str(path), *RUN_ARGS, cwd=tmp)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 of 2 dataset(s) done" in proc.stdout and "s0_broken" in proc.stdout
    doc = _doc(tmp)
    assert "broken.h5" in doc["failed_datasets"]["s0_broken"]["reason"]
    assert "s0_broken" not in doc["datasets"]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("edit, expect", [
    (lambda d: d["datasets"][1].update(name="a"), "datasets[1] 'a': duplicate name 'a' (also datasets[0])"),
    (lambda d: d["datasets"][0].update(gian=2), "datasets[0] 'a': unknown key 'gian'; expected one of"),
    (lambda d: d["datasets"][0].update(path="nope.h5"), "datasets[0] 'a': path"),
    (lambda d: d["datasets"][0].update(path="*.nothing"), "matches no file"),
    (lambda d: d["datasets"][0].pop("group"), "datasets[0] 'a': group None"),
    (lambda d: d["datasets"][0].update(name="a,b"), "name 'a,b'"),
    (lambda d: d.update(technique="ptychox"), "technique 'ptychox'; expected one of azint, ptycho, sx, tomo"),
    (lambda d: d["datasets"][0].update(poni="missing.poni"), "poni"),
    (lambda d: d["datasets"][0].update(group="a.b"), "group 'a.b'"),
    (lambda d: d["datasets"][0].update(group="ungrouped"), "not 'ungrouped'"),
])
def test_a_bad_campaign_file_is_one_line_naming_the_entry_and_no_job_starts(tmp_path, edit, expect):
    (tmp_path / "x.h5").write_bytes(b"")
    doc = {"technique": "azint", "datasets": [{"name": "a", "group": "g", "path": "x.h5"},
                                              {"name": "b", "group": "g", "path": "x.h5"}]}
    edit(doc)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = _lossbound("campaign", "run", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and expect in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


def test_campaign_new_lists_a_folder_with_groups_from_subfolders_and_ponis_beside(campaign, tmp_path):
    _, scans, _, _ = campaign
    out = tmp_path / "new.yaml"
    proc = _lossbound("campaign", "new", str(scans), "--technique", "azint", "--set", "calibrant=CeO2", "-o", str(out),
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(out.read_text())
    by_name = {d["name"]: d for d in doc["datasets"]}
    assert by_name["p0"]["group"] == "powder" and by_name["s0"]["group"] == "saxs"
    assert by_name["p0"]["poni"].endswith("p0.poni") and doc["defaults"] == {"calibrant": "CeO2"}
    proc = _lossbound("campaign", "check", str(out), cwd=tmp_path)
    assert proc.returncode == 0 and "2 group(s)" in proc.stdout


def test_report_of_30_datasets_loads_every_image_and_stays_small(campaign, tmp_path):
    """30 datasets in 3 groups, from the campaign's real entries (renamed, their bounds spread):
    the page loads with every image in Chromium and stays under 5 MB."""
    require_browser()
    from lossbound.results.report import write_report
    from lossbound.results.thresholds import combine_all
    from lossbound.results.signoff import with_statuses

    tmp, _, _, _ = campaign
    doc = _doc(tmp)
    datasets = {}
    sources = sorted(doc["datasets"])
    for i in range(30):
        group = ("powder", "saxs", "wide_angle")[i % 3]
        src = ("s0", "1.50")[i % 2] if group == "saxs" else ("p0", "p1")[i % 2]
        e = copy.deepcopy(doc["datasets"][src])
        e["dataset"] = {**e["dataset"], "name": f"scan{i:02d}", "group": group}
        for c in e["codecs"].values():
            if c.get("bound") is not None:
                c["bound"] = float(c["bound"]) * (1 + (i % 7) / 3)
        datasets[f"scan{i:02d}"] = e
    # each clone's points: the journal keyed by point id, so a clone's point gets its own id
    journal = tmp_path / "runs" / "journal"
    journal.mkdir(parents=True)
    lines = (tmp / "runs" / "journal" / "azint.jsonl").read_text().splitlines()
    with open(journal / "azint.jsonl", "w") as out:
        for name, e in datasets.items():
            src = next(n for n in sources if doc["datasets"][n]["context"] == e["context"])
            for line in lines:
                rec = json.loads(line)
                if rec.get("dataset") == src:
                    out.write(json.dumps({**rec, "dataset": name, "point_id": f"{rec['point_id']}-{name}"}) + "\n")
    many = {**{k: v for k, v in doc.items() if k not in ("datasets", "codecs", "groups", "group_reviews")},
            **combine_all(datasets), "datasets": datasets, "reviews": {}}
    with_statuses(many)
    tdir = tmp_path / "runs" / "thresholds"
    tdir.mkdir(parents=True)
    (tdir / "azint.yaml").write_text(yaml.safe_dump(many, sort_keys=False))
    report = write_report(tdir / "azint.yaml", journal_dir=journal,
                          reports_dir=tmp_path / "runs" / "reports")
    size = report.stat().st_size
    assert size < 5e6, f"{size / 1e6:.1f} MB"
    check = inspect_page(report, screenshot=tmp_path / "many.png")
    assert check.images_total >= 4 and check.images_loaded == check.images_total, check.broken_images
    assert not check.console_errors, check.console_errors
    text = check.text
    assert "Per group (sample type)" in text and "Spread over 30 datasets in 3 groups" in text
    assert "wide_angle" in text and "limiting dataset" in text


@pytest.mark.parametrize("technique", ["azint", "tomo", "sx", "ptycho"])
def test_the_shipped_campaigns_over_the_shared_data_load_with_two_groups_or_more(shared_data, technique):
    from lossbound.cli.campaign_entry import load

    camp = load(ROOT / "campaigns" / f"{technique}.yaml")
    assert camp.technique == technique and len(camp.groups) >= 2
    measured = [e for e in camp.entries if e.path is not None]
    assert measured and all(e.files() for e in measured)
    assert all(str(shared_data.resolve()) in str(f.resolve()) for e in measured for f in e.files())


def _entry(group, bounds, *, spec="s"):
    return {"dataset": {"name": "x", "group": group, "sha256": "0"}, "date": "2026-12-05",
            "verdict_spec": {"tolerances": {"t": spec}, "pipeline": {}, "noise": {}},
            "tolerances": {"t": spec},
            "codecs": {c: {"codec": c, "mode": "absolute", "bound": b, "larger_means_more_loss": c != "zfp_rate",
                           "confirmed": True, "compression_ratio": 10.0} for c, b in bounds.items()}}


def test_groups_combine_apart_and_the_overall_bound_is_the_least_lossy_group():
    from lossbound.results.signoff import fingerprint, scope
    from lossbound.results.thresholds import combine_all

    datasets = {"a": _entry("powder", {"sz3": 8.0, "zfp_rate": 10.0}), "b": _entry("powder", {"sz3": 4.0, "zfp_rate": 12.0}),
                "c": _entry("saxs", {"sz3": 16.0, "zfp_rate": 14.0}, spec="other criteria")}
    out = combine_all(datasets)
    g = out["groups"]
    assert g["powder"]["codecs"]["sz3"]["bound"] == 4.0 and g["powder"]["codecs"]["sz3"]["limiting_dataset"] == "b"
    assert g["saxs"]["codecs"]["sz3"]["bound"] == 16.0  # its own spec: not excluded by the powder one
    assert out["codecs"]["sz3"]["bound"] == 4.0 and out["codecs"]["sz3"]["limiting_group"] == "powder"
    # a rate mode: smaller means more loss, so the conservative bound is the largest
    assert g["powder"]["codecs"]["zfp_rate"]["bound"] == 12.0
    assert out["codecs"]["zfp_rate"]["bound"] == 14.0 and out["codecs"]["zfp_rate"]["limiting_group"] == "saxs"
    assert set(out["codecs"]["sz3"]["per_dataset"]) == {"a", "b", "c"}
    assert out["codecs"]["sz3"]["per_group"]["saxs"]["bound"] == 16.0
    # a group where nothing passed makes the overall bound None, naming that group
    datasets["d"] = _entry("saxs", {"sz3": None, "zfp_rate": 14.0}, spec="other criteria")
    out2 = combine_all(datasets)
    assert out2["codecs"]["sz3"]["bound"] is None and out2["codecs"]["sz3"]["limiting_group"] == "saxs"
    # a group's fingerprint covers its own datasets only
    doc1 = {**out, "datasets": {k: v for k, v in datasets.items() if k != "d"}}
    doc2 = {**out2, "datasets": datasets}
    assert fingerprint(scope(doc1, "powder"), "sz3") == fingerprint(scope(doc2, "powder"), "sz3")
    assert fingerprint(scope(doc1, "saxs"), "sz3") != fingerprint(scope(doc2, "saxs"), "sz3")
    assert fingerprint(doc1, "sz3") != fingerprint(doc2, "sz3")
    # without groups the file reads as before: one combination, no groups section
    plain = {k: {**v, "dataset": {"name": k, "sha256": "0"}} for k, v in datasets.items() if k in ("a", "b")}
    assert set(combine_all(plain)) == {"codecs"} and combine_all(plain)["codecs"]["sz3"]["bound"] == 4.0


def test_a_sweep_override_is_refused_in_one_line_naming_the_list_form(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"technique": "azint", "datasets": [{"name": "a", "group": "g", "path": "x.h5"}]}))
    proc = _lossbound("campaign", "run", str(path), "--rerun", "codec=sz3,zfp", cwd=tmp_path)  # after an option too
    assert proc.returncode == 2 and "codec=[sz3,zfp]" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_codec_that_does_not_apply_to_a_group_has_no_overall_bound():
    from lossbound.results.thresholds import combine_all

    tooth = _entry("biological", {"sz3": 60.0})
    tooth["codecs_not_applicable"] = {"quant_blosc2": "float32 data: no counts to quantise"}
    out = combine_all({"tooth": tooth, "phantom": _entry("phantom", {"sz3": 70.0, "quant_blosc2": 2.4})})
    q = out["codecs"]["quant_blosc2"]
    assert q["bound"] is None and q["missing_groups"] == ["biological"] and q["limiting_group"] == "biological"
    assert out["groups"]["phantom"]["codecs"]["quant_blosc2"]["bound"] == 2.4
    assert "not applicable" in out["groups"]["biological"]["codecs"]["quant_blosc2"]["excluded_datasets"]["tooth"]
    assert out["codecs"]["sz3"]["bound"] == 60.0 and "missing_groups" not in out["codecs"]["sz3"]
