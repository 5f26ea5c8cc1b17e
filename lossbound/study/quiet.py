"""Feasibility on a quiet core: the thresholds' settings timed after the search.

While the search runs, each point's round trip shares the machine with the other workers; its
MB/s are kept (``compress_mbps`` in the entry, labelled "in study") but a sizing engineer needs
one dedicated core. Once every point is done, each threshold setting and each lossless baseline
is timed again here (:func:`lossbound.codecs.timing.time_setting`), in the codec worker process
so a codec that dies fails its timing, not the study.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Mapping

from lossbound.codecs import CodecSetting, CodecWorker
from lossbound.codecs.timing import leading_frames, time_setting
from lossbound.core.errors import ConfigError
from lossbound.results.thresholds import setting_for

from lossbound.study.context import StudyContext

log = logging.getLogger(__name__)

__all__ = ["QuietCoreOptions", "time_thresholds"]

_KEYS = {"enabled", "repeats", "frames", "max_mb", "budget_s", "timeout_s"}


class QuietCoreOptions:
    """``acquisition.quiet_core``: ``enabled``, ``repeats`` (>= 5), ``frames`` (at least this
    many leading frames timed, where the dataset has them: the mask, written once per file,
    then weighs as it does in a detector's file), ``max_mb`` (beyond ``frames``, up to this
    many MB), ``budget_s`` (seconds one timed write may take: a slow codec is timed on fewer
    frames), ``timeout_s`` (per setting)."""

    def __init__(self, cfg: Mapping[str, Any] | None) -> None:
        cfg = dict(cfg or {})
        if unknown := sorted(set(cfg) - _KEYS):
            raise ConfigError(f"acquisition.quiet_core: unknown key(s) {', '.join(unknown)}; expected {sorted(_KEYS)}")
        self.enabled = bool(cfg.get("enabled", True))
        self.repeats = int(cfg.get("repeats", 5))
        self.frames = int(cfg.get("frames", 4))
        self.max_mb = float(cfg.get("max_mb", 64.0))
        self.budget_s = float(cfg.get("budget_s", 1.0))
        self.timeout_s = float(cfg.get("timeout_s", 300.0))
        if self.repeats < 5:
            raise ConfigError(f"acquisition.quiet_core.repeats must be >= 5 (a median of at least five), "
                              f"got {self.repeats}")
        if self.frames < 1 or not (self.max_mb > 0 and self.budget_s > 0 and self.timeout_s > 0):
            raise ConfigError("acquisition.quiet_core: frames must be >= 1 and max_mb, budget_s, timeout_s > 0; got "
                              f"{self.frames!r}, {self.max_mb!r}, {self.budget_s!r}, {self.timeout_s!r}")


def _settings(codecs: Mapping[str, Any], baselines: Mapping[str, Any], points) -> dict[tuple[str, str], CodecSetting]:
    """The setting of every threshold and of every measured lossless baseline."""
    out: dict[tuple[str, str], CodecSetting] = {}
    for name, entry in codecs.items():
        if entry.get("bound") is not None:
            try:
                out[("codecs", name)] = setting_for(entry)
            except ConfigError as exc:
                log.warning("quiet-core timing of %s skipped: %s", name, exc)
    for p in points:
        if not p.lossy and p.status == "ok" and p.setting["codec"] in baselines:
            out[("baselines", p.setting["codec"])] = CodecSetting.from_dict(p.setting)
    return out


def time_thresholds(ctx: StudyContext, codecs: dict[str, Any], baselines: dict[str, Any], points, *,
                    options: QuietCoreOptions, isolate: bool = True) -> None:
    """Add ``quiet_core`` (:func:`~lossbound.codecs.timing.time_setting`'s record) to every
    timed entry of ``codecs`` and ``baselines``, in place; a failed timing records why."""
    if not options.enabled:
        return
    settings = _settings(codecs, baselines, points)
    if not settings:
        return
    data = ctx.data
    groups = {"codecs": codecs, "baselines": baselines}
    with CodecWorker(isolate=isolate, timeout=options.timeout_s) as worker:
        for (group, name), setting in settings.items():
            block = int(setting.transform_params().get("model_every", 1) or 1)  # a sparsification block
            # only the frames timed travel to the worker
            stack, valid = leading_frames(data.payload_array, data.mask, max_mb=options.max_mb,
                                          min_frames=max(options.frames, block))
            # a slow write may be timed on fewer frames, never fewer than one sparsification block
            fn = functools.partial(time_setting, stack, setting, valid=valid, geometry=data.geometry,
                                   repeats=options.repeats, max_mb=float("inf"), min_frames=block,
                                   budget_s=options.budget_s)
            try:
                record = worker.call(fn, label=f"quiet-core timing of {setting.label}")
            except Exception as exc:  # noqa: BLE001 - a crash (CodecCrash) or error fails this timing, not the study
                log.warning("quiet-core timing of %s failed: %s", setting.label, str(exc).splitlines()[0])
                groups[group][name]["quiet_core"] = {"failed": str(exc).splitlines()[0]}
                continue
            groups[group][name]["quiet_core"] = record
            log.info("quiet core: %s compresses at %.0f MB/s and decompresses at %.0f MB/s (%s, median of %d)",
                     setting.label, record["compress_mbps"], record["decompress_mbps"], record["frames"],
                     record["repeats"])
