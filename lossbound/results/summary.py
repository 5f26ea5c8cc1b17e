"""The console summary of a study: every point, then the threshold per codec."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lossbound.core.types import PointResult


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def format_summary(points: list[PointResult], codecs: Mapping[str, Any], baselines: Mapping[str, Any],
                   *, metrics: list[str], per_frame: set[str] | frozenset[str] = frozenset()) -> str:
    """A console table: every point with the tolerance ``metrics`` (``per_frame`` ones as the
    frames' damage over their own allowance: <= 1 inside), then the threshold per codec."""
    metric_names = [f"{m} (/allowance)" if m in per_frame else m for m in metrics]
    widths = [max(len(m), 9) + 2 for m in metric_names]
    head = (f"{'codec setting':<28}{'ratio':>8}{'MB/s c/d':>14}  {'max err':>8}"
            + "".join(f"{m:>{w}}" for m, w in zip(metric_names, widths)) + "  verdict")
    lines = [head, "-" * len(head)]
    for p in sorted(points, key=lambda p: (p.lossy, str(p.group), p.value or 0.0)):
        c = p.codec
        speeds = f"{_fmt(c.get('compress_mbps'), '.0f')}/{_fmt(c.get('decompress_mbps'), '.0f')}"
        if p.status != "ok":
            verdict = f"FAILED ({p.reason})"
        elif not p.lossy:
            verdict = "baseline"
        else:
            verdict = "pass" if p.passed else "fail: " + "; ".join(p.failures)
        if p.reused:
            verdict += "  (reused)"
        lines.append(
            f"{p.label:<28}{_fmt(c.get('ratio'), '.2f'):>8}{speeds:>14}  {_fmt(c.get('max_abs_error')):>8}"
            + "".join(f"{_fmt(p.uses.get(m) if m in per_frame else p.metrics.get(m), '.4g'):>{w}}"
                      for m, w in zip(metrics, widths)) + f"  {verdict}"
        )
    lines += ["", "Thresholds (most lossy value with it and every less lossy value inside tolerance; range: where the "
                  "limiting criterion crosses its tolerance moved by +-1 standard error):"]
    for name, e in codecs.items():
        if e.get("bound") is None:
            lines.append(f"  {name:<12} none of {e.get('tested_values')} passed"
                         + (f" ({e['none_passed']})" if e.get("none_passed") else ""))
        else:
            lo, hi = (e.get("bound_range") or [None, None])[:2]
            rng = f"[{_fmt(lo, 'g') if lo is not None else '<'}, {_fmt(hi, 'g') if hi is not None else '>'}]"
            lines.append(f"  {name:<12} {e['mode']}={_fmt(e['bound'], 'g'):<8} range {rng:<18} "
                         f"{'confirmed' if e.get('confirmed') else 'UNCONFIRMED'}  "
                         f"ratio {_fmt(e.get('compression_ratio'), '.2f')}"
                         f"  ({e['hdf5plugin']['class']}(**{e['hdf5plugin']['kwargs']}))"
                         + (f"  limited by {e['limiting_criterion']}" if e.get("limiting_criterion") else ""))
    for name, e in baselines.items():
        lines.append(f"  {name:<12} lossless ratio {_fmt(e.get('compression_ratio'), '.2f')}")
    return "\n".join(lines)
