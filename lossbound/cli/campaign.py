"""``lossbound campaign``: many datasets of one technique, one job each, through a Hydra launcher.

    lossbound campaign new FOLDER --technique azint --pattern '*.cbf' --group powder -o azint.yaml
    lossbound campaign check azint.yaml
    lossbound campaign run azint.yaml                          # joblib: jobs side by side here
    lossbound campaign run azint.yaml hydra/launcher=slurm hydra.launcher.partition=cpu \\
        tracking.tracking_uri=http://mlflow.facility:5000 codec=[sz3,zfp,quant_blosc2]

``run`` checks the whole file, then starts one Hydra job per pending dataset (a Hydra multirun
over ``campaign.entry``; add a sweep such as ``codec=sz3,zfp`` for one job per dataset and
codec). Each job is a study of ``dataset=file`` with the entry's metadata; its thresholds merge
into ``<runs>/thresholds/<technique>.yaml`` under a file lock, per group and over all groups. A
dataset is done when the thresholds file holds it from this entry and these overrides; a re-run
starts only the others (``--rerun`` all), and a study resumes from its journal, so nothing
finished is recomputed. A dataset that cannot be measured (a refused gate, a bad file, a crash)
is recorded under ``failed_datasets`` with its reason, and the others go on. The report is
written once, at the end.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lossbound.cli.config import compose
from lossbound.cli.parsing import OneLineParser, UsageError, first_line
from lossbound.core.errors import InputError
from lossbound.core.files import load_yaml
from lossbound.core.hashing import stable_hash
from lossbound.cli.campaign_entry import dataset_keys, load, techniques
from lossbound.study.campaign import PATH_KEYS, Campaign, campaign_from_folder

log = logging.getLogger("lossbound.campaign")

__all__ = ["main", "pending", "run_key"]


# -- what is done -----------------------------------------------------------------------------------
def hydra_quote(value: str) -> str:
    """A value Hydra reads back as this very string (not a number, bool, null, sweep or list)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_sweep(override: str) -> bool:
    """True for a Hydra sweep (``codec=sz3,zfp``): a comma outside brackets and quotes."""
    value = override.split("=", 1)[1] if "=" in override else ""
    depth, quote = 0, None
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def run_key(overrides: Sequence[str]) -> str:
    """The key of a campaign run's overrides that change results (not where jobs run)."""
    kept = sorted(o for o in overrides if not o.lstrip("+~").startswith(("hydra/launcher", "hydra.", "sweep.workers",
                                                                        "sweep.progress", "tracking.")))
    return stable_hash(kept)


def pending(camp: Campaign, doc: Mapping[str, Any] | None, key: str) -> tuple[list[str], list[str]]:
    """The entries still to run and those done (in the thresholds file from this entry and run key)."""
    datasets = (doc or {}).get("datasets") or {}
    todo, done = [], []
    for e in camp.entries:
        c = (datasets.get(e.name) or {}).get("campaign") or {}
        if c.get("entry_key") == e.key() and c.get("run_key") == key:
            done.append(e.name)
        else:
            todo.append(e.name)
    return todo, done


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return load_yaml(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: unreadable thresholds file ({first_line(exc)})") from None


def _paths(technique: str, overrides: Sequence[str]) -> dict[str, Any]:
    """``paths`` as the jobs will see them (only ``paths.*`` overrides can move them)."""
    mine = [o for o in overrides if o.lstrip("+").startswith("paths.")]
    return compose([f"technique={technique}", *mine], resolve=True)["paths"]


# -- commands ---------------------------------------------------------------------------------------
def _status_rows(camp: Campaign, doc: Mapping[str, Any] | None, done: Sequence[str]) -> list[list[str]]:
    datasets = (doc or {}).get("datasets") or {}
    failed = (doc or {}).get("failed_datasets") or {}
    rows = []
    for e in camp.entries:
        if e.name in done:
            state = "done"
        elif e.name in failed:
            state = f"failed: {failed[e.name].get('reason')}"
        elif e.name in datasets:
            state = "pending (measured with other settings or files)"
        else:
            state = "pending"
        rows.append([e.name, e.group, e.path or f"dataset={e.config}", state])
    return rows


def _print_rows(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def check(args: argparse.Namespace) -> int:
    camp = load(args.file)
    paths = _paths(camp.technique, args.overrides)
    doc = _read(Path(paths["thresholds_dir"]) / f"{camp.technique}.yaml")
    todo, done = pending(camp, doc, run_key(args.overrides))
    print(f"{camp.path}: technique {camp.technique}, {len(camp.entries)} dataset(s) in {len(camp.groups)} group(s) "
          f"({', '.join(f'{g} {len(n)}' for g, n in camp.groups.items())}); {len(done)} done, {len(todo)} to run")
    _print_rows(["dataset", "group", "path", "status"], _status_rows(camp, doc, done))
    return 0


def run(args: argparse.Namespace) -> int:
    from lossbound.results.report import write_report

    camp = load(args.file)
    overrides = list(args.overrides)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if _is_sweep(o) and not key.startswith("hydra"):
            raise UsageError(f"override {o!r}: a campaign runs one job per dataset; give a list instead of a "
                             f"sweep (e.g. codec=[sz3,zfp])")
        if key in ("technique", "dataset") or key.startswith(("campaign", "dataset.")):
            raise UsageError(f"override {o!r}: a campaign sets technique, dataset and campaign.* from {camp.path}; "
                             f"set dataset keys there (per entry, or for every entry under defaults:)")
    paths = _paths(camp.technique, overrides)
    if not paths.get("thresholds_dir") or not paths.get("reports_dir"):
        raise UsageError("paths.thresholds_dir and paths.reports_dir must be set for a campaign (its thresholds "
                         "file and report)")
    thresholds = Path(paths["thresholds_dir"]) / f"{camp.technique}.yaml"
    key = run_key(overrides)
    todo, done = pending(camp, _read(thresholds), key)
    if args.rerun:
        todo, done = [e.name for e in camp.entries], []
    print(f"campaign {camp.path.name}: {len(camp.entries)} dataset(s), {len(done)} done, {len(todo)} to run")
    t0 = time.perf_counter()
    stopped = None
    if todo:
        if not any(o.startswith("hydra/launcher=") for o in overrides):
            overrides.append("hydra/launcher=joblib")
        # every value quoted: a name such as 1.50 or null, or a path with a comma, stays a string
        argv = ["-m", f"technique={camp.technique}", "dataset=file", f"campaign.file={hydra_quote(str(camp.path))}",
                f"campaign.entry={','.join(hydra_quote(n) for n in todo)}", f"campaign.run_key={hydra_quote(key)}",
                *overrides,
                "paths.reports_dir=null"]  # one report at the end, not one per job
        from lossbound.cli import evaluate

        saved = sys.argv
        sys.argv = ["lossbound campaign", *argv]
        try:
            evaluate.main()
        except SystemExit as exc:  # Hydra refused the overrides, or the launcher lost a job
            if exc.code not in (0, None):
                stopped = exc.code
        finally:
            sys.argv = saved
    jobs_s = time.perf_counter() - t0
    doc = _read(thresholds)
    todo_after, done_after = pending(camp, doc, key)
    report = None
    if doc and doc.get("datasets"):
        t1 = time.perf_counter()
        try:
            report = write_report(thresholds, journal_dir=paths.get("journal_dir"),
                                  reports_dir=Path(paths["reports_dir"]))
            log.info("report written in %.1f s", time.perf_counter() - t1)
        except Exception as exc:  # noqa: BLE001 - the thresholds stand; the report can be rebuilt
            log.exception("report not written (%s); rebuild it with: lossbound report %s", first_line(exc),
                          camp.technique)
    print(f"\ncampaign {camp.path.name}: {len(done_after)} of {len(camp.entries)} dataset(s) done "
          f"({jobs_s:.0f} s of jobs)")
    rows = [r for r in _status_rows(camp, doc, done_after) if r[3] != "done"]
    if rows:
        _print_rows(["dataset", "group", "path", "status"], rows)
    for scope, codecs in [(f"group {g}", v.get("codecs") or {}) for g, v in ((doc or {}).get("groups") or {}).items()] \
            + [("all groups", (doc or {}).get("codecs") or {})]:
        print(f"{scope}:")
        for codec, e in codecs.items():
            if e.get("missing_groups"):
                print(f"  {codec:<14} bound None  not measured on group(s) {', '.join(e['missing_groups'])}")
                continue
            lim = e.get("limiting_dataset")
            print(f"  {codec:<14} bound {e.get('bound')}  limiting dataset {lim}"
                  + (f" ({e['limiting_group']})" if e.get("limiting_group") else ""))
    print(f"thresholds: {thresholds}" + (f"\nreport: {report}" if report else ""))
    if stopped is not None:
        print(f"error: the launcher stopped ({stopped}): a job was lost (killed, out of memory, a failed cluster "
              f"task; on SLURM other tasks may still run); re-run the same command for the datasets not done",
              file=sys.stderr)
    return 0 if not todo_after and stopped is None else 1


def new(args: argparse.Namespace) -> int:
    meta: dict[str, Any] = {}
    for item in args.set or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        meta[k] = yaml.safe_load(v)
        if k in PATH_KEYS and meta[k] is not None:  # a file named on the command line: from here
            meta[k] = str(Path(str(meta[k])).expanduser().resolve())
    if args.technique not in techniques():
        raise UsageError(f"--technique {args.technique!r}: expected one of {', '.join(techniques())}")
    out = Path(args.output) if args.output else None
    doc = campaign_from_folder(args.folder, technique=args.technique, pattern=args.pattern, group=args.group,
                               per_folder=args.per_folder, metadata=meta,
                               relative_to=out.resolve().parent if out else None)
    text = ("# LossBound campaign (lossbound campaign new): set each dataset's group (sample type) and its own\n"
            "# metadata (poni, adu_per_photon, cell, ...); keys: lossbound campaign new --help\n"
            + yaml.safe_dump(doc, sort_keys=False))
    if out is not None and out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; expected a new file (or --overwrite)")
    # what is written must load (paths exist, names unique, keys known): checked first, beside it
    where = (out.resolve().parent if out else Path.cwd())
    probe = where / f".lossbound-campaign-{os.getpid()}.yaml"
    probe.write_text(text)
    try:
        camp = load(probe)
    finally:
        probe.unlink()
    if out is None:
        sys.stdout.write(text)
        return 0
    out.write_text(text)
    print(f"wrote {out}: {len(camp.entries)} dataset(s) in group(s) {', '.join(camp.groups)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lossbound campaign",
                           description="Run a campaign: many datasets of one technique (a YAML file), one job each "
                                       "through a Hydra launcher, thresholds per group and over all groups.",
                           epilog=__doc__.split("\n\n", 2)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    p = sub.add_parser("run", help="run the pending datasets (Hydra overrides after the file)")
    p.add_argument("file", type=Path, help="campaign file (YAML)")
    p.add_argument("--rerun", action="store_true", help="run every dataset, also those done (points are still "
                                                        "reused from the journal)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every job, e.g. hydra/launcher=slurm "
                                                "codec=[sz3,zfp] (default launcher: joblib)")
    p = sub.add_parser("check", help="check the file and show which datasets are done")
    p.add_argument("file", type=Path)
    p.add_argument("overrides", nargs="*", help="the overrides of the run to compare with")
    p = sub.add_parser("new", help="write a campaign file listing the scans of a folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--technique", required=True)
    p.add_argument("--pattern", default="*.h5", help="files that are scans (glob, searched recursively; "
                                                     "default *.h5)")
    p.add_argument("--group", help="group (sample type) of every dataset (default: the name of the folder each "
                                   "scan is in)")
    p.add_argument("--per-folder", action="store_true", help="one dataset per folder of matching files "
                                                             "(stills of one run), not per file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="metadata for every dataset (defaults), "
                   f"e.g. --set poni=geo.poni; keys: {', '.join(k for k in dataset_keys() if k not in ('name', 'path'))}")
    p.add_argument("-o", "--output", help="write here (default: print)")
    p.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
        logging.getLogger("lossbound").setLevel(logging.INFO)
    try:
        args, extra = _parser().parse_known_args(argv)
        # overrides after an option (run FILE --rerun codec=[sz3]): argparse leaves them over
        if bad := [x for x in extra if x.startswith("-") or not hasattr(args, "overrides")]:
            raise UsageError(f"unrecognized arguments: {' '.join(bad)} (lossbound campaign --help)")
        if extra:
            args.overrides = [*args.overrides, *extra]
        return {"run": run, "check": check, "new": new}[args.action](args)
    except InputError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
