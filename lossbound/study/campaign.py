"""Campaign files: many datasets of one technique, each with its metadata and group.

A campaign file (YAML)::

    technique: azint
    defaults:                 # optional: metadata every dataset gets unless it sets its own
      calibrant: CeO2
    datasets:
      - name: ceo2_pilatus    # names the dataset in the thresholds file, MLflow and the report
        group: powder         # sample type: thresholds are combined per group and over all groups
        path: frames/CeO2.tif # a file, a folder or a glob; relative to this file
        poni: frames/CeO2.poni
        notes: Dioptas calibration, flipped
      - name: agbh_saxs
        group: saxs
        path: saxs/AgBh.cbf
        sample: saxs

Every key but ``name``, ``group``, ``path``, ``dataset`` and ``notes`` is a ``dataset=file`` key
(``conf/dataset/file.yaml``: gain, PONI, mask, cell, space group, count cut-off, ...). Instead of
a ``path``, an entry may name a shipped dataset config (``dataset: tooth``, ``dataset: sim_sx``:
a measured dataset beside the checkout, or a built-in simulation written on first use); its
other keys then override that config's.
:func:`load_campaign` checks the whole file before any job starts; each problem is one line
naming the file, the entry and the key.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from lossbound.core.errors import InputError
from lossbound.core.hashing import stable_hash

__all__ = ["Campaign", "CampaignEntry", "ENTRY_KEYS", "PATH_KEYS", "campaign_from_folder", "load_campaign"]

#: keys of a dataset entry besides the dataset metadata
ENTRY_KEYS = ("name", "group", "path", "dataset", "notes")
#: metadata keys that name files (resolved against the campaign file's folder, must exist)
PATH_KEYS = ("poni", "mask_file")
_TOP_KEYS = ("technique", "defaults", "datasets", "description")
#: names go into Hydra overrides, MLflow run names and file names
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: groups also name MLflow tags (lossbound.review.group.<group>.*): no dots or plus signs
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
#: the group of datasets that declare none (lossbound.results.thresholds.UNGROUPED)
RESERVED_GROUP = "ungrouped"


@dataclasses.dataclass(frozen=True)
class CampaignEntry:
    """One dataset of a campaign: what ``dataset=file`` is set to for its job."""

    name: str
    group: str
    path: str | None  # absolute; a file, a folder or a glob (None: ``config`` names the data)
    notes: str | None
    metadata: Mapping[str, Any]  # dataset=file keys, paths absolute
    config: str | None = None  # a shipped dataset config (conf/dataset/<config>.yaml) instead of a path

    def dataset_config(self) -> dict[str, Any]:
        """The ``dataset`` config keys of this entry's job (over ``dataset=file``, or over the
        named ``config``)."""
        out = {**self.metadata, "name": self.name, "group": self.group, "notes": self.notes}
        return out if self.path is None else {**out, "path": self.path}

    def files(self) -> list[Path]:
        """The files the entry reads (a glob's matches, a folder's files, or the file)."""
        if self.path is None:
            return []
        p = Path(self.path)
        if p.is_dir():
            return sorted(q for q in p.iterdir() if q.is_file())
        if p.exists():
            return [p]
        return sorted(Path(q) for q in glob.glob(self.path) if Path(q).is_file())

    def key(self) -> str:
        """What the entry's result depends on: its settings and its files' size and mtime
        (a file re-written since the study makes the dataset pending again; its notes do not
        count)."""
        stats = []
        for f in [*self.files(), *(Path(self.metadata[k]) for k in PATH_KEYS if self.metadata.get(k))]:
            st = f.stat()
            stats.append([str(f), st.st_size, st.st_mtime_ns])
        settings = {k: v for k, v in self.dataset_config().items() if k != "notes"}
        return stable_hash({"dataset": settings, "config": self.config, "files": stats})


@dataclasses.dataclass(frozen=True)
class Campaign:
    path: Path
    technique: str
    entries: tuple[CampaignEntry, ...]
    description: str | None = None

    def entry(self, name: str) -> CampaignEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise InputError(f"{self.path}: no dataset named {name!r}; expected one of "
                         f"{', '.join(e.name for e in self.entries)}")

    @property
    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for e in self.entries:
            out.setdefault(e.group, []).append(e.name)
        return out


def _fail(path: Path, where: str, msg: str) -> InputError:
    return InputError(f"{path}: {where}: {msg}")


def _resolve(value: Any, base: Path) -> str:
    return str((base / os.path.expanduser(str(value))).resolve()) if not os.path.isabs(os.path.expanduser(
        str(value))) else os.path.expanduser(str(value))


def _check_path(path: Path, where: str, key: str, value: str, *, glob_ok: bool) -> None:
    p = Path(value)
    if p.exists():
        return
    if glob_ok and glob.has_magic(value):
        if any(Path(q).is_file() for q in glob.glob(value)):
            return
        raise _fail(path, where, f"{key} {value} matches no file; expected a file, a folder or a glob of files")
    raise _fail(path, where, f"{key} {value} does not exist; expected an existing "
                             f"{'file, folder or glob' if glob_ok else 'file'}")


def load_campaign(path: Path | str, *, metadata_keys: Iterable[str], technique: str | None = None,
                  techniques: Iterable[str] = (), dataset_configs: Iterable[str] = ()) -> Campaign:
    """Read and check a campaign file.

    Parameters
    ----------
    path : Path
        The campaign YAML file.
    metadata_keys : iterable of str
        The dataset metadata keys an entry may set (the ``dataset=file`` config's keys).
    technique : str, optional
        The technique the command runs; the file's must be the same.
    techniques : iterable of str
        The known techniques (for the message when the file names another).
    dataset_configs : iterable of str
        The shipped dataset configs an entry may name with ``dataset:`` (not ``file``).

    Raises
    ------
    InputError
        One line naming the file, the entry (``datasets[i] 'name'``) and the key: an
        unreadable file, an unknown key, a missing or duplicate name, a missing group or path,
        a path that does not exist or a glob that matches nothing.
    """
    path = Path(path).expanduser()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such campaign file; expected a YAML file listing datasets") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: unreadable campaign file ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping with keys technique and datasets, got {type(doc).__name__}")
    if unknown := sorted(set(doc) - set(_TOP_KEYS)):
        raise InputError(f"{path}: unknown key {unknown[0]!r}; expected one of {', '.join(_TOP_KEYS)}")
    known = sorted(set(techniques))
    tech = doc.get("technique")
    if not isinstance(tech, str) or not tech or (known and tech not in known):
        raise InputError(f"{path}: technique {tech!r}; expected one of {', '.join(known) or 'the techniques'}")
    if technique is not None and tech != technique:
        raise InputError(f"{path}: technique {tech!r} but the command runs technique={technique}; expected the same")
    meta_keys = set(metadata_keys) - set(ENTRY_KEYS)
    allowed = sorted(set(ENTRY_KEYS) | meta_keys)
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{path}: defaults is a {type(defaults).__name__}; expected a mapping of dataset keys")
    if bad := sorted(set(defaults) - meta_keys - {"group", "notes"}):
        raise InputError(f"{path}: defaults: unknown key {bad[0]!r}; expected one of "
                         f"{', '.join(sorted(meta_keys | {'group', 'notes'}))}")
    items = doc.get("datasets")
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: datasets: expected a non-empty list of datasets (name, group, path, ...)")
    base = path.resolve().parent
    entries: list[CampaignEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"datasets[{i}]"
        if not isinstance(item, dict):
            raise _fail(path, where, f"expected a mapping (name, group, path, ...), got {type(item).__name__}")
        name = item.get("name")
        if name is not None:
            where += f" {name!r}"
        if bad := sorted(set(item) - set(allowed)):
            raise _fail(path, where, f"unknown key {bad[0]!r}; expected one of {', '.join(allowed)}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(path, where, f"name {name!r}; expected a name of letters, digits, _ . + - "
                                     f"(it names the dataset's thresholds, runs and jobs)")
        if name in seen:
            raise _fail(path, where, f"duplicate name {name!r} (also datasets[{seen[name]}]); expected unique names")
        seen[name] = i
        merged = {**defaults, **item}
        group = merged.get("group")
        if not isinstance(group, str) or not _GROUP.match(group) or group == RESERVED_GROUP:
            raise _fail(path, where, f"group {group!r}; expected a sample type such as powder or saxs "
                                     f"(letters, digits, _ -; not {RESERVED_GROUP!r}), here or under defaults")
        config = merged.get("dataset")
        configs = sorted(set(dataset_configs) - {"file"})
        if config is not None:
            if config not in configs:
                raise _fail(path, where, f"dataset {config!r}; expected one of {', '.join(configs)} (or a path)")
            if merged.get("path"):
                raise _fail(path, where, f"both path and dataset {config!r}; expected one of them")
            data_path = None
        elif not merged.get("path"):
            raise _fail(path, where, "no path; expected path: a file, a folder or a glob (or dataset: a shipped "
                                     "dataset config)")
        else:
            data_path = _resolve(merged["path"], base)
            _check_path(path, where, "path", data_path, glob_ok=True)
        metadata = {k: v for k, v in merged.items() if k not in ENTRY_KEYS}
        for k in PATH_KEYS:
            if metadata.get(k) is not None:
                metadata[k] = _resolve(metadata[k], base)
                _check_path(path, where, k, metadata[k], glob_ok=False)
        notes = merged.get("notes")
        entries.append(CampaignEntry(name=name, group=group, path=data_path,
                                     notes=None if notes is None else str(notes), metadata=metadata, config=config))
    return Campaign(path=path.resolve(), technique=tech, entries=tuple(entries),
                    description=doc.get("description"))


def campaign_from_folder(folder: Path | str, *, technique: str, pattern: str, group: str | None,
                         per_folder: bool = False, metadata: Mapping[str, Any] | None = None,
                         relative_to: Path | None = None) -> dict[str, Any]:
    """A campaign document listing the scans of ``folder``: one dataset per file matching
    ``pattern`` (recursively), or with ``per_folder`` one per folder holding such files (a
    series of stills). Names come from the stems (made unique), paths are relative to
    ``relative_to`` (where the file will be written) when given; ``metadata`` goes to
    ``defaults``. ``group=None``: each dataset's group is the name of the folder it sits in
    (a facility's ``<sample type>/<scan>`` layout). A ``<stem>.poni`` beside a file (or in a
    folder of stills) becomes its ``poni``. Edit groups and metadata afterwards."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; expected a folder of scans")
    matches = sorted(p for p in folder.rglob(pattern) if p.is_file())
    if not matches:
        raise InputError(f"{folder}: no file matches {pattern!r}; expected scans (e.g. --pattern '*.h5')")
    targets: list[Path] = sorted({m.parent for m in matches}) if per_folder else matches
    datasets, taken = [], set()
    for t in targets:
        stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", (t.name if per_folder else t.stem)).lstrip("_.+-") or "scan"
        name, k = stem, 2
        while name in taken:
            name, k = f"{stem}-{k}", k + 1
        taken.add(name)
        def rel(p: Path | str) -> str:
            return os.path.relpath(p, Path(relative_to).resolve()) if relative_to is not None else str(p)

        folder_group = re.sub(r"[^A-Za-z0-9_-]", "_", (t if per_folder else t.parent).name).lstrip("_-") or "default"
        item = {"name": name, "group": group or folder_group,
                "path": rel(t / pattern if per_folder else t)}
        ponis = sorted(t.glob("*.poni")) if per_folder else [t.with_suffix(".poni")]
        if technique != "tomo" and ponis and ponis[0].is_file():
            item["poni"] = rel(ponis[0])
        datasets.append(item)
    doc: dict[str, Any] = {"technique": technique}
    if metadata:
        doc["defaults"] = dict(metadata)
    doc["datasets"] = datasets
    return doc
