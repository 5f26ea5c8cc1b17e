"""Thresholds per (dataset, codec), and the conservative threshold across datasets.

``runs/thresholds/<technique>.yaml``::

    technique, rule, generated
    datasets:
      <dataset name>: {dataset: {name, source, sha256}, pipeline, tolerances, versions, date,
                       codecs: {<codec>: {bound, ..., provenance}}, baselines: {...}}
    codecs:            # per codec, across the datasets measured under the same tolerances
      <codec>: {bound, limiting_dataset, per_dataset, hdf5plugin, filter_id, cd_values, ...}

The threshold of a codec on one dataset is the most lossy tested value such that it and every
less lossy tested value passed (a pass above a failure is reported, never trusted). A second
dataset adds an entry and never erases the first; multirun jobs merge under a file lock.
Each entry carries the hdf5plugin class and keyword arguments
(``lossbound.codecs.filter_from_config``) plus the HDF5 filter id and ``cd_values`` for readers
in other languages, and the chain's pre-transform and bound kind (codec protocol v2):
``lossbound.codecs.write_payload(group, name, data, setting_for(entry), valid=mask)`` applies it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml
from filelock import FileLock

from lossbound.codecs import CODECS, CodecSetting, filter_from_config
from lossbound.core.errors import ConfigError
from lossbound.core.files import atomic_write_text, dump_yaml, load_yaml
from lossbound.core.types import PointResult
from lossbound.criteria.tolerance import Tolerances
from lossbound.search import Search, non_monotonic
from lossbound.results.signoff import with_statuses

log = logging.getLogger(__name__)

RULE = ("most lossy tested value such that it and every less lossy tested value passed "
        "(larger = more loss for error bounds; the reverse for PSNR, rate and precision modes)")


def grows_with_value(codec: str, mode: str | None) -> bool:
    """True when a larger value of ``mode`` means more loss."""
    return mode not in CODECS.get(codec).less_loss_modes


def _group_name(group: tuple, taken: set[str]) -> str:
    codec, mode, dtype, chunks = group
    name = codec
    if name in taken:  # the same codec measured twice (other mode/chunks): keep both apart
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
        "chunks_setting": point.setting.get("chunks"),  # as configured (null = one frame per chunk)
        "input_dtype": c.get("stored_dtype"),
        "detector_dtype": c.get("original_dtype"),
        "compression_ratio": c.get("ratio"),
        "compress_mbps": c.get("compress_mbps"),
        "decompress_mbps": c.get("decompress_mbps"),
        "max_abs_error": c.get("max_abs_error"),
        # codec protocol v2: the chain's pre-transform, the kind of bound, and the mask check
        "transform": c.get("transform"),
        "transform_params": dict(c.get("transform_params") or {}),
        "bound_kind": c.get("bound_kind"),
        "max_error_sigma": c.get("max_error_sigma"),
        "masked_pixels": c.get("masked_pixels"),
        "masked_pixels_changed": c.get("masked_pixels_changed"),
    }


def curve_threshold(points: Iterable[PointResult], *, criteria: Iterable[str] = (), tolerances: Any = None
                    ) -> dict[str, Any]:
    """The threshold entry of one codec curve (points differing only in their value), with
    whether it is ``confirmed`` and, given the ``tolerances`` it was judged under, the
    ``bound_range`` (:func:`bound_range`)."""
    pts = [p for p in points]
    codec, mode, dtype, chunks = pts[0].group
    grows = grows_with_value(codec, mode)
    pts.sort(key=lambda p: p.value if grows else -p.value)
    accepted = first_failure = None
    for p in pts:
        if not p.passed:
            first_failure = p
            break
        accepted = p
    entry: dict[str, Any] = {"codec": codec, "mode": mode, "larger_means_more_loss": grows, "bound": None}
    if accepted is not None:
        entry["bound"] = accepted.value
        entry.update(_codec_entry(accepted))
        entry["criteria"] = {m: accepted.metrics.get(m) for m in criteria}
        entry["mlflow_run_id"] = accepted.run_id
    else:
        entry["input_dtype"] = dtype
        entry["chunks"] = chunks
    entry["tested_values"] = [p.value for p in pts]
    entry["evaluations"] = len(pts)
    if first_failure is not None:
        why = first_failure.reason if first_failure.status != "ok" else "; ".join(first_failure.failures)
        entry["first_failure"] = {"bound": first_failure.value, "why": why, "mlflow_run_id": first_failure.run_id}
    if late := non_monotonic(pts, grows=grows):
        entry["passed_above_first_failure"] = late  # non-monotonic response: not trusted
    entry.update(confirmation(pts, accepted, grows=grows))
    if tolerances is not None and accepted is not None:
        entry.update(bound_range(pts, accepted, first_failure, tolerances, grows=grows))
    else:
        entry.update(bound_range=None, limiting_criterion=None,
                     bound_range_basis="no threshold" if accepted is None else "judged without tolerances")
    return entry


def confirmation(pts: list[PointResult], accepted: PointResult | None, *, grows: bool, need: int = 2
                 ) -> dict[str, Any]:
    """``confirmed``: at least ``need`` less lossy values passed below the threshold, one of
    them at most half as lossy (they all passed: the threshold rule), and ``confirmed_by``."""
    if accepted is None:
        return {"confirmed": False, "confirmed_by": []}
    t = (lambda v: math.log(v)) if grows else (lambda v: -math.log(v))
    below = [p.value for p in pts if p.value is not None and p.value > 0 and t(p.value) < t(accepted.value) - 1e-9]
    half = any(t(v) <= t(accepted.value) - math.log(2) + 1e-9 for v in below)
    return {"confirmed": bool(len(below) >= need and half), "confirmed_by": sorted(below, key=t)}


def bound_range(pts: list[PointResult], accepted: PointResult, first_failure: PointResult | None, tolerances: Any,
                *, grows: bool) -> dict[str, Any]:
    """Where the limiting criterion crosses its tolerance when the tolerance moves by ±1
    standard error of its noise effect: ``bound_range`` [tight, loose], interpolated
    (log margin against log value) between evaluated points; ``limiting_criterion`` (the one
    whose margin crosses zero first after the threshold) and ``bound_range_basis``. A
    criterion with a fixed tolerance has no such error: the range is the search bracket
    (threshold, first failure). An end beyond the tested values is None (open)."""
    t = (lambda v: math.log(v)) if grows else (lambda v: -math.log(v))
    back = (lambda x: math.exp(x)) if grows else (lambda x: math.exp(-x))
    ok = sorted((p for p in pts if p.status == "ok" and p.value is not None and p.value > 0), key=lambda p: t(p.value))
    out: dict[str, Any] = {}
    if first_failure is None:
        return {"bound_range": [accepted.value, None], "limiting_criterion": None,
                "bound_range_basis": "no failure tested above the threshold"}
    fail_metrics = first_failure.status == "ok" and (first_failure.metrics or first_failure.frame_metrics)
    if not fail_metrics or not first_failure.failures or all(f.startswith("codec ") or f.startswith("lossless")
                                                             for f in first_failure.failures):
        return {"bound_range": [accepted.value, first_failure.value], "limiting_criterion": "codec",
                "bound_range_basis": "search bracket: the first failure is the codec's (crash or broken bound)"}

    def margin(p: PointResult, c: Any, edge: float) -> float | None:
        v = p.frame_metrics.get(c.metric) if c.kind == "frames" else p.metrics.get(c.metric)
        return c.margin(v, edge=edge)

    def crossing(c: Any, edge: float) -> tuple[float | None, bool]:
        """t where the margin first turns negative (interpolated), and whether it is open."""
        prev = None
        for p in ok:
            m = margin(p, c, edge)
            if m is None:
                continue
            if m < 0:
                if prev is None:
                    return None, True  # below the least lossy tested value
                t0, m0 = prev
                return t0 + (t(p.value) - t0) * m0 / (m0 - m), False
            prev = (t(p.value), m)
        return None, True  # no failure under this tolerance among the tested values

    best = None
    for c in tolerances.criteria:
        x, open_ = crossing(c, 0.0)
        if x is not None and (best is None or x < best[0]):
            best = (x, c)
    if best is None:
        return {"bound_range": [accepted.value, first_failure.value], "limiting_criterion": None,
                "bound_range_basis": "search bracket (no criterion crossing between evaluated points)"}
    c = best[1]
    rel = float(c.relative_se())
    out["limiting_criterion"] = c.metric
    if rel <= 0:
        out["bound_range"] = [accepted.value, first_failure.value]
        out["bound_range_basis"] = f"search bracket ({c.metric} has a fixed tolerance: no noise-effect error)"
        return out
    (tight, tight_open), (loose, loose_open) = crossing(c, -1.0), crossing(c, 1.0)
    lo = None if tight is None else float(f"{back(tight):.4g}")
    hi = None if loose is None else float(f"{back(loose):.4g}")
    out["bound_range"] = [lo, hi] if grows else [hi, lo]
    out["bound_range_basis"] = (f"{c.metric} at its tolerance -/+ 1 standard error of its noise effect "
                                f"(relative {rel:.0%}), interpolated between evaluated points")
    return out


def derive_thresholds(points: Iterable[PointResult], *, criteria: Iterable[str] = (), tolerances: Any = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-codec thresholds and lossless baselines from points of one dataset (judged under
    ``tolerances``, which also give each threshold its ``bound_range``)."""
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
    codecs = {name: curve_threshold(groups[group], criteria=criteria, tolerances=tolerances)
              for group, name in curve_names(groups).items()}
    return codecs, baselines


def curve_names(groups: Iterable[tuple]) -> dict[tuple, str]:
    """The name of each lossy curve (a point's ``group``) in the thresholds file: the codec,
    or codec_mode_dtype_chunks when one codec was measured twice."""
    taken: set[str] = set()
    return {group: _group_name(group, taken) for group in sorted(set(groups), key=str)}


def plain(obj: Any) -> Any:
    """YAML-safe plain Python (tuples -> lists, numpy scalars -> floats)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


def resolve_dataset_name(path: Path | None, *, name: str, given: bool, sha256: str, source: str) -> str:
    """The name a dataset's thresholds go under. A given name (``dataset.name``) is kept: new
    content under it replaces its entry. A name made from a file or folder stem is made unique
    by content: ``scan``, ``scan-2``, ... — the first that is free, holds this content, or was
    measured from this very source (a file whose content changed replaces its own entry), so
    two users' ``scan.h5`` never overwrite each other."""
    if given or path is None or not Path(path).exists():
        return name
    try:
        with FileLock(str(path) + ".lock"):
            datasets = (load_yaml(Path(path).read_text()) or {}).get("datasets") or {}
    except (OSError, yaml.YAMLError):
        return name
    for k in range(1, 10_000):
        candidate = name if k == 1 else f"{name}-{k}"
        d = (datasets.get(candidate) or {}).get("dataset")
        if d is None or d.get("sha256") == sha256 or d.get("source") == source:
            return candidate
    raise ConfigError(f"thresholds file {path}: no free name for dataset {name!r}")


def spec_differences(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[str]:
    """What differs between two verdict specs (tolerances, noise reference, pipeline), named."""
    if a is None or b is None:
        return ["recorded without a verdict spec (an older LossBound)"] if a != b else []
    out = []
    for key, what in (("tolerances", "tolerances"), ("noise", "noise reference (mode, estimator, K policy, "
                                                                "whether one was used)"), ("pipeline", "pipeline"),
                      ("scaling", "scaling powers of the noise-referenced criteria")):
        if key == "scaling" and (key not in a or key not in b):
            continue  # recorded before the powers were part of the spec (1, or 2 for quadratic metrics)
        if plain(a.get(key)) != plain(b.get(key)):
            detail = ""
            if isinstance(a.get(key), Mapping) and isinstance(b.get(key), Mapping):
                keys = sorted(k for k in set(a[key]) | set(b[key]) if plain(a[key].get(k)) != plain(b[key].get(k)))
                detail = f": {', '.join(map(str, keys[:6]))}"
            out.append(f"{what} differ{detail}")
    return out


def combine_datasets(datasets: Mapping[str, Mapping[str, Any]], *, tolerances: Mapping[str, Any] | None = None,
                     spec: Mapping[str, Any] | None = None, codecs: Iterable[str] = ()) -> dict[str, Any]:
    """Per codec, the least lossy threshold over the datasets measured under the same verdict
    ``spec`` (tolerances, noise reference, pipeline; the limiting dataset named); a dataset
    where nothing passed makes it None. The others are listed under ``excluded_datasets``
    with what differs (never dropped silently). Without a spec, the tolerances decide."""
    combined: dict[str, Any] = {}
    names = sorted({c for d in datasets.values() for c in (d.get("codecs") or {})} | set(codecs))
    for codec in names:
        per: dict[str, Any] = {}
        excluded: dict[str, str] = {}
        for ds_name, d in sorted(datasets.items()):
            entry = (d.get("codecs") or {}).get(codec)
            if entry is None:
                if codec in (d.get("codecs_not_applicable") or {}):
                    excluded[ds_name] = f"not applicable: {d['codecs_not_applicable'][codec]}"
                continue
            if spec is not None:
                if diff := spec_differences(spec, d.get("verdict_spec")):
                    excluded[ds_name] = "measured under another verdict spec (" + "; ".join(diff) + ")"
                    continue
            elif d.get("tolerances") != tolerances:
                excluded[ds_name] = "measured under other tolerances"
                continue
            per[ds_name] = entry
        if not per:
            if excluded:
                combined[codec] = {"bound": None, "limiting_dataset": None, "excluded_datasets": excluded}
            continue
        grows = next(iter(per.values())).get("larger_means_more_loss", True)
        none = [n for n, e in per.items() if e.get("bound") is None]
        if none:
            out: dict[str, Any] = {"bound": None, "limiting_dataset": none[0]}
        else:
            pick = min if grows else max
            limiting = pick(per, key=lambda n: per[n]["bound"])
            e = per[limiting]
            out = {"bound": e["bound"], "limiting_dataset": limiting, "codec": e.get("codec"), "mode": e.get("mode"),
                   "larger_means_more_loss": grows,
                   **{k: e.get(k) for k in ("hdf5plugin", "filter_id", "cd_values", "chunks", "input_dtype",
                                            "chunks_setting", "detector_dtype", "transform", "transform_params",
                                            "bound_kind", "compression_ratio", "feasibility", "bound_range",
                                            "limiting_criterion", "confirmed")}}
            # every dataset's threshold must be confirmed for the combined one to be
            out["confirmed"] = all(bool(x.get("confirmed")) for x in per.values())
        out["per_dataset"] = {n: {"bound": e.get("bound"), "compression_ratio": e.get("compression_ratio"),
                                  "bound_range": e.get("bound_range"), "confirmed": e.get("confirmed")}
                              for n, e in per.items()}
        if excluded:
            out["excluded_datasets"] = excluded
        combined[codec] = out
    return combined


UNGROUPED = "ungrouped"


def dataset_group(entry: Mapping[str, Any]) -> str | None:
    """The group (sample type) a dataset entry declares, or None."""
    group = (entry.get("dataset") or {}).get("group")
    return None if group in (None, "") else str(group)


def _reference_spec(datasets: Mapping[str, Mapping[str, Any]], newest: str | None) -> dict[str, Any]:
    """What a combination is judged under: the verdict spec (else the tolerances) of the
    dataset just written when it is among ``datasets``, else of the most recently measured."""
    name = newest if newest in datasets else max(datasets, key=lambda n: (str(datasets[n].get("date") or ""), n))
    ref = datasets[name]
    if "verdict_spec" in ref:
        return {"spec": plain(ref["verdict_spec"])}
    return {"tolerances": plain(ref.get("tolerances"))}


def combine_all(datasets: Mapping[str, Mapping[str, Any]], *, newest: str | None = None) -> dict[str, Any]:
    """The thresholds file's combinations: ``codecs`` and, when any dataset declares a group
    (sample type), ``groups``.

    Without groups, ``codecs`` combines the datasets measured under the verdict spec of
    ``newest`` (:func:`combine_datasets`). With groups, each group combines its own datasets
    under its own spec (``groups.<g>.codecs``; datasets without a group form ``ungrouped``),
    and ``codecs`` is the least lossy of the groups' bounds (:func:`combine_groups`): each
    group's bound holds under its group's criteria, so their minimum holds for every group.
    """
    if not datasets:
        return {"codecs": {}}
    members: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, d in datasets.items():
        members[dataset_group(d) or UNGROUPED][name] = d
    if set(members) == {UNGROUPED}:
        return {"codecs": combine_datasets(datasets, **_reference_spec(datasets, newest))}
    every = {c for d in datasets.values() for c in (*(d.get("codecs") or {}), *(d.get("codecs_not_applicable") or {}))}
    groups = {g: {"datasets": sorted(sub),
                  "codecs": combine_datasets(sub, codecs=every, **_reference_spec(sub, newest))}
              for g, sub in sorted(members.items())}
    return {"codecs": combine_groups(groups), "groups": groups}


def combine_groups(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per codec, the least lossy of the groups' combined bounds: the limiting group's entry
    with ``limiting_group`` and its ``limiting_dataset``; a group where nothing passed makes it
    None, as does a group with no dataset it applies to (``missing_groups``: a codec that cannot
    serve every group is no configuration for all of them). ``per_group`` lists every group's
    bound, ``per_dataset`` and ``excluded_datasets`` gather the groups' (so a reviewer's
    fingerprint covers every contributing dataset)."""
    out: dict[str, Any] = {}
    names = sorted({c for g in groups.values() for c in g.get("codecs") or {}})
    for codec in names:
        per = {g: v["codecs"][codec] for g, v in groups.items() if codec in (v.get("codecs") or {})}
        measured = {g: e for g, e in per.items() if e.get("per_dataset")}
        per_dataset = {n: x for e in per.values() for n, x in (e.get("per_dataset") or {}).items()}
        excluded = {n: f"{g}: {why}" for g, e in per.items() for n, why in (e.get("excluded_datasets") or {}).items()}
        missing = sorted(set(groups) - set(measured))
        if not measured:
            out[codec] = {"bound": None, "limiting_group": None, "limiting_dataset": None}
        elif missing:
            out[codec] = {"bound": None, "limiting_group": missing[0], "limiting_dataset": None,
                          "none_passed": f"not measured on group(s) {', '.join(missing)} (not applicable, or measured "
                                         f"under another verdict spec only)"}
        elif none := [g for g, e in measured.items() if e.get("bound") is None]:
            out[codec] = {"bound": None, "limiting_group": none[0],
                          "limiting_dataset": measured[none[0]].get("limiting_dataset")}
        else:
            grows = next(iter(measured.values())).get("larger_means_more_loss", True)
            pick = min if grows else max
            limiting = pick(measured, key=lambda g: measured[g]["bound"])
            out[codec] = {**{k: v for k, v in measured[limiting].items() if k not in ("per_dataset", "review",
                                                                                         "excluded_datasets")},
                          "limiting_group": limiting,
                          "confirmed": all(bool(e.get("confirmed")) for e in measured.values())}
        out[codec]["per_group"] = {g: {"bound": e.get("bound"), "limiting_dataset": e.get("limiting_dataset"),
                                       "confirmed": e.get("confirmed")} for g, e in per.items()}
        out[codec]["per_dataset"] = per_dataset
        if missing:
            out[codec]["missing_groups"] = missing
        if excluded:
            out[codec]["excluded_datasets"] = excluded
    return out


def feasibility(compress_mbps: float | None, rates: Mapping[str, float] | None, *,
                decompress_mbps: float | None = None) -> dict[str, Any] | None:
    """Cores needed to compress (and decompress) at each rate (GB/s, 1e9 bytes) with one core's
    measured throughput (MB/s of detector bytes, 1e6): ``{compress_mbps_single_core,
    cores_for_<rate>, decompress_mbps_single_core, decompress_cores_for_<rate>}``."""
    if not compress_mbps or not rates or not math.isfinite(compress_mbps) or compress_mbps <= 0:
        return None
    out: dict[str, Any] = {"compress_mbps_single_core": float(compress_mbps)}
    for name, gbps in rates.items():
        out[f"cores_for_{name}"] = int(math.ceil(float(gbps) * 1e3 / compress_mbps))
    if decompress_mbps and math.isfinite(decompress_mbps) and decompress_mbps > 0:
        out["decompress_mbps_single_core"] = float(decompress_mbps)
        for name, gbps in rates.items():
            out[f"decompress_cores_for_{name}"] = int(math.ceil(float(gbps) * 1e3 / decompress_mbps))
    return out


QUIET_CORE_METHOD = (
    "after the search, with no point of the study running: the whole write (lossbound.codecs.write_payload: "
    "masked-pixel fill, pre-transform, dtype, filter, HDF5 chunk writes, mask beside the payload) and the whole "
    "read (read_payload from a fresh handle) of the dataset's leading frames, into an in-memory HDF5 file, on one "
    "thread (BLOSC_NTHREADS=1, threadpoolctl 1), median of the repeats after a warm-up "
    "(lossbound.codecs.timing.time_setting); chunks as the study wrote them")
IN_STUDY_NOTE = ("the study's own round trip (one per point), timed while the other workers ran other points: "
                 "a lower bound for a dedicated core")


def single_core_speed(entry: Mapping[str, Any]) -> tuple[float | None, float | None, str]:
    """``(compress MB/s, decompress MB/s, source)`` of a thresholds entry: the quiet-core
    timing where the study made one (``source`` ``"quiet core"``), else the study's round trip
    (``"in study"``)."""
    quiet = entry.get("quiet_core") or {}
    if quiet.get("compress_mbps"):
        return quiet["compress_mbps"], quiet.get("decompress_mbps"), "quiet core"
    return entry.get("compress_mbps"), entry.get("decompress_mbps"), "in study"


def entry_feasibility(entry: Mapping[str, Any], rates: Mapping[str, float]) -> dict[str, Any] | None:
    """The ``feasibility`` block of a thresholds entry at ``rates``: cores from the quiet-core
    timing when there is one (its method beside the numbers), the in-study figures kept and
    labelled as such."""
    compress, decompress, source = single_core_speed(entry)
    out = feasibility(compress, rates, decompress_mbps=decompress)
    if out is None:
        return None
    quiet = entry.get("quiet_core") or {}
    out["source"] = source
    if source == "quiet core":
        out["method"] = {"how": QUIET_CORE_METHOD,
                         **{k: quiet.get(k) for k in ("frames", "chunks", "repeats", "threads", "load_average")}}
    out["in_study"] = {"compress_mbps": entry.get("compress_mbps"), "decompress_mbps": entry.get("decompress_mbps"),
                       "note": IN_STUDY_NOTE}
    return out


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[dict[str, Any]]:
    """The thresholds file's document, to change in place, under its file lock (parallel jobs
    merge rather than overwrite each other); written back atomically when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        doc: dict[str, Any] = {}
        if path.exists():
            try:
                doc = load_yaml(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                log.warning("thresholds file %s unreadable (%s); starting it anew", path, exc)
        yield doc
        atomic_write_text(path, dump_yaml(doc))


def update_thresholds(path: Path, *, technique: str, dataset_name: str, entry: Mapping[str, Any],
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Put one dataset's entry into the thresholds file (others kept), recombine, write.

    Runs under a file lock, so parallel jobs merge rather than overwrite each other. Expert
    reviews (``reviews``) are kept, and each combined codec shows its review status (a review
    of something that has changed since is shown *stale*). ``extra``: top-level keys of the
    technique (``needed_ratio``, ``acquisition`` rates), replaced by the newest study.
    """
    with _editing(path) as doc:
        datasets = dict(doc.get("datasets") or {})
        old = datasets.get(dataset_name)
        if old and (old.get("campaign") or {}).get("file") != (entry.get("campaign") or {}).get("file"):
            log.warning("dataset %s was measured before from %s; its entry is replaced by this one from %s",
                        dataset_name, (old.get("campaign") or {}).get("file") or "a study",
                        (entry.get("campaign") or {}).get("file") or "a study")
        if old and (old.get("dataset") or {}).get("sha256") != entry["dataset"]["sha256"]:
            log.warning("dataset %s changed content (sha256 %s -> %s): its thresholds are replaced",
                        dataset_name, str(old["dataset"].get("sha256"))[:12], entry["dataset"]["sha256"][:12])
        datasets[dataset_name] = plain(entry)
        out = {
            "technique": technique,
            "rule": RULE,
            "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **{k: doc[k] for k in ("needed_ratio", "acquisition") if k in doc},
            **plain(dict(extra or {})),
            **combine_all(datasets, newest=dataset_name),
            "datasets": datasets,
            "reviews": dict(doc.get("reviews") or {}),
        }
        if "groups" in out:
            out["group_reviews"] = {g: r for g, r in (doc.get("group_reviews") or {}).items() if g in out["groups"]}
        # a dataset that failed before and has now been measured is no longer failed
        if failed := {n: f for n, f in (doc.get("failed_datasets") or {}).items() if n != dataset_name}:
            out["failed_datasets"] = failed
        out = with_statuses(plain(out))
        doc.clear()
        doc.update(out)
    return out


def record_failure(path: Path, *, technique: str, dataset_name: str, reason: str,
                   group: str | None = None, source: str | None = None) -> None:
    """Note in the thresholds file (``failed_datasets``) that a dataset of a campaign could not
    be measured, and why (a refused quality gate, a bad file, a crash): the report lists it
    with the excluded datasets. Its thresholds, if an earlier study left some, stay."""
    with _editing(path) as doc:
        doc.setdefault("technique", technique)
        doc.setdefault("codecs", {})
        doc.setdefault("datasets", {})
        failed = dict(doc.get("failed_datasets") or {})
        failed[dataset_name] = {"reason": reason, "group": group, "source": source,
                                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        doc["failed_datasets"] = plain(failed)
        # its earlier thresholds stay, but the campaign must not count it as done
        (doc["datasets"].get(dataset_name) or {}).pop("campaign", None)


def load_thresholds(path: Path) -> dict[str, Any]:
    return load_yaml(Path(path).read_text())


def setting_for(entry: Mapping[str, Any]) -> CodecSetting:
    """The :class:`CodecSetting` of a thresholds entry (per dataset or combined): write a
    user's data with it through :func:`lossbound.codecs.write_payload` to reproduce the chain —
    pre-transform, dtype, filter, chunks and the masked pixels kept apart — exactly (a chain whose
    transform models the frame, ``sparsify_*``, also needs ``geometry=`` of the detector)."""
    if entry.get("bound") is None:
        raise ConfigError(f"codec {entry.get('codec')!r} has no threshold (nothing passed); nothing to apply")
    if not entry.get("codec"):
        raise ConfigError("thresholds entry has no 'codec' (written by an older LossBound); re-run the study")
    converted = entry.get("input_dtype") not in (None, entry.get("detector_dtype"))
    chunks = entry["chunks_setting"] if "chunks_setting" in entry else entry.get("chunks")
    setting = CodecSetting(entry["codec"], entry.get("mode"), entry["bound"],
                           input_dtype=entry["input_dtype"] if converted else None, chunks=chunks)
    recorded = (entry.get("hdf5plugin") or {}).get("kwargs")
    get_config = getattr(setting.make_filter(), "get_config", None)
    built = dict(get_config()) if callable(get_config) else setting.plugin_kwargs()
    if recorded is not None and plain(built) != plain(recorded):
        # the codec's spec changed since the study (e.g. Blosc2 byte- vs bit-shuffle)
        raise ConfigError(f"codec {entry['codec']!r}: the recorded filter {recorded} is not what this version "
                          f"builds ({built}); re-run the study")
    recorded_transform = entry.get("transform_params")
    if recorded_transform is not None and plain(setting.transform_params()) != plain(recorded_transform):
        raise ConfigError(f"codec {entry['codec']!r}: the recorded pre-transform parameters {recorded_transform} are "
                          f"not what this version uses ({setting.transform_params()}); re-run the study")
    return setting


def rebuild_filter(entry: Mapping[str, Any]):
    """The hdf5plugin filter object of a thresholds entry (for ``create_dataset(**filter)``)."""
    spec = entry["hdf5plugin"]
    return filter_from_config(spec["class"], spec["kwargs"])


def annotate_codecs(codecs: Mapping[str, dict[str, Any]], baselines: Mapping[str, dict[str, Any]], *,
                    searches: Mapping[str, Search], rates: Mapping[str, float], dataset: str) -> None:
    """Complete one dataset's thresholds in place: the feasibility at ``rates``, the search
    that found each (``searches``: curve name -> its search; a codec without one was found
    from recorded points), and why nothing passed where nothing did; warn of unconfirmed and
    non-monotonic thresholds."""
    for e in (*codecs.values(), *baselines.values()):
        if (f := entry_feasibility(e, rates)) is not None:
            e["feasibility"] = f
    for name, e in codecs.items():
        search = searches.get(name)
        e["search"] = search.describe() if search is not None else {"strategy": "recorded points"}
        if e.get("bound") is None and e.get("tested_values") and hasattr(search, "at_limit"):
            least = min(e["tested_values"], key=search.t)
            e["none_passed"] = (f"down to {least:g}, the least lossy value the codec takes on these data"
                                if search.at_limit(least) else
                                f"down to {least:g}; the search stopped there (search.max_evaluations)")
        if e.get("bound") is not None and not e.get("confirmed"):
            log.warning("%s on %s: threshold %s not confirmed (less lossy passes: %s; needs two, one at most "
                        "half as lossy)", name, dataset, e["bound"], e.get("confirmed_by"))
        if e.get("passed_above_first_failure"):
            log.warning("%s on %s: passes above the first failure at %s (non-monotonic; not trusted)",
                        name, dataset, e["passed_above_first_failure"])


def dataset_entry(*, dataset: Mapping[str, Any], pipeline: Mapping[str, Any], tolerances: Tolerances,
                  noise: Mapping[str, Any], noise_summary: Mapping[str, Any], versions: Mapping[str, str],
                  run_id: str | None, tracking_uri: str | None, context: str, ideal: Mapping[str, float],
                  gates: Mapping[str, Any], codecs: Mapping[str, Any], baselines: Mapping[str, Any],
                  skipped: Mapping[str, str] | None = None, extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One dataset's entry of the thresholds file.

    ``noise``: the noise-reference settings that are part of the verdict spec (K policy,
    mode, whether it was used); ``noise_summary``: what the reference measured;
    ``extras``: what the technique keeps beside the thresholds
    (:meth:`lossbound.pipelines.base.Technique.report_extras`).
    """
    entry = {
        "dataset": dict(dataset), "pipeline": pipeline, "tolerances": tolerances.as_dict(),
        # what a threshold means: datasets combine only under the same spec
        "verdict_spec": {"tolerances": tolerances.as_dict(), "pipeline": pipeline, "noise": dict(noise),
                         # f**p: the same factor means another allowance under another power
                         "scaling": {m: tolerances.scaling.get(m, 1) for m in sorted(tolerances.noise_factors)}},
        "versions": dict(versions), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mlflow_study_run_id": run_id, "mlflow_tracking_uri": tracking_uri,
        "context": context,
        # what the report draws: each criterion's range on this dataset, raw-vs-raw values
        "limits": {c.metric: ({"min": None, "max": 1.0, "kind": "frames"} if c.kind == "frames"
                              else {"min": c.min, "max": c.max}) for c in tolerances},
        "ideal": {c.metric: ideal.get(c.metric) for c in tolerances if c.kind == "scalar"},
        # every criterion with its numbers on this dataset (per-frame allowances included)
        "criteria_record": tolerances.record(),
        "noise_reference": dict(noise_summary),
        # how well the raw data fit the declared setup (quality gates)
        "gates": dict(gates),
        "codecs": codecs, "baselines": baselines,
    }
    if skipped:
        entry["codecs_not_applicable"] = dict(skipped)
    if tolerances.not_applicable:
        entry["criteria_not_applicable"] = sorted(tolerances.not_applicable)
    entry.update(extras or {})
    return entry
