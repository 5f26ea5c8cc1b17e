"""A point is a pure function: ``(study context, codec setting) -> PointResult``.

Codec round trip (a real HDF5 write and read, crash-isolated in a codec worker), pipeline on
the decompressed data, evaluators, verdict, and a small preview for figures. It logs nothing;
its caller records it (journal, MLflow).
"""
from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np

from lossbound.codecs import CodecSetting, CodecWorker
from lossbound.core.hashing import arrays_checksum
from lossbound.core.png import figure_png
from lossbound.core.types import Outcome, PointResult
from lossbound.study.context import StudyContext
from lossbound.criteria.tolerance import Tolerances

log = logging.getLogger(__name__)


def evaluate_point(
    ctx: StudyContext,
    setting: CodecSetting,
    *,
    codec_worker: CodecWorker | None = None,
    timeout: float | None = None,
    preview: bool = True,
    known_outputs: Mapping[str, str] | None = None,
) -> PointResult:
    """Evaluate one codec setting on the context's dataset.

    Parameters
    ----------
    ctx : StudyContext
        Dataset, raw outcome, prepared parameters and evaluator references.
    setting : CodecSetting
        The codec setting to apply to the dataset's payload.
    codec_worker : CodecWorker, optional
        Runs the round trip in a crash-isolating process; None runs it inline.
    timeout : float, optional
        Seconds the codec may take (isolated worker only).
    preview : bool
        Keep the technique's small preview arrays of the compressed result (for figures).
    known_outputs : mapping, optional
        ``output_sha256 -> point_id`` of points of this context already evaluated. A
        decompressed payload identical to one of them (ZFP's accuracy, for one, acts in
        powers of two, so 2.6 and 3.4 write what 2 writes) is not run through the pipeline
        again: the pipelines are deterministic, so it would give that point's result.

    Returns
    -------
    PointResult
        ``status='failed'`` with a one-line ``reason`` when the codec or pipeline crashed or
        raised; ``same_output_as`` set, codec figures and no metrics when the output is
        known (:func:`share_result` completes it); otherwise metrics, codec figures and the
        verdict under ``ctx.tolerances``.
    """
    data = ctx.data
    point = PointResult(
        point_id=ctx.point_id(setting), label=setting.label, setting=setting.as_dict(),
        lossy=setting.spec.lossy, context=ctx.key, dataset=data.name,
    )
    codec_s = 0.0
    t0 = time.perf_counter()
    try:
        worker = codec_worker or CodecWorker(isolate=False)
        rt = worker.roundtrip(data.payload_array, setting, valid=data.mask, geometry=data.geometry,
                              timeout=timeout)
        codec_s = rt.seconds
        point.codec = rt.summary()
        t0 = time.perf_counter()  # shipping data to and from the codec process is not the point's work
        point.output_sha256 = arrays_checksum({"payload": rt.decompressed})
        if (same := (known_outputs or {}).get(point.output_sha256)) is not None:
            point.same_output_as = same
            point.seconds = codec_s + time.perf_counter() - t0
            return point
        comp_data = data.with_payload(rt.decompressed)
        if rt.max_abs_error == 0 and not rt.masked_pixels_changed and _identical(rt.decompressed, data.payload_array):
            # The pipelines are deterministic: bit-identical data (a lossless codec) give the
            # raw result, computed once per dataset. The round trip's measured error rules out
            # the full comparison for every lossy point.
            comp = Outcome(comp_data, ctx.raw.result)
        else:
            comp = Outcome(comp_data, ctx.technique.run(comp_data, ctx.prepared))
        point.metrics, point.frame_metrics = ctx.evaluate_split(comp)
        if preview:
            point.preview = ctx.technique.preview(comp.result)
    except Exception as exc:  # CodecCrash included: one failed point never ends the study
        point.status = "failed"
        point.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log.warning("point %s failed: %s", setting.label, point.reason)
    # The point's own work: the codec round trip where it ran, pipeline and evaluators.
    point.seconds = codec_s + time.perf_counter() - t0
    return judge(point, ctx.tolerances)


def share_result(point: PointResult, source: PointResult, tolerances: Tolerances) -> PointResult:
    """Complete ``point``, whose decompressed payload is bit-identical to ``source``'s, with
    ``source``'s metrics and preview, and judge it (its own codec figures and bound)."""
    if point.output_sha256 != source.output_sha256 or point.context != source.context:
        raise ValueError(f"point {point.label} does not have the output of {source.label} in the same context")
    point.same_output_as = source.point_id
    point.metrics = dict(source.metrics)
    point.frame_metrics = {k: list(v) for k, v in source.frame_metrics.items()}
    point.preview = source.preview
    return judge(point, tolerances)


def _identical(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(
        np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def judge(point: PointResult, tolerances: Tolerances) -> PointResult:
    """Set ``passed``/``failures`` from the point's metrics and codec figures.

    Also used on points read back from the journal, whose tolerances may have changed since.
    """
    if point.status != "ok":
        point.passed, point.failures, point.uses = False, [], {}
        return point
    failures = list(tolerances.check(point.metrics, point.frame_metrics).failures)
    point.uses = tolerances.uses(point.metrics, point.frame_metrics)
    c = point.codec
    if c.get("masked_pixels_changed"):
        failures.insert(0, f"codec changed {c['masked_pixels_changed']} masked pixel(s)")
    elif c.get("bound_held") is False:
        err = c.get("max_abs_error")
        if c.get("bound_kind") == "poisson_sigma":
            failures.insert(0, f"codec broke its bound: max error {c.get('max_error_sigma'):.4g} sigma "
                               f"at {point.setting.get('mode')}={point.value:g}")
        elif point.lossy:
            failures.insert(0, f"codec broke its bound: max error {err:.4g} > {point.value:g}")
        else:
            failures.insert(0, f"lossless codec changed the data: max error {err:.4g}")
    point.failures = failures
    point.passed = not failures
    return point


def render_figure(ctx: StudyContext, point: PointResult) -> bytes | None:
    """PNG bytes of the technique's raw-vs-compressed figure for ``point`` (None if it has
    no preview or the technique draws none)."""
    if point.preview is None:
        return None
    fig = ctx.technique.figure(ctx.technique.preview(ctx.raw.result), point.preview,
                               title=f"{ctx.data.name}: {point.label}")
    return None if fig is None else figure_png(fig)


def point_seconds(points: list[PointResult]) -> float:
    """Sum of the points' own work (seconds), the yardstick of framework overhead."""
    return float(sum(p.seconds for p in points if not p.reused))


__all__ = ["evaluate_point", "judge", "point_seconds", "render_figure", "share_result"]
