"""From sweep points to per-codec thresholds, and the ``runs/thresholds/<technique>.yaml`` file.

The threshold of a codec is the largest tested bound such that it and every smaller tested
bound passed (a conservative reading: a pass above a failure is reported, not trusted).
Each entry carries the hdf5plugin class name and keyword arguments, so
``getattr(hdf5plugin, entry["hdf5plugin"]["class"])(**entry["hdf5plugin"]["kwargs"])``
rebuilds the filter for ``h5py.File.create_dataset(..., compression=...)``, plus the raw HDF5
filter id and ``cd_values`` for readers in other languages.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from lossbound.hashing import stable_hash
from lossbound.points import PointResult

log = logging.getLogger(__name__)

RULE = "largest tested bound such that it and every smaller tested bound passed"


def _group_name(group: tuple, taken: set[str]) -> str:
    codec, mode, dtype, chunks = group
    name = codec
    if name in taken:  # the same codec swept twice (other mode/chunks): keep both apart
        name = "_".join(str(p) for p in (codec, mode, dtype, chunks) if p not in (None, ""))
    taken.add(name)
    return name


def _codec_entry(point: PointResult) -> dict[str, Any]:
    c = point.codec
    return {
        "hdf5plugin": {"class": c.get("plugin_class"), "kwargs": dict(c.get("plugin_kwargs") or {})},
        "filter_id": c.get("filter_id"),
        "cd_values": [int(v) for v in c.get("cd_values") or []],
        "chunks": c.get("chunks"),
        "input_dtype": c.get("stored_dtype"),
        "detector_dtype": c.get("original_dtype"),
        "compression_ratio": c.get("ratio"),
        "compress_mbps": c.get("compress_mbps"),
        "decompress_mbps": c.get("decompress_mbps"),
        "max_abs_error": c.get("max_abs_error"),
    }


def derive_thresholds(
    points: Iterable[PointResult], *, criteria: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-codec thresholds and lossless baselines from a sweep's points.

    Parameters
    ----------
    points : iterable of PointResult
        The sweep's points (any order).
    criteria : iterable of str
        Metric names to copy into each entry (the tolerance metrics).

    Returns
    -------
    codecs, baselines : dict
        ``codecs[name]`` has ``bound`` (None when no bound passed) and the measured figures at
        that bound; ``baselines[name]`` has the lossless ratio and speeds.
    """
    criteria = list(criteria)
    groups: dict[tuple, list[PointResult]] = defaultdict(list)
    baselines: dict[str, Any] = {}
    for p in points:
        if p.lossy:
            groups[p.group].append(p)
        elif p.status == "ok":
            baselines[p.setting["codec"]] = _codec_entry(p) | {"lossless_exact": bool(p.codec.get("bound_held"))}
        else:
            baselines[p.setting["codec"]] = {"failed": p.reason}
    codecs: dict[str, Any] = {}
    taken: set[str] = set()
    for group, pts in sorted(groups.items(), key=lambda kv: str(kv[0])):
        pts = sorted(pts, key=lambda p: p.value)
        accepted: PointResult | None = None
        first_failure: PointResult | None = None
        for p in pts:
            if not p.passed:
                first_failure = p
                break
            accepted = p
        codec, mode, dtype, chunks = group
        entry: dict[str, Any] = {"codec": codec, "mode": mode, "bound": None}
        if accepted is not None:
            entry["bound"] = accepted.value
            entry.update(_codec_entry(accepted))
            entry["criteria"] = {m: accepted.metrics.get(m) for m in criteria}
            entry["mlflow_run_id"] = accepted.run_id
        else:
            entry["input_dtype"] = dtype
            entry["chunks"] = chunks
        entry["tested_bounds"] = [p.value for p in pts]
        if first_failure is not None:
            why = first_failure.reason if first_failure.status != "ok" else "; ".join(first_failure.failures)
            entry["first_failure"] = {"bound": first_failure.value, "why": why}
        late = [p.value for p in pts if p.passed and first_failure is not None and p.value > first_failure.value]
        if late:
            entry["passed_above_first_failure"] = late  # non-monotonic: not trusted
        codecs[_group_name(group, taken)] = entry
    return codecs, baselines


def _plain(obj: Any) -> Any:
    """YAML-safe plain Python (tuples -> lists, numpy scalars -> floats)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


def accumulate_points(path: Path, context: Mapping[str, Any], points: Iterable[PointResult]) -> list[PointResult]:
    """All points recorded under ``context``, this sweep's included (newest wins per point_id).

    Kept in a JSON sidecar of the thresholds file, so the jobs of a Hydra multirun (split by
    codec, by bound, or both) together yield the thresholds a single sweep would. Points
    recorded under another context (dataset, pipeline, evaluators, tolerances) are dropped.
    """
    path = Path(path)
    key = stable_hash(_plain(context), length=24)
    known: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if old.get("context") == key:
                known = old.get("points", {})
        except (OSError, ValueError):
            log.warning("ignoring unreadable point record %s", path)
    for p in points:
        known[p.point_id] = dataclasses.asdict(p)
    _atomic_write(path, json.dumps({"context": key, "points": known}, default=str))
    return [PointResult(**d) for d in known.values()]


def write_thresholds(
    path: Path,
    *,
    technique: str,
    dataset: Mapping[str, Any],
    pipeline: Mapping[str, Any],
    tolerances: Mapping[str, Any],
    codecs: Mapping[str, Any],
    baselines: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the thresholds file (replacing it); returns the document written."""
    doc = _plain({"technique": technique, "dataset": dict(dataset), "pipeline": dict(pipeline),
                  "tolerances": dict(tolerances)})
    doc["rule"] = RULE
    doc["generated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    doc["codecs"] = _plain(codecs)
    doc["baselines"] = _plain(baselines)
    _atomic_write(Path(path), yaml.safe_dump(doc, sort_keys=False))
    return doc


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def load_thresholds(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def rebuild_filter(entry: Mapping[str, Any]):
    """The hdf5plugin filter object of a thresholds entry (for ``create_dataset(**filter)``)."""
    import hdf5plugin

    spec = entry["hdf5plugin"]
    return getattr(hdf5plugin, spec["class"])(**spec["kwargs"])
